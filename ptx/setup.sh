#!/usr/bin/env bash
# Installs the pinned CUDA compiler pieces (NVRTC, ptxas, the CUDA headers)
# from PyPI into the git-ignored venv ptx/.venv. No GPU and no CUDA toolkit
# needed. Idempotent: a venv that already has the pins is left as is.
set -euo pipefail
cd "$(dirname "$0")"
PINS=(
  "nvidia-cuda-nvrtc-cu12==12.8.93"   # libnvrtc: CUDA C -> PTX
  "nvidia-cuda-nvcc-cu12==12.8.93"    # ptxas: PTX -> SASS (registers, spills)
  "nvidia-cuda-runtime-cu12==12.8.90" # cuda_fp16.h and friends
)
STAMP=.venv/.recur-pins
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "${PINS[*]}" ]; then
  exit 0
fi
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check "${PINS[@]}"
echo "${PINS[*]}" > "$STAMP"
