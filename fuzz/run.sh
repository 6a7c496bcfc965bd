#!/usr/bin/env bash
# Runs every fuzz target on stable (`-s none`: libFuzzer's coverage, no sanitizer), each
# from its seeds (fuzz/seeds/<target>, written by `cargo run --example fuzz_seeds`) into a
# working corpus under target/fuzz-corpus/. A crash fails the run and leaves its input in
# fuzz/artifacts/<target>/; every crash found becomes a regression test.
#
#   fuzz/run.sh                      # 20 s per target (CI)
#   fuzz/run.sh 300                  # 5 min per target
#   FUZZ_RUNS=10000000 fuzz/run.sh   # ten million executions per target
set -euo pipefail
cd "$(dirname "$0")"
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz@0.13.2
seconds=${1:-20}
targets=(ipc_frames csr_policy est_body basic_auth config_yaml ocsp_request)
cargo fuzz build -s none
if [ -n "${FUZZ_RUNS:-}" ]; then
  limit=(-runs="$FUZZ_RUNS")
else
  limit=(-max_total_time="$seconds")
fi
for t in "${targets[@]}"; do
  corpus=../target/fuzz-corpus/$t
  mkdir -p "$corpus"
  cp -n seeds/"$t"/* "$corpus"/ 2>/dev/null || true
  log=$(mktemp)
  if ! cargo fuzz run -s none "$t" "$corpus" -- "${limit[@]}" -rss_limit_mb=2048 \
      -print_final_stats=1 >"$log" 2>&1; then
    tail -n 40 "$log"
    echo "fuzz target $t failed; the input is in fuzz/artifacts/$t/" >&2
    rm -f "$log"
    exit 1
  fi
  runs=$(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | grep -o '[0-9]*' || echo '?')
  echo "fuzz $t: $runs executions, coverage $cov edges, corpus $(ls "$corpus" | wc -l) inputs"
  rm -f "$log"
done
