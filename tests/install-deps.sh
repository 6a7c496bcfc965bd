#!/usr/bin/env bash
# Installs what the test suite and the demo need on a fresh Debian machine, and nothing
# when it is already there: softhsm2, openssl, curl, file, systemd-analyze, strongSwan's
# pki, chromium, freeradius, eapol_test, lintian, dpkg-dev and postgresql (Debian), pkilint (a Python
# venv), cargo-audit, cargo-deny, cargo-fuzz and cargo-deb. Prints the venv's bin directory on the last line of its output.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv=${HSM_EST_VENV:-$here/target/pkilint-venv}

need_apt=()
command -v softhsm2-util >/dev/null || need_apt+=(softhsm2)
command -v openssl >/dev/null || need_apt+=(openssl)
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
command -v curl >/dev/null || need_apt+=(curl)
command -v file >/dev/null || need_apt+=(file)
# strongSwan's pki is the third-party EST client in the tests; it fetches through its curl
# plugin, which Debian ships in libstrongswan-extra-plugins.
command -v pki >/dev/null || need_apt+=(strongswan-pki)
[ -e /usr/lib/ipsec/plugins/libstrongswan-curl.so ] || need_apt+=(libstrongswan-extra-plugins)
command -v python3 >/dev/null || need_apt+=(python3 python3-venv)
# The dashboard test drives est-admin in a real browser (headless, over DevTools).
command -v chromium >/dev/null || need_apt+=(chromium)
# EAP-TLS end to end: a private FreeRADIUS and wpa_supplicant's eapol_test.
command -v freeradius >/dev/null || need_apt+=(freeradius)
command -v eapol_test >/dev/null || need_apt+=(eapoltest)
# cargo-fuzz's libFuzzer is C++.
command -v g++ >/dev/null || need_apt+=(g++)
# The package test: lintian checks the .deb; dpkg-shlibdeps (dpkg-dev) gives its Depends.
command -v lintian >/dev/null || need_apt+=(lintian)
command -v dpkg-shlibdeps >/dev/null || need_apt+=(dpkg-dev)
# The shared ledger's tests start a private PostgreSQL server (initdb and pg_ctl in a temp
# directory, as an unprivileged user); setpriv (util-linux) drops to that user.
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need_apt+=(postgresql)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing ${need_apt[*]} (Debian)" >&2
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd=sudo
  $sudo_cmd apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need_apt[@]}" >&2
fi

if [ ! -x "$venv/bin/lint_pkix_cert" ]; then
  echo "installing pkilint into $venv" >&2
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install -q --disable-pip-version-check pkilint >&2
fi

if ! cargo audit --version >/dev/null 2>&1; then
  echo "installing cargo-audit" >&2
  cargo install -q --locked cargo-audit >&2
fi
# cargo-deny at a fixed version: tests/cargo-deny.sh lays out the advisory database where
# this version looks for it.
# cargo-fuzz for fuzz/run.sh: the targets build on stable with `-s none`.
if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz 0.13.2" ]; then
  echo "installing cargo-fuzz" >&2
  cargo install -q --locked cargo-fuzz@0.13.2 >&2
fi
# cargo-deb builds the appliance's .deb (tests/package.rs, docs/OPERATIONS.md).
if [ "$(cargo deb --version 2>/dev/null)" != "cargo-deb 3.8.0" ]; then
  echo "installing cargo-deb" >&2
  cargo install -q --locked cargo-deb@3.8.0 >&2
fi
if [ "$(cargo deny --version 2>/dev/null)" != "cargo-deny 0.20.2" ]; then
  echo "installing cargo-deny" >&2
  cargo install -q --locked cargo-deny@0.20.2 >&2
fi
echo "$venv/bin"
