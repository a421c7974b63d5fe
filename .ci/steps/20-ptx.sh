#!/usr/bin/env bash
# The committed PTX (ptx/*.ptx) and its ptxas report must be exactly what the
# pinned NVRTC makes of ptx/src, and ptxas must assemble every kernel for
# sm_80 and sm_90. Installs the pinned compiler wheels itself (ptx/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
bash ptx/generate.sh --check
