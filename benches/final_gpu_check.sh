#!/usr/bin/env bash
# The closing check of a session on the lent GPU: every GPU test of the
# workspace, then every trainer preset with --device cuda (benches/trainer_gpu.sh),
# d2l-gru also with --precision f16. Binaries built here:
#   bash benches/final_gpu_check.sh pack   # here: tests into .carry/lead/tests.tar.xz + trainer_gpu.sh pack
#   bash benches/final_gpu_check.sh run    # there, with .carry/lead carried; logs into $OUT
set -uo pipefail
cd "$(dirname "$0")/.."
TESTS="engine_device engine_forward engine_output engine_generate engine_train engine_train_checkpoint"
if [ "${1:-}" = pack ]; then
  set -e
  bash benches/trainer_gpu.sh pack >/dev/null
  STAGE=$(mktemp -d)
  for t in $TESTS; do
    json=$(cargo test --release --no-run --message-format=json -p recur --test "$t")
    exe=$(echo "$json" | python3 benches/cargo_exe.py "$t" test)
    strip -o "$STAGE/$t" "$exe"
  done
  tar -cJf .carry/lead/tests.tar.xz -C "$STAGE" .
  ls -la .carry/lead
  exit 0
fi
OUT=${OUT:-/tmp/final-gpu-out}
mkdir -p "$OUT"
BIN=$(mktemp -d)
tar -xJf .carry/lead/tests.tar.xz -C "$BIN"
for t in $TESTS; do
  start=$SECONDS
  timeout 150 "$BIN/$t" --test-threads=4 > "$OUT/test_$t.log" 2>&1
  rc=$?
  printf '%-36s rc=%-3s %4ss  %s\n' "test_$t" "$rc" "$((SECONDS - start))" \
    "$(grep -E '^test result' "$OUT/test_$t.log" | tr '\n' ' ')" | tee -a "$OUT/steps.txt"
  grep -c "skipped: no CUDA device" "$OUT/test_$t.log" | sed 's/^/  skip lines: /' | tee -a "$OUT/steps.txt"
done
F16=1 SEEDS="${SEEDS:-1 2 3 4 5 6 7 8 9}" bash benches/trainer_gpu.sh run
