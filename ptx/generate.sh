#!/usr/bin/env bash
# Regenerates ptx/*.ptx and ptx/ptxas-report.txt from ptx/src with the pinned
# NVRTC 12.8 (installed by ptx/setup.sh into ptx/.venv). `--check` compares
# instead of writing (CI).
set -euo pipefail
cd "$(dirname "$0")"
bash setup.sh
exec .venv/bin/python build.py "$@"
