#!/usr/bin/env bash
# GPU training checks and timings from binaries built here (the GPU machine
# has no Rust toolchain):
#   bash benches/engine_train_gpu.sh pack   # here: builds, packs .carry/train-bins.tar.xz
#                                           # (and copies the corpus beside it, git-ignored)
#   bash benches/engine_train_gpu.sh run    # there, .carry carried; logs into $OUT
# Every step has its own time limit.
set -uo pipefail
cd "$(dirname "$0")/.."
exe_of() { # json, target name, kind
  echo "$1" | python3 -c "import sys,json
for l in sys.stdin:
    m=json.loads(l)
    if m.get('reason')=='compiler-artifact' and m['target']['name']=='$2' and '$3' in m['target']['kind'] and m.get('executable'): print(m['executable'])"
}
if [ "${1:-}" = pack ]; then
  set -e
  STAGE=$(mktemp -d)
  json=$(cargo test --release --no-run --message-format=json --test engine_train)
  strip -o "$STAGE/engine_train" "$(exe_of "$json" engine_train test)"
  json=$(cargo bench --no-run --message-format=json --bench engine_train)
  strip -o "$STAGE/bench_engine_train" "$(exe_of "$json" engine_train bench)"
  json=$(cargo build --release --message-format=json --example train --example generate)
  strip -o "$STAGE/train" "$(exe_of "$json" train example)"
  strip -o "$STAGE/generate" "$(exe_of "$json" generate example)"
  mkdir -p .carry
  tar -cJf .carry/train-bins.tar.xz -C "$STAGE" .
  cp ../shared/data/jaychou_lyrics.txt.zip .carry/corpus.zip
  ls -la .carry
  exit 0
fi
OUT=${OUT:-/tmp/engine-train-out}
mkdir -p "$OUT"
BIN=$(mktemp -d)
tar -xJf .carry/train-bins.tar.xz -C "$BIN"
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; } > "$OUT/device.txt" 2>&1
export RUST_BACKTRACE=1
run() { # name, limit (s), command...
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  printf '%-28s rc=%-3s %4ss\n' "$name" "$rc" "$((SECONDS - start))" | tee -a "$OUT/summary.txt"
}
run test_engine_train 180 "$BIN/engine_train" --test-threads=4 --nocapture
run bench_engine_train 45 "$BIN/bench_engine_train"
run torch_train 80 python3 benches/engine_train_torch.py
CK=$(mktemp -d)
run train_d2l_gru_cuda 80 "$BIN/train" --preset d2l-gru --device cuda --corpus .carry/corpus.zip \
  --metrics "$OUT/d2l_gru_cuda.jsonl" --checkpoint "$CK/gru.safetensors"
run generate_cpu_from_gpu_ckpt 20 "$BIN/generate" --checkpoint "$CK/gru.safetensors" --prefix 分开 --len 50
run train_d2l_concise_lstm_cuda 50 "$BIN/train" --preset d2l-concise-lstm --device cuda \
  --corpus .carry/corpus.zip --metrics "$OUT/d2l_concise_lstm_cuda.jsonl"
