#!/usr/bin/env bash
# Profiles the persistent forward kernels on the lent GPU machine, to find
# where their time per step goes (benches/results/engine_h100.md):
#   bash benches/engine_gpu_pack.sh       # here: builds, packs .carry/engine/engine-bins.tar.xz
#   bash benches/engine_gpu_profile.sh    # there, with .carry/engine carried; reports into $OUT
# 1. the SM clock while the d2l GRU bench runs (is the clock low while most
#    of the GPU waits in a persistent kernel?);
# 2. Nsight Compute on one launch each of the f32 and f16 GRU persistent
#    kernels at the d2l shape and of the tensor-core LSTM at H 768, B 16
#    (issue 5's cuDNN comparison; 10.6 µs per step against cuDNN's 2.0):
#    speed of light, occupancy, warp stall reasons, scheduler statistics,
#    and for the LSTM the stall samples by instruction (SourceCounters);
# 3. (`gen`, not in the default) the same, stall samples by instruction
#    included, on one launch of the GRU's generation at batch 1, H 256
#    (the automatic path, gen_cluster16_f32_gru_after; 5.87 µs per
#    character in run 6 against the 5 µs target).
# PROFILE_STEPS (default "clock d2l lstm") picks the parts.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/engine-gpu-profile}
STEPS=${PROFILE_STEPS:-clock d2l lstm}
mkdir -p "$OUT"
BIN=$(mktemp -d)
tar -xJf .carry/engine/engine-bins.tar.xz -C "$BIN"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv > "$OUT/device.txt" 2>&1
want() { [[ " $STEPS " == *" $1 "* ]]; }
sections="--section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats
  --section SchedulerStats --section MemoryWorkloadAnalysis"
if want clock; then
  bench="$BIN/bench_engine_forward --bench d2l_layer/gru-reset-after --warm-up-time 1 --measurement-time 4"
  nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,utilization.gpu,power.draw --format=csv -lms 250 \
    > "$OUT/clocks.csv" 2>&1 &
  smi=$!
  timeout 120 $bench > "$OUT/bench_during_clock_sampling.log" 2>&1
  kill $smi
  awk -F, 'NR>1 {print $2}' "$OUT/clocks.csv" | sort | uniq -c | sort -rn | head -5
fi
if want d2l; then
  for kernel in rec_persist_f32_gru_after rec_mma_f16_gru_after; do
    # shellcheck disable=SC2086
    timeout 150 ncu --kernel-name "regex:$kernel" --launch-skip 20 --launch-count 1 $sections \
      $BIN/bench_engine_forward --bench d2l_layer/gru-reset-after --warm-up-time 0.2 --measurement-time 0.5 \
      > "$OUT/ncu_$kernel.txt" 2>&1
    echo "$kernel rc=$?" | tee -a "$OUT/summary.txt"
  done
fi
if want lstm; then
  # shellcheck disable=SC2086
  timeout 240 ncu --kernel-name "regex:rec_mma_f16_lstm" --launch-skip 2 --launch-count 1 $sections \
    --section SourceCounters --print-details all \
    $BIN/bench_engine_forward --bench lstm_h768 --warm-up-time 0.2 --measurement-time 0.5 \
    > "$OUT/ncu_rec_mma_f16_lstm_h768.txt" 2>&1
  echo "rec_mma_f16_lstm (H 768) rc=$?" | tee -a "$OUT/summary.txt"
fi
if want gen; then
  # shellcheck disable=SC2086
  timeout 240 ncu --kernel-name "regex:gen_cluster16_f32_gru_after" --launch-skip 5 --launch-count 1 $sections \
    --section SourceCounters --print-details all \
    $BIN/bench_engine_generate --bench generate_b1_h256/gru-reset-after/greedy/F32 --warm-up-time 0.2 \
    --measurement-time 0.5 > "$OUT/ncu_gen_cluster16_f32_gru_after.txt" 2>&1
  echo "gen_cluster16_f32_gru_after rc=$?" | tee -a "$OUT/summary.txt"
fi
grep -E "SM Frequency|Duration|Achieved Occupancy|Stall|Issued Warp|No Eligible|Registers Per|Block Size|Grid Size" \
  "$OUT"/ncu_*.txt | head -80
