#!/usr/bin/env bash
# A complete local appliance for a first try, installing what is missing:
#   softhsm/demo.sh [estctl demo options]     e.g. --port 8445 --response-format der
# Installs softhsm2 (and openssl, curl) when missing, builds the release binaries, and runs
# `estctl demo --dir ./demo`: a SoftHSM token, the CA, a TLS certificate for localhost, the
# user `demo`, est-signer and est-frontend. Everything in ./demo is reused on the next run,
# devices and certificates included. Stop with Ctrl-C.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)

need=()
command -v softhsm2-util >/dev/null || need+=(softhsm2)
command -v openssl >/dev/null || need+=(openssl)
command -v curl >/dev/null || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd=sudo
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need[@]}"
fi

(cd "$repo" && cargo build --release --locked --workspace --bins -q)
exec "$repo/target/release/estctl" demo --dir "$repo/demo" --publication-port 8447 "$@"
