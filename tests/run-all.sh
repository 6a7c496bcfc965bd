#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what is missing, then rustfmt, clippy with
# -D warnings, every test of every workspace crate (real SoftHSM tokens, real signer and
# frontend processes, openssl, curl, strongSwan's pki, pkilint), then cargo audit and
# cargo-deny (licences, bans, sources, advisories) against the advisory database snapshot
# in ../shared/advisory-db, offline.
set -euo pipefail
cd "$(dirname "$0")/.."
PKILINT_BIN=$(tests/install-deps.sh | tail -n 1)
export PKILINT_BIN

echo "== rustfmt"
cargo fmt --all -- --check
echo "== clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== tests"
results=$(mktemp)
trap 'rm -f "$results"' EXIT
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$results"
echo "== fuzzing (20 s per target from fuzz/seeds; a crash fails the suite)"
fuzz/run.sh 20
echo "== cargo audit"
db=${ADVISORY_DB:-../shared/advisory-db}
if [ ! -d "$db" ]; then
  echo "advisory database $db not found (set ADVISORY_DB)" >&2
  exit 1
fi
cargo audit --db "$db" --no-fetch
echo "== cargo deny"
ADVISORY_DB="$db" tests/cargo-deny.sh

# One closing line for the whole suite, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$results"
