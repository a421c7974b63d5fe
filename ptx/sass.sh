#!/usr/bin/env bash
# A static look at the SASS of recur's kernels (no GPU): see ptx/sass.py.
#   bash ptx/sass.sh recurrent_mma 'rec_mma_f16_lstm$'
# Adds the pinned cuobjdump and nvdisasm (PyPI) to the venv of ptx/setup.sh.
set -euo pipefail
cd "$(dirname "$0")"
bash setup.sh
SASS_PINS=("nvidia-cuda-cuobjdump==13.5.37" "nvidia-cuda-nvdisasm==13.5.37")
# (sass.py sets the execute bits the wheels may lack.)
if [ ! -e .venv/lib/python3*/site-packages/nvidia/cu13/bin/nvdisasm ] ||
   [ ! -e .venv/lib/python3*/site-packages/nvidia/cu13/bin/cuobjdump ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "${SASS_PINS[@]}"
fi
exec .venv/bin/python sass.py "$@"
