#!/usr/bin/env bash
# Runs recur's GPU tests on the CPU emulator of CUDA (cuda-stub/emu/README.md):
# the engine's test binaries, built as `cargo test --release` builds them,
# started with the emulator first on the loader's path, so that every GPU
# test runs its kernels instead of printing "skipped: no CUDA device".
#
#     bash cuda-stub/emu/test.sh [TEST-BINARY-ARGS...]   # e.g. flagged --nocapture
#
# Environment: EMU_TESTS (space-separated test targets; default every
# engine_* test and trainer_backend), PROPTEST_CASES (fewer cases for a
# quicker run), RECUR_EMU_STALL_SECONDS (default 300: how long a block may
# wait without any thread moving before the emulator calls it a deadlock).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

# g++ 12 or later (C++20, _Float16); CI machines may lack it (CI runs as root).
if ! command -v g++ >/dev/null; then
  apt-get update -qq && apt-get install -y -qq g++ >/dev/null
fi
lib="$(bash cuda-stub/emu/build.sh)"
emu_dir="$(dirname "$lib")"

targets="${EMU_TESTS:-}"
if [[ -z "$targets" ]]; then
  # Single-file test targets and folder ones (tests/NAME/main.rs).
  targets="$(ls tests/engine_*.rs tests/engine_*/main.rs | sed 's|^tests/||; s|/main\.rs$||; s|\.rs$||' |
    tr '\n' ' ') trainer_backend"
fi
args=()
for t in $targets; do args+=(--test "$t"); done
# The binaries cargo builds for these targets, from its JSON messages.
mapfile -t bins < <(cargo test --workspace --release --no-run "${args[@]}" --message-format=json |
  python3 cuda-stub/emu/executables.py)
if ((${#bins[@]} == 0)); then
  echo "no test binaries built (cargo test --workspace --release --no-run ${args[*]})" >&2
  exit 1
fi

status=0
for bin in "${bins[@]}"; do
  name="$(basename "$bin")"
  echo "== emulated: ${name%-*}"
  log="$(mktemp)"
  set +e
  LD_LIBRARY_PATH="$emu_dir" "$bin" "$@" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  set -e
  # Every GPU test must have run: a "no CUDA device" skip means the
  # emulator was not the driver the binary loaded.
  if grep -q "skipped: no CUDA device" "$log"; then
    echo "error: ${name%-*} skipped GPU tests: the emulator was not loaded" >&2
    rc=1
  fi
  rm -f "$log"
  if ((rc != 0)); then status=1; fi
done
exit "$status"
