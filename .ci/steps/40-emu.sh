#!/usr/bin/env bash
# The engine's GPU tests on recur's CPU emulator of CUDA (cuda-stub/emu):
# without a GPU they would only print "skipped: no CUDA device"; here every
# kernel runs and is compared with recur-core. Fewer property cases than on
# a GPU (the emulator runs a kernel's threads one after another); the
# fixed-shape tests run whole. Then every GPU bench at small shapes
# (BENCH_SMOKE=1): that every line of it runs, not how fast (emulated times
# mean nothing), so that a GPU session's device time is not lost to a panic.
set -euo pipefail
cd "$(dirname "$0")/../.."
PROPTEST_CASES="${PROPTEST_CASES:-4}" bash cuda-stub/emu/test.sh

# smoke BENCH "PATTERN=COUNT" ...: runs the bench on the emulator and checks
# that it printed COUNT lines containing PATTERN (COUNT "+": at least one,
# "0": none). The log stays in $logs as bench_BENCH.log, the name the GPU
# scripts give it.
logs="$(mktemp -d)"
smoke() {
  local name="$1" bin log what n
  shift
  echo "== emulated: bench $name (BENCH_SMOKE=1)"
  bin="$(cargo bench --bench "$name" --no-run --message-format=json |
    python3 cuda-stub/emu/executables.py --target "$name")"
  log="$logs/bench_$name.log"
  BENCH_SMOKE=1 LD_LIBRARY_PATH="$PWD/target/cuda-emu" "$bin" 2>&1 | tee "$log"
  for what in "$@"; do
    local pattern="${what%=*}" want="${what##*=}"
    n="$(grep -c -- "$pattern" "$log" || true)"
    if [[ "$want" == "+" && "$n" -ge 1 ]] || [[ "$n" == "$want" ]]; then continue; fi
    echo "error: the smoke bench $name printed $n \"$pattern\" lines, not $want" >&2
    exit 1
  done
}

# 4 cells × 2 precisions, 6 forms each but RnnTanh's 5 (no cluster-rs),
# and persistent-mma for 3 cells in f16.
smoke engine_train "recur train step=49" "phases:=49" "GPU time per phase=49" \
  "persistent-mma: (PersistentMma=3"
# 5 cells × 2 precisions; 6 block counts; the LSTM's line and its input
# product; the sweeps and both flag forms where their plans fit.
smoke engine_forward "d2l B=8 H=64 V=40 T=6 =10" "one-word flip barrier=6" \
  "dense input:=1" "of which the input product=1" "lstm f16 mma units=+" \
  "sweep d2l gru-reset-after f32 PersistentSimt=+" "ClusterRegs cluster=16 rows=+" \
  "ClusterMma cluster=16 rows=+" "PersistentMmaFlagged units=+" \
  "PersistentMmaBlockFlags units=+" "FAILED=0"
# 5 cells × 2 precisions × greedy and temperature; forced paths: the GRU's
# 10, 8 for each of the 3 other cells (a quarter of them with the product
# ahead, a quarter with it and block sends, a quarter with it and the split
# draw), both precisions; none refused.
smoke engine_generate "generate B=1 H=64=20" "  forced =68" "greedy-ahead =16" \
  "greedy-ahead-blocks =16" "greedy-ahead-split =16" "not run=0"
# The LSTM in f16, f16 one launch per step, f32, and f16 on the
# persistent tensor-core loops at 8 and 16 units per block and at 8 on
# both flag forms, gradients finite.
smoke engine_cell_train "gradients finite: true=7" "per-step]: forward=1" \
  "mma units=8]: forward=1" "mma units=16]: forward=1" "mma units=8 flagged]: forward=1" \
  "mma units=8 block-flags]: forward=1" "loops PersistentMma/PersistentMma=4"

# The script that reads a GPU session's bench logs reads these (its --check
# fails where a bench's line format has moved away from its parsers).
echo "== benches/gpu_verdicts.py on the smoke logs"
python3 benches/gpu_verdicts.py --new "$logs" --check > "$logs/verdicts.md"
# Its pairs: 3 figures of 3 cells × 2 precisions; 4 cells × 2 precisions;
# two kernels, twice; 3 cells × 2 precisions; 3 figures of 4 cells × 2 precisions;
# 6 block counts; 3 and 2 figures of 3 cells in f16; 2 figures, three times;
# 2 paths of 4 cells × 2 precisions, three times; (best rows): 3 cells × 2
# precisions against the register kernel (or Cluster), and reset-before's
# register kernel against Cluster in 2 precisions; the planner's register
# rows against the sweep's fastest for the 3 swept cells it runs them for
# (GRU reset-after, LSTM, RNN tanh) × 2 precisions.
for pair in "reduce-scatter vs gather=18" "ClusterRegs vs Cluster 16=8" \
  "product ahead vs after the draw=16" "block sends vs sends per item=16" \
  "split draw vs whole-row draw=16" \
  "flagged vs grid barrier=2" "block flags vs grid barrier (best units)=2" "(best rows)=8" \
  "the sweep's fastest rows vs the planner's=6" \
  "training forward: ClusterMma vs ClusterRegs=24" "one-word flip vs grid_sync=6" \
  "training forward: PersistentMma vs Persistent=9" \
  "training backward: PersistentMma vs Persistent=6" \
  "tensor-core loops: 16 vs 8 units per block=2" \
  "tensor-core loops: block flags vs grid barriers=2" \
  "tensor-core loops: flagged words vs grid barriers=2"; do
  n="$(grep -c -- "${pair%=*}" "$logs/verdicts.md" || true)"
  if [[ "$n" != "${pair##*=}" ]]; then
    echo "error: gpu_verdicts.py printed $n \"${pair%=*}\" rows, not ${pair##*=}" >&2
    exit 1
  fi
done
rm -rf "$logs"

# The profile script of the device calls, against stand-ins for ncu (its
# hotspot tables, the 8-file limit of what a call brings back).
echo "== benches/profile_plumbing_check.sh"
bash benches/profile_plumbing_check.sh
