#!/usr/bin/env bash
# Fails where a device call carrying DIR would pass the device tool's limit
# on what travels: the working tree (tracked files and untracked ones git
# does not ignore) and the carried paths, 64 MiB in all. The pack scripts
# (engine_gpu_pack.sh, engine_train_gpu.sh pack) run it on what they packed.
#   bash benches/carry_size_check.sh .carry/engine
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$1
limit=$((64 * 1024 * 1024))
tree=$(git ls-files -z -co --exclude-standard | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')
carry=$(du -sb "$dir" | cut -f1)
total=$((tree + carry))
awk -v d="$dir" -v t="$tree" -v c="$carry" -v l="$limit" 'BEGIN {
  printf "travels with %s: working tree %.1f MB + carry %.1f MB = %.1f MB (limit %.1f MB)\n", d, t / 1e6, c / 1e6, (t + c) / 1e6, l / 1e6
}'
if ((total > limit)); then
  echo "error: a device call carrying $dir would pass the 64 MiB limit" >&2
  exit 1
fi
