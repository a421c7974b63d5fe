#!/usr/bin/env bash
# recur-core must stay no_std and allocation-free:
#  1. its normal (non-dev, non-proc-macro) dependency tree enables no `std`
#     or `alloc` feature;
#  2. core/nostd-check, a #![no_std] staticlib with its own panic handler and
#     no global allocator, builds against it (std would clash with the panic
#     handler, alloc would need the missing allocator) and is clippy-clean.
set -euo pipefail
cd "$(dirname "$0")/../.."

echo "recur-core's normal dependency tree (features in brackets):"
tree=$(cargo tree -p recur-core -e normal,no-proc-macro --prefix none -f '{p} [{f}]')
echo "$tree"
if echo "$tree" | grep -E '\[([^]]*,)?(std|alloc)(,[^]]*)?\]'; then
  echo "error: a std or alloc feature is enabled in recur-core's dependency tree" >&2
  exit 1
fi

export CARGO_TARGET_DIR="$PWD/target/nostd-check"
cargo build --release --manifest-path core/nostd-check/Cargo.toml
cargo clippy --release --manifest-path core/nostd-check/Cargo.toml -- -D warnings
echo "no_std proof: OK ($(ls "$CARGO_TARGET_DIR"/release/librecur_nostd_check.a))"
