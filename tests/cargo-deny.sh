#!/usr/bin/env bash
# cargo-deny over the workspace, offline: licences, bans (duplicate versions), sources and
# advisories against the RustSec snapshot in $ADVISORY_DB (default ../shared/advisory-db).
#
# cargo-deny reads advisory databases only from git checkouts under `db-path` (deny.toml),
# named after their URL. The snapshot is a plain directory, so it is copied there as a
# one-commit repository; `--offline` keeps cargo-deny from fetching anything.
set -euo pipefail
cd "$(dirname "$0")/.."
db=${ADVISORY_DB:-../shared/advisory-db}
if [ ! -d "$db/crates" ]; then
  echo "advisory database $db not found (set ADVISORY_DB)" >&2
  exit 1
fi
# The directory cargo-deny derives from db-urls in deny.toml (name + xxhash of the URL).
checkout=target/advisory-dbs/advisory-db-3157b0e258782691
rm -rf "$checkout"
mkdir -p "$checkout"
cp -R "$db/." "$checkout/"
chmod -R u+w "$checkout"
git -C "$checkout" init -q
git -C "$checkout" add -A
git -C "$checkout" -c user.name=hsm-est-ci -c user.email=ci@hsm-est.invalid \
  commit -q -m "advisory database snapshot from $db"
# cargo-deny reads the metadata of every target platform offline: fetch the crates that
# only other platforms use (redox_syscall and the like) first.
cargo fetch --locked
cargo deny --offline check advisories bans licenses sources
