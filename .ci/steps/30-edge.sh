#!/usr/bin/env bash
# The edge example (edge/, docs/edge.md): #![no_std], no allocator, weights
# embedded with include_bytes!, static buffers only. For f32 and f16 weights:
# build the static library, link it into the freestanding host shim (no C
# library: -nostdlib -static), run it, and print its footprint. The token-
# for-token check against recur-core is tests/edge_host.rs (cargo test).
set -euo pipefail
cd "$(dirname "$0")/../.."
unset RECUR_EDGE_MODEL # CI checks the deterministic default model
# The host link needs a C compiler and binutils (nm, size); install them
# where the machine lacks them (CI runs as root).
if ! command -v cc >/dev/null || ! command -v nm >/dev/null || ! command -v size >/dev/null; then
  apt-get update -qq && apt-get install -y -qq gcc binutils >/dev/null
fi
# The example is its own workspace: the root's fmt and clippy do not see it.
cargo fmt --manifest-path edge/Cargo.toml -- --check
for features in "" "--features f16"; do
  # shellcheck disable=SC2086
  CARGO_TARGET_DIR=edge/target/clippy cargo clippy --quiet --release \
    --manifest-path edge/Cargo.toml $features -- -D warnings
done
for variant in f32 f16; do
  demo=$(bash edge/host/build.sh "$variant")
  text=$("$demo" "the " 40)
  echo "edge $variant: $text"
  case "$text" in
    "the "?*) ;;
    *) echo "edge $variant: unexpected output" >&2; exit 1 ;;
  esac
  { "$demo" -i; "$demo" -s "the " 40; } | sed "s/^/edge $variant: /"
  size "$demo"
done
