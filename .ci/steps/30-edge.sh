#!/usr/bin/env bash
# The edge example (edge/, docs/edge.md): #![no_std], no allocator, weights
# embedded with include_bytes!, static buffers only. For f32 and f16 weights:
# build the static library, link it into the freestanding host shim (no C
# library: -nostdlib -static), run it, and print its footprint. The token-
# for-token check against recur-core is tests/edge_host.rs (cargo test).
set -euo pipefail
cd "$(dirname "$0")/../.."
unset RECUR_EDGE_MODEL # CI checks the deterministic default model
for variant in f32 f16; do
  demo=$(bash edge/host/build.sh "$variant")
  text=$("$demo" "the " 40)
  echo "edge $variant: $text"
  case "$text" in
    "the "?*) ;;
    *) echo "edge $variant: unexpected output" >&2; exit 1 ;;
  esac
  "$demo" -i | sed "s/^/edge $variant: /"
  size "$demo"
done
