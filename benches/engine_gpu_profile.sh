#!/usr/bin/env bash
# Profiles the persistent forward kernels on the lent GPU machine, to find
# where the ~10 µs per step goes (benches/results/engine_h100.md):
#   bash benches/engine_gpu_pack.sh       # here: builds, packs .carry/engine-bins.tar.xz
#   bash benches/engine_gpu_profile.sh    # there, with .carry carried; reports into $OUT
# 1. the SM clock while the d2l GRU bench runs (is the clock low while most
#    of the GPU waits in a persistent kernel?);
# 2. Nsight Compute on one launch of the f32 and f16 GRU persistent kernels:
#    speed of light, occupancy, warp stall reasons, scheduler statistics.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/engine-gpu-profile}
mkdir -p "$OUT"
BIN=$(mktemp -d)
tar -xJf .carry/engine-bins.tar.xz -C "$BIN"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv > "$OUT/device.txt" 2>&1
bench="$BIN/bench_engine_forward --bench d2l_layer/gru-reset-after --warm-up-time 1 --measurement-time 4"
nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,utilization.gpu,power.draw --format=csv -lms 250 \
  > "$OUT/clocks.csv" 2>&1 &
smi=$!
timeout 120 $bench > "$OUT/bench_during_clock_sampling.log" 2>&1
kill $smi
for kernel in rec_persist_f32_gru_after rec_mma_f16_gru_after; do
  timeout 150 ncu --kernel-name "regex:$kernel" --launch-skip 20 --launch-count 1 \
    --section SpeedOfLight --section Occupancy --section LaunchStats \
    --section WarpStateStats --section SchedulerStats --section MemoryWorkloadAnalysis \
    $BIN/bench_engine_forward --bench d2l_layer/gru-reset-after --warm-up-time 0.2 --measurement-time 0.5 \
    > "$OUT/ncu_$kernel.txt" 2>&1
  echo "$kernel rc=$?" >> "$OUT/summary.txt"
done
grep -E "SM Frequency|Duration|Achieved Occupancy|Stall|Issued Warp|No Eligible|Registers Per|Block Size|Grid Size" \
  "$OUT"/ncu_*.txt | head -60
awk -F, 'NR>1 {print $2}' "$OUT/clocks.csv" | sort | uniq -c | sort -rn | head -5
