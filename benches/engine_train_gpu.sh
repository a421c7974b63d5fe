#!/usr/bin/env bash
# GPU training checks (language model and bare cell), timings and a
# per-kernel profile from binaries built here (the GPU machine has no Rust
# toolchain):
#   bash benches/engine_train_gpu.sh pack   # here: builds, strips and packs into .carry/$CARRY_TAG/bins.tar.xz
#                                           # (git-ignored; the corpus copied beside them)
#   bash benches/engine_train_gpu.sh run    # there, with .carry/$CARRY_TAG carried; logs into $OUT
#   bash benches/engine_train_gpu.sh profile  # there: the ncu steps alone
# Every step has its own time limit. `CARRY_TAG` (both) names the folder,
# default h7. `RECUR_SRC` (pack) builds from another checkout of the
# repository (e.g. a worktree), default this one. `EXAMPLES=0` (pack) skips
# the trainer examples; `TORCH=0`, `PROFILE=0` (run) skip PyTorch's script
# and the ncu profile; `TEST_LIMIT`, `BENCH_LIMIT`, `TORCH_LIMIT`,
# `TRAIN_LIMIT` (run) override those steps' time limits (seconds).
set -uo pipefail
cd "$(dirname "$0")/.."
TAG=${CARRY_TAG:-h7}
DEST=$PWD/.carry/$TAG
ROOT=$PWD
exe_of() { # json, target name, kind
  echo "$1" | python3 "$ROOT/benches/cargo_exe.py" "$2" "$3"
}
if [ "${1:-}" = pack ]; then
  set -e
  mkdir -p "$DEST"
  cp ../shared/data/jaychou_lyrics.txt.zip "$DEST/corpus.zip"
  cd "${RECUR_SRC:-.}"
  json=$(cargo test --release --no-run --message-format=json -p recur --test engine_train)
  strip -o "$DEST/engine_train" "$(exe_of "$json" engine_train test)"
  json=$(cargo bench --no-run --message-format=json -p recur --bench engine_train)
  strip -o "$DEST/bench_engine_train" "$(exe_of "$json" engine_train bench)"
  json=$(cargo test --release --no-run --message-format=json -p recur --test engine_cell_train)
  strip -o "$DEST/engine_cell_train" "$(exe_of "$json" engine_cell_train test)"
  json=$(cargo bench --no-run --message-format=json -p recur --bench engine_cell_train)
  strip -o "$DEST/bench_engine_cell_train" "$(exe_of "$json" engine_cell_train bench)"
  # Checkpoints across devices, out-of-memory errors, generate --device
  # cuda, the training API's semantics (clip, carried state, reproducible
  # runs).
  for t in engine_train_checkpoint engine_device engine_train_api; do
    json=$(cargo test --release --no-run --message-format=json -p recur --test $t)
    strip -o "$DEST/$t" "$(exe_of "$json" $t test)"
  done
  if [ "${EXAMPLES:-1}" = 1 ] && json=$(cargo build --release --message-format=json -p recur --example train --example generate); then
    strip -o "$DEST/train" "$(exe_of "$json" train example)"
    strip -o "$DEST/generate" "$(exe_of "$json" generate example)"
  else
    echo "the trainer examples skipped (EXAMPLES=0) or do not build: the run skips them"
    rm -f "$DEST/train" "$DEST/generate"
  fi
  git rev-parse HEAD > "$DEST/commit.txt"
  git status --short >> "$DEST/commit.txt"
  # One xz stream for all binaries: each embeds the same 20 MB of PTX text,
  # which xz's 64 MiB dictionary (-9) stores once per few binaries (about
  # 4 MB in all, against 42 MB gzipped one by one, which with the working
  # tree passed the device call's carry limit of 64 MiB).
  rm -f "$DEST"/*.gz
  bins=()
  for f in "$DEST"/*; do
    case $f in *.txt | *.zip | *.tar.xz) ;; *) bins+=("$(basename "$f")") ;; esac
  done
  tar -cf - --sort=name -C "$DEST" "${bins[@]}" | xz -9 -T1 > "$DEST/bins.tar.xz"
  (cd "$DEST" && rm -f "${bins[@]}")
  ls -la "$DEST"
  cd "$ROOT"
  bash benches/carry_size_check.sh "$DEST"
  exit 0
fi
OUT=${OUT:-/tmp/engine-train-out}
mkdir -p "$OUT"
# The carried binaries, unpacked into a scratch folder.
BIN=$(mktemp -d)
for f in .carry/$TAG/*; do
  case $f in
    *.tar.xz) tar -xJf "$f" -C "$BIN" ;;
    *.gz) gunzip -c "$f" > "$BIN/$(basename "${f%.gz}")" && chmod +x "$BIN/$(basename "${f%.gz}")" ;;
    *) cp "$f" "$BIN/" ;;
  esac
done
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; cat $BIN/commit.txt; } \
  > "$OUT/device.txt" 2>&1
export RUST_BACKTRACE=1
run() { # name, limit (s), command...
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  printf '%-28s rc=%-3s %4ss\n' "$name" "$rc" "$((SECONDS - start))" | tee -a "$OUT/steps.txt"
}
# The ncu steps (with PROFILE=1 in `run`, or alone with `profile`).
profile() {
  # Per-kernel GPU time of ~3 steps of the GRU (reset-after, as d2l-gru).
  BENCH_CELL=GruResetAfter run ncu_profile 200 ncu --metrics gpu__time_duration.sum --launch-skip 2000 --launch-count 300 \
    "$BIN/bench_engine_train"
  # Stall reasons of the products (GRU f32 at d2l's shape): the ring form
  # (logits, dW_d, dhs, dW_hh of one step), then tr_gemm's.
  BENCH_CELL=GruResetAfter BENCH_LOOPS=cluster run ncu_products_ring 150 ncu --kernel-name regex:'^tr_gemm_ring$' \
    --launch-skip 40 --launch-count 4 --section SpeedOfLight --section WarpStateStats --section SchedulerStats \
    --section MemoryWorkloadAnalysis "$BIN/bench_engine_train"
  BENCH_CELL=GruResetAfter BENCH_LOOPS=cluster-tr-gemm run ncu_products_tr_gemm 150 ncu --kernel-name regex:'^tr_gemm$' \
    --launch-skip 40 --launch-count 4 --section SpeedOfLight --section WarpStateStats --section SchedulerStats \
    --section MemoryWorkloadAnalysis "$BIN/bench_engine_train"
  for f in ncu_products_ring ncu_products_tr_gemm; do
    grep -E "tr_gemm|Stall|Duration|Throughput|Issued|Eligible|Active Warps|Hit Rate" "$OUT/$f.log" | head -40
  done
  # The H 768 LSTM's persistent tensor-core loops (the cell bench's first
  # line: one forward, one backward after a warm-up pair): where a step's
  # time goes, with the stall samples by instruction (SourceCounters; the
  # report's details page, then its hotspots: benches/ncu_pages.sh).
  local rep
  rep=$(mktemp -d)/cell_train_mma
  run ncu_cell_train_mma 240 ncu --kernel-name regex:'^tr_mma_(fwd|bwd)_f16_lstm$' --launch-skip 2 \
    --launch-count 2 --section SpeedOfLight --section WarpStateStats --section SchedulerStats \
    --section MemoryWorkloadAnalysis --section SourceCounters -f -o "$rep" "$BIN/bench_engine_cell_train"
  if [ -e "$rep.ncu-rep" ]; then
    { bash benches/ncu_pages.sh "$rep.ncu-rep" details; bash benches/ncu_pages.sh "$rep.ncu-rep" hotspots; } \
      >> "$OUT/ncu_cell_train_mma.log" 2>&1
  fi
  grep -E "tr_mma|Duration|Stall|Issued|Eligible|Throughput|Hit Rate" "$OUT/ncu_cell_train_mma.log" | head -40
  grep -A12 "samples by stall reason" "$OUT/ncu_cell_train_mma.log" | head -30
}
if [ "${1:-}" = profile ]; then
  profile
  exit 0
fi
run test_engine_train ${TEST_LIMIT:-150} "$BIN/engine_train" --test-threads=8 --nocapture
# Every time-loop form (clusters, persistent, per step), f32 and f16.
run bench_engine_train ${BENCH_LIMIT:-90} "$BIN/bench_engine_train"
grep -h "train step\|phases" "$OUT"/bench_engine_train*.log
if [ "${TORCH:-1}" = 1 ]; then
  run torch_train ${TORCH_LIMIT:-80} python3 benches/engine_train_torch.py
  grep -h "train step" "$OUT/torch_train.log"
fi
# A bare cell on dense inputs: its tests, then LSTM H 768 forward + backward
# beside nn.LSTM's in the same call.
run test_engine_cell_train ${TEST_LIMIT:-150} "$BIN/engine_cell_train" --test-threads=8 --nocapture
run bench_engine_cell_train ${BENCH_LIMIT:-90} "$BIN/bench_engine_cell_train"
grep -h "cell train" "$OUT/bench_engine_cell_train.log"
if [ "${TORCH:-1}" = 1 ]; then
  run torch_cell_train ${TORCH_LIMIT:-80} python3 benches/engine_cell_train_torch.py
  grep -h "cell train" "$OUT/torch_cell_train.log"
fi
if [ -x "$BIN/train" ]; then
  CK=$(mktemp -d)
  run train_d2l_gru_cuda ${TRAIN_LIMIT:-60} "$BIN/train" --preset d2l-gru --device cuda --corpus $BIN/corpus.zip \
    --metrics "$OUT/d2l_gru_cuda.jsonl" --checkpoint "$CK/gru.safetensors"
  tail -3 "$OUT/train_d2l_gru_cuda.log"
  run generate_cpu_from_gpu_ckpt 20 "$BIN/generate" --checkpoint "$CK/gru.safetensors" --prefix 分开 --len 50
fi
if [ "${PROFILE:-1}" = 1 ] && command -v ncu >/dev/null; then
  profile
fi
run test_engine_train_checkpoint ${TEST_LIMIT:-150} "$BIN/engine_train_checkpoint" --test-threads=1 --nocapture
run test_engine_device 60 "$BIN/engine_device" --nocapture
run test_engine_train_api 90 "$BIN/engine_train_api" --nocapture
grep -E "test result|panicked|FAILED" "$OUT/test_engine_train.log" "$OUT/test_engine_cell_train.log" \
  "$OUT/test_engine_train_checkpoint.log" "$OUT/test_engine_device.log" "$OUT/test_engine_train_api.log" | head
