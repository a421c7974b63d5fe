#!/usr/bin/env bash
# Profiles the engine's automatic kernels on the lent GPU machine, to find
# where their time per step goes (benches/results/engine_h100.md):
#   bash benches/engine_gpu_pack.sh       # here: builds, packs .carry/engine/engine-bins.tar.xz
#   bash benches/engine_gpu_profile.sh    # there, with .carry/engine carried; reports into $OUT
#
# PROFILE_STEPS (default "clock d2l lstm") picks the parts:
# - clock: the SM clock while the d2l GRU bench runs (is the clock low
#   while most of the GPU waits in a persistent kernel?);
# - d2l: one launch each of the automatic forward kernels at the d2l shape,
#   f32: GRU reset-after (rec_rcluster16_f32_gru_after, W_hh in registers;
#   2.91 µs per step in run 6 against the 1.5 target) and reset-before, the
#   default preset's cell (rec_cluster16_f32_gru_before, 5.89 in run 5);
# - lstm: the tensor-core LSTM at H 768, B 16 (rec_mma_f16_lstm; issue 5's
#   cuDNN comparison, 10.6 µs per step against 2.0);
# - gen: the GRU's generation at batch 1, H 256 (gen_cluster16_f32_gru_after,
#   the automatic path; 5.87 µs per character in run 6 against 5).
#
# Each profiled launch goes through Nsight Compute once (speed of light,
# occupancy, warp states, scheduler, memory, and the PC-sampled stall
# reasons by instruction), into a report that is then printed twice: the
# details page, and the source page as SASS with its samples per
# instruction, which benches/ncu_hotspots.py sums into windows, opcodes and
# the instructions the warps wait at (benches/ncu_pages.sh). The device call brings back at most 8
# files, so $OUT gets: device.txt, summary.txt, hotspots.txt (every
# kernel's), details.txt (every kernel's details page) and raw.tar.xz (the
# reports, the CSVs and the logs).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/engine-gpu-profile}
STEPS=${PROFILE_STEPS:-clock d2l lstm}
mkdir -p "$OUT"
RAW=$(mktemp -d)
BIN=$(mktemp -d)
tar -xJf .carry/engine/engine-bins.tar.xz -C "$BIN"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv > "$OUT/device.txt" 2>&1
ncu --version >> "$OUT/device.txt" 2>&1
want() { [[ " $STEPS " == *" $1 "* ]]; }
sections=(--section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats
  --section SchedulerStats --section MemoryWorkloadAnalysis --section SourceCounters)

# profile NAME KERNEL_REGEX LAUNCH_SKIP SECONDS BENCH_BINARY BENCH_ARGS...:
# one launch of the kernel under ncu, its two pages, its hotspots.
profile() {
  local name=$1 kernel=$2 skip=$3 limit=$4
  shift 4
  timeout "$limit" ncu --kernel-name "regex:$kernel" --launch-skip "$skip" --launch-count 1 "${sections[@]}" \
    -f -o "$RAW/$name" "$@" > "$RAW/$name.log" 2>&1
  local rc=$?
  echo "$name ($kernel): ncu rc=$rc" | tee -a "$OUT/summary.txt"
  if [[ ! -e "$RAW/$name.ncu-rep" ]]; then
    tail -5 "$RAW/$name.log" | tee -a "$OUT/summary.txt"
    return
  fi
  { echo "===== $name ($kernel)"; bash benches/ncu_pages.sh "$RAW/$name.ncu-rep" details; } >> "$OUT/details.txt" 2>&1
  { echo "===== $name ($kernel)"; bash benches/ncu_pages.sh "$RAW/$name.ncu-rep" hotspots; } >> "$OUT/hotspots.txt" 2>&1
  echo "$name: hotspots rc=$?" >> "$OUT/summary.txt"
}

if want clock; then
  bench="$BIN/bench_engine_forward --bench d2l_layer/gru-reset-after --warm-up-time 1 --measurement-time 4"
  nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,utilization.gpu,power.draw --format=csv -lms 250 \
    > "$RAW/clocks.csv" 2>&1 &
  smi=$!
  timeout 120 $bench > "$RAW/bench_during_clock_sampling.log" 2>&1
  kill $smi
  { echo "SM clock while the d2l GRU bench runs (samples, MHz):"
    awk -F, 'NR>1 {print $2}' "$RAW/clocks.csv" | sort | uniq -c | sort -rn | head -5; } | tee -a "$OUT/summary.txt"
fi
if want d2l; then
  for cell in gru-reset-after:rec_rcluster16_f32_gru_after gru-reset-before:rec_cluster16_f32_gru_before; do
    profile "d2l_${cell%%:*}" "${cell#*:}" 3 200 \
      "$BIN/bench_engine_forward" --bench "d2l_layer/${cell%%:*}/f32" --warm-up-time 0.2 --measurement-time 0.5
  done
fi
if want lstm; then
  profile lstm_h768 rec_mma_f16_lstm 2 240 \
    "$BIN/bench_engine_forward" --bench lstm_h768 --warm-up-time 0.2 --measurement-time 0.5
fi
if want gen; then
  profile gen_gru gen_cluster16_f32_gru_after 5 240 \
    "$BIN/bench_engine_generate" --bench generate_b1_h256/gru-reset-after/greedy/F32 --warm-up-time 0.2 \
    --measurement-time 0.5
fi
tar -cJf "$OUT/raw.tar.xz" -C "$RAW" .
grep -E "SM Frequency|Duration|Achieved Occupancy|Warp Cycles Per Issued|Issued Warp|No Eligible|Registers Per|Block Size|Grid Size|=====" \
  "$OUT/details.txt" 2>/dev/null | head -80
grep -A12 "samples by stall reason" "$OUT/hotspots.txt" 2>/dev/null | head -60
