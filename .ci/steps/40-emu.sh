#!/usr/bin/env bash
# The engine's GPU tests on recur's CPU emulator of CUDA (cuda-stub/emu):
# without a GPU they would only print "skipped: no CUDA device"; here every
# kernel runs and is compared with recur-core. Fewer property cases than on
# a GPU (the emulator runs a kernel's threads one after another); the
# fixed-shape tests run whole.
set -euo pipefail
cd "$(dirname "$0")/../.."
PROPTEST_CASES="${PROPTEST_CASES:-4}" bash cuda-stub/emu/test.sh
