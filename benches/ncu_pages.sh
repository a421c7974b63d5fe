#!/usr/bin/env bash
# Prints an Nsight Compute report's two pages that the GPU scripts keep
# (engine_gpu_profile.sh, engine_train_gpu.sh), on the GPU machine:
#   bash benches/ncu_pages.sh REPORT.ncu-rep details   # every section, every detail
#   bash benches/ncu_pages.sh REPORT.ncu-rep hotspots  # the source page as SASS with its
#                                                      # stall samples per instruction
#                                                      # (REPORT.sass.csv), summed by ncu_hotspots.py
set -uo pipefail
report=$1
case ${2:-} in
  details) ncu -i "$report" --page details --print-details all ;;
  hotspots)
    csv=${report%.ncu-rep}.sass.csv
    ncu -i "$report" --page source --print-source sass --csv > "$csv" || exit
    python3 "$(dirname "$0")/ncu_hotspots.py" "$csv"
    ;;
  *) echo "usage: $0 REPORT.ncu-rep details|hotspots" >&2; exit 2 ;;
esac
