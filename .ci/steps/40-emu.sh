#!/usr/bin/env bash
# The engine's GPU tests on recur's CPU emulator of CUDA (cuda-stub/emu):
# without a GPU they would only print "skipped: no CUDA device"; here every
# kernel runs and is compared with recur-core. Fewer property cases than on
# a GPU (the emulator runs a kernel's threads one after another); the
# fixed-shape tests run whole. Then the training bench at a small shape
# (BENCH_SMOKE=1): that every line of it runs, not how fast (emulated times
# mean nothing), so that a GPU session's device time is not lost to a panic.
set -euo pipefail
cd "$(dirname "$0")/../.."
PROPTEST_CASES="${PROPTEST_CASES:-4}" bash cuda-stub/emu/test.sh

echo "== emulated: bench engine_train (BENCH_SMOKE=1)"
bench="$(cargo bench --bench engine_train --no-run --message-format=json |
  python3 cuda-stub/emu/executables.py --target engine_train)"
log="$(mktemp)"
BENCH_SMOKE=1 LD_LIBRARY_PATH="$PWD/target/cuda-emu" "$bench" 2>&1 | tee "$log"
# Every form of every cell printed its step, phase and per-phase lines.
for what in "recur train step" "phases:" "GPU time per phase"; do
  n="$(grep -c "$what" "$log" || true)"
  if ((n != 30)); then
    echo "error: the smoke bench printed $n \"$what\" lines, not 30 (4 cells × 2 precisions, 4 forms each but RnnTanh's 3)" >&2
    exit 1
  fi
done
rm -f "$log"
