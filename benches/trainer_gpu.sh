#!/usr/bin/env bash
# Every trainer preset with --device cuda, from binaries built here (the GPU
# machine has no Rust toolchain):
#   bash benches/trainer_gpu.sh pack   # here: builds, strips into .carry/lead/ (git-ignored;
#                                      # the corpus copied beside them)
#   bash benches/trainer_gpu.sh run    # there, with .carry/lead carried; logs into $OUT
# Records each preset's d2l lines, its training time (the sum of the epochs'
# seconds, what the trainer prints) and final perplexity; d2l-gru also with
# seeds 1 and 2 (or those in $SEEDS); a GPU checkpoint generating on the CPU, and the
# checkpoint round-trip test (tests/engine_train_checkpoint.rs). F16=1: d2l-gru and
# d2l-concise-gru with --precision f16 too.
set -uo pipefail
cd "$(dirname "$0")/.."
DEST=$PWD/.carry/lead
exe_of() { # json, target name, kind
  echo "$1" | python3 benches/cargo_exe.py "$2" "$3"
}
if [ "${1:-}" = pack ]; then
  set -e
  mkdir -p "$DEST"
  cp ../shared/data/jaychou_lyrics.txt.zip "$DEST/corpus.zip"
  json=$(cargo build --release --message-format=json -p recur --example train --example generate)
  strip -o "$DEST/train" "$(exe_of "$json" train example)"
  strip -o "$DEST/generate" "$(exe_of "$json" generate example)"
  json=$(cargo test --release --no-run --message-format=json -p recur --test engine_train_checkpoint)
  strip -o "$DEST/engine_train_checkpoint" "$(exe_of "$json" engine_train_checkpoint test)"
  { git rev-parse HEAD; git status --short; } > "$DEST/commit.txt"
  ls -la "$DEST"
  exit 0
fi
OUT=${OUT:-/tmp/trainer-gpu-out}
mkdir -p "$OUT"
BIN=.carry/lead
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; cat $BIN/commit.txt; } \
  > "$OUT/device.txt" 2>&1
run() { # name, limit (s), command...
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  printf '%-36s rc=%-3s %4ss\n' "$name" "$rc" "$((SECONDS - start))" | tee -a "$OUT/steps.txt"
}
# Training seconds = the sum of the epochs' `seconds` in the metrics file.
summary() { # name, metrics file
  python3 - "$1" "$2" <<'PY' | tee -a "$OUT/summary.txt"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[2])]
print(f"{sys.argv[1]:<28} epochs {len(rows):4d}  training {sum(r['seconds'] for r in rows):7.3f} s  "
      f"final perplexity {rows[-1]['perplexity']:.4f}")
PY
}
CK=$(mktemp -d)
for preset in d2l-gru d2l-rnn-random d2l-rnn-consecutive d2l-lstm d2l-concise-rnn d2l-concise-gru d2l-concise-lstm; do
  run "train_$preset" 120 "$BIN/train" --preset $preset --device cuda --corpus $BIN/corpus.zip \
    --metrics "$OUT/$preset.jsonl" --checkpoint "$CK/$preset.safetensors"
  summary "$preset" "$OUT/$preset.jsonl"
done
if [ "${F16:-0}" = 1 ]; then
  run "train_d2l-gru_f16" 60 "$BIN/train" --preset d2l-gru --device cuda --precision f16 \
    --corpus $BIN/corpus.zip --metrics "$OUT/d2l-gru_f16.jsonl"
  summary "d2l-gru --precision f16" "$OUT/d2l-gru_f16.jsonl"
  run "train_d2l-concise-gru_f16" 60 "$BIN/train" --preset d2l-concise-gru --device cuda --precision f16 \
    --corpus $BIN/corpus.zip --metrics "$OUT/d2l-concise-gru_f16.jsonl"
  summary "d2l-concise-gru --precision f16" "$OUT/d2l-concise-gru_f16.jsonl"
fi
for seed in ${SEEDS:-1 2}; do
  run "train_d2l-gru_seed$seed" 60 "$BIN/train" --preset d2l-gru --device cuda --seed $seed \
    --corpus $BIN/corpus.zip --metrics "$OUT/d2l-gru_seed$seed.jsonl"
  summary "d2l-gru --seed $seed" "$OUT/d2l-gru_seed$seed.jsonl"
done
run generate_cpu_from_gpu_ckpt 20 "$BIN/generate" --checkpoint "$CK/d2l-gru.safetensors" --prefix 分开 --len 50
cat "$OUT/generate_cpu_from_gpu_ckpt.log"
run test_engine_train_checkpoint 120 "$BIN/engine_train_checkpoint" --nocapture
grep -E "test result|panicked" "$OUT/test_engine_train_checkpoint.log"
# The device tool returns at most 8 files: the logs and metrics travel as one archive.
(cd "$OUT" && tar -czf logs.tar.gz --remove-files ./*.log ./*.jsonl)
ls "$OUT"
