#!/usr/bin/env bash
# Per-kernel GPU time of the training step (ncu, or nsys where installed):
#   here: strip -o .carry/prof/bench_engine_train <cargo bench --no-run --bench engine_train exe>
#   there: bash benches/engine_train_gpu_profile.sh  (with .carry carried; $OUT set by the device tool)
# Result of the first run: benches/results/engine_train_h100_profile/summary.txt
set -uo pipefail
B=.carry/prof/bench_engine_train
nvidia-smi --query-gpu=name,driver_version --format=csv > $OUT/device.txt
which nsys ncu > $OUT/tools.txt 2>&1
if command -v nsys >/dev/null; then
  timeout 200 nsys profile -o $OUT/train --force-overwrite true --trace cuda $B > $OUT/nsys_run.log 2>&1
  timeout 120 nsys stats --report cuda_gpu_kern_sum --report cuda_api_sum --format csv -o $OUT/stats $OUT/train.nsys-rep > $OUT/nsys_stats.log 2>&1
  rm -f $OUT/train.sqlite
  ls $OUT
  head -40 $OUT/stats_cuda_gpu_kern_sum.csv
  head -25 $OUT/stats_cuda_api_sum.csv
else
  timeout 300 ncu --metrics gpu__time_duration.sum --launch-skip 2000 --launch-count 400 $B > $OUT/ncu.txt 2>&1
  tail -50 $OUT/ncu.txt
fi
