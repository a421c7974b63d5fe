#!/usr/bin/env bash
# Runs benches/engine_gpu_profile.sh here, without a GPU, against stand-ins
# for ncu, nvidia-smi and the packed bench binaries, so that a change to the
# script (or to ncu_pages.sh / ncu_hotspots.py) is not first run in a
# scarce device call. Checks that every profiled kernel reached the
# hotspot tables and that $OUT holds no more than the 8 files a device
# call brings back. CI runs it (.ci/steps/40-emu.sh).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
python3 "$root/benches/ncu_hotspots.py" --self-test
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/bin" "$work/bins" "$work/repo/benches" "$work/repo/.carry/engine"
# ncu: `-o REPORT` writes REPORT.ncu-rep; `-i REPORT --page source` prints a
# source page in Nsight Compute's CSV shape, any other page a line.
cat > "$work/bin/ncu" <<'NCU'
#!/usr/bin/env bash
[[ "${1:-}" == --version ]] && { echo "stand-in ncu"; exit 0; }
if [[ " $* " == *" -i "* ]]; then
  if [[ " $* " == *" --page source "* ]]; then
    echo '"Kernel Name","k"'
    echo '"Address","Source","Warp Stall Sampling (All Samples)","smsp__pcsamp_warps_issue_stalled_wait"'
    echo '"0x10","FFMA R1, R2, R3, R4","3","3"'
    echo '"0x20","SYNCS.PHASECHK.TRANS64.TRYWAIT P1, [R3], R2","7","0"'
  else
    echo "    Duration us 1.0"
  fi
  exit 0
fi
while (($#)); do [[ "$1" == -o ]] && echo report > "$2.ncu-rep"; shift; done
NCU
printf '#!/usr/bin/env bash\necho "name, driver_version"\n' > "$work/bin/nvidia-smi"
for b in bench_engine_forward bench_engine_generate; do printf '#!/usr/bin/env bash\necho bench\n' > "$work/bins/$b"; done
chmod +x "$work"/bin/* "$work"/bins/*
tar -cJf "$work/repo/.carry/engine/engine-bins.tar.xz" -C "$work/bins" .
cp "$root"/benches/{engine_gpu_profile.sh,ncu_pages.sh,ncu_hotspots.py} "$work/repo/benches/"
(cd "$work/repo" && PATH="$work/bin:$PATH" OUT="$work/out" PROFILE_STEPS="clock d2l lstm gen" \
  bash benches/engine_gpu_profile.sh > "$work/log" 2>&1) || { cat "$work/log"; exit 1; }
kernels=$(grep -c "^=====" "$work/out/hotspots.txt" || true)
files=$(find "$work/out" -type f | wc -l)
if [[ "$kernels" != 4 ]] || ! grep -q "hotspots rc=0" "$work/out/summary.txt" ||
  [[ $(grep -c "SYNCS" "$work/out/hotspots.txt") -lt 4 ]] || ((files > 8)); then
  echo "error: engine_gpu_profile.sh: $kernels kernels in hotspots.txt (want 4), $files files in \$OUT (at most 8)" >&2
  cat "$work/out/summary.txt" "$work/out/hotspots.txt" >&2
  exit 1
fi
echo "engine_gpu_profile.sh: 4 kernels profiled (stand-in ncu), $files files in \$OUT"
