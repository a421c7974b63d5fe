#!/usr/bin/env bash
# Runs the engine's GPU tests and benchmarks on the lent GPU machine (no Rust
# toolchain there) from binaries built here:
#   bash benches/engine_gpu_pack.sh      # here: builds, packs .carry/engine/engine-bins.tar.xz
#   bash benches/engine_gpu_run.sh       # there, with .carry/engine carried; logs into $OUT
# Optional arguments: which steps to run (test_<name>, bench_<name>, torch;
# default all), e.g. `bash benches/engine_gpu_run.sh test_engine_forward`.
# BENCH_FILTER (criterion's filter; e.g. `none` runs only the plain timing
# loops and sweeps) is passed to the benches.
# Every step has its own time limit, so one hung kernel cannot take the rest.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/engine-gpu-out}
mkdir -p "$OUT"
BIN=$(mktemp -d)
tar -xJf .carry/engine/engine-bins.tar.xz -C "$BIN"
{
  echo "command: bash benches/engine_gpu_run.sh"
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  nvidia-smi
} > "$OUT/device.txt" 2>&1
export RUST_BACKTRACE=1
run() { # name, limit (s), command...
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  printf '%-24s rc=%-3s %4ss\n' "$name" "$rc" "$((SECONDS - start))" | tee -a "$OUT/summary.txt"
}
want() { [ -z "$STEPS" ] || [[ " $STEPS " == *" $1 "* ]]; }
STEPS="$*"
for t in engine_device engine_forward engine_output engine_generate; do
  # The flagged-exchange kernel runs alone below: a trap there (its poll
  # limit) leaves the process's context unusable for every other test.
  want "test_$t" && run "test_$t" 150 "$BIN/$t" --test-threads=8 --nocapture --skip flagged
done
want test_engine_forward && run test_engine_forward_flagged 120 "$BIN/engine_forward" flagged --nocapture
want bench_engine_forward && run bench_engine_forward 240 "$BIN/bench_engine_forward" --bench ${BENCH_FILTER:-}
want bench_engine_generate && run bench_engine_generate 200 "$BIN/bench_engine_generate" --bench ${BENCH_FILTER:-}
want torch && run torch_forward 120 python3 benches/torch_forward.py
exit 0
