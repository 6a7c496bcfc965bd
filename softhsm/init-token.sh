#!/usr/bin/env bash
# Creates a private SoftHSM token for development, CI and the demo:
#   softhsm/init-token.sh DIR [LABEL]
# DIR gets softhsm2.conf, tokens/, token-pin and so-pin (both mode 0600). Point
# SOFTHSM2_CONF at DIR/softhsm2.conf. SoftHSM keeps keys in files and protects nothing on
# disk: production uses a real HSM's PKCS#11 module instead (docs/OPERATIONS.md).
set -euo pipefail
dir=${1:?usage: init-token.sh DIR [LABEL]}
label=${2:-hsm-est}
here=$(cd "$(dirname "$0")" && pwd)
command -v softhsm2-util >/dev/null || { echo "softhsm2-util missing: apt-get install softhsm2" >&2; exit 1; }
mkdir -p "$dir/tokens"
dir=$(cd "$dir" && pwd)
chmod 700 "$dir/tokens"
sed "s|@TOKENDIR@|$dir/tokens|" "$here/softhsm2.conf.template" > "$dir/softhsm2.conf"
umask 077
# 24 random alphanumerics each; the files are the only copies.
random_pin() { (LC_ALL=C tr -dc 'A-Za-z0-9' </dev/urandom | head -c 24) || true; }
random_pin > "$dir/token-pin"
random_pin > "$dir/so-pin"
chmod 600 "$dir/token-pin" "$dir/so-pin"
# softhsm2-util takes PINs only as arguments; this runs once, for a development token.
SOFTHSM2_CONF="$dir/softhsm2.conf" softhsm2-util --init-token --free --label "$label" \
  --so-pin "$(cat "$dir/so-pin")" --pin "$(cat "$dir/token-pin")" >/dev/null
echo "token $label ready in $dir (SOFTHSM2_CONF=$dir/softhsm2.conf)"
