#!/usr/bin/env bash
# Builds the engine's test and bench binaries (release) and packs them,
# stripped, into .carry/engine/engine-bins.tar.xz for benches/engine_gpu_run.sh
# on the GPU machine (the binaries load that machine's libcuda.so.1); carry
# `.carry/engine` to it.
set -euo pipefail
cd "$(dirname "$0")/.."
STAGE=$(mktemp -d)
json=$(cargo test --release --no-run --message-format=json \
  --test engine_device --test engine_forward --test engine_output --test engine_generate)
for t in engine_device engine_forward engine_output engine_generate; do
  exe=$(echo "$json" | python3 benches/cargo_exe.py "$t" test)
  strip -o "$STAGE/$t" "$exe"
done
json=$(cargo bench --no-run --message-format=json --bench engine_forward --bench engine_generate)
for b in engine_forward engine_generate; do
  exe=$(echo "$json" | python3 benches/cargo_exe.py "$b" bench)
  strip -o "$STAGE/bench_$b" "$exe"
done
mkdir -p .carry/engine
tar -cJf .carry/engine/engine-bins.tar.xz -C "$STAGE" .
ls -la .carry/engine/engine-bins.tar.xz
bash benches/carry_size_check.sh .carry/engine
