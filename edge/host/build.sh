#!/usr/bin/env bash
# Builds the edge example for the host and links it into the freestanding
# shim: edge/host/build.sh f32|f16  ->  edge/target/<variant>/edge_demo
#
# The static library is #![no_std] with its own panic handler; the link uses
# no C library, no startup files and no allocator (-nostdlib -static), so an
# allocation or a std call anywhere in the example or in recur-core fails it.
# RECUR_EDGE_MODEL (a safetensors model) is passed through to build.rs.
set -euo pipefail
variant=${1:?usage: edge/host/build.sh f32|f16}
edge="$(cd "$(dirname "$0")/.." && pwd)"
case "$variant" in
  f32) features=() ;;
  f16) features=(--features f16) ;;
  *) echo "unknown variant $variant (f32 or f16)" >&2; exit 2 ;;
esac
out="$edge/target/$variant"
CARGO_TARGET_DIR="$out" "${CARGO:-cargo}" build --quiet --release \
  --manifest-path "$edge/Cargo.toml" "${features[@]}"
lib="$out/release/librecur_edge.a"
# No allocator: neither Rust's allocation entry points nor the C library's.
if nm -u "$lib" 2>/dev/null | grep -E '__rust_alloc|__rust_dealloc|__rg_alloc|\<(malloc|calloc|realloc|free)\>'; then
  echo "edge: $lib needs an allocator" >&2
  exit 1
fi
"${CC:-cc}" -O2 -ffreestanding -fno-builtin -fno-stack-protector -fno-tree-loop-distribute-patterns \
  -nostdlib -static "$edge/host/start.c" "$lib" -o "$out/edge_demo"
echo "$out/edge_demo"
