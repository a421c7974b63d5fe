#!/usr/bin/env bash
# Training speed of recur's CPU trainer against the seeds' own PyTorch code,
# measured in the same run, model by model, back to back:
#
#   d2l-gru          vs the scratch GRU of seed 003 (train_and_predict_rnn)   target ≥ 5×
#   d2l-lstm         vs the scratch LSTM of seed 003                          target ≥ 5×
#   d2l-concise-gru  vs nn.GRU + nn.Linear, Adam (train_and_predict_rnn_pytorch) target ≥ 2×
#   d2l-concise-lstm vs nn.LSTM + nn.Linear, Adam                             target ≥ 2×
#
# Both sides: hidden 256, batch 32, 35 steps, the first 10,000 characters,
# consecutive sampling, 2 threads, training loop only, one warm-up epoch then
# EPOCHS timed epochs. Tokens/s = predicted characters (T·B per mini-batch)
# per second. The machine is shared: each side's figure is its fastest
# timed epoch ("best", robust to other processes' load), the mean over the
# timed epochs is printed beside it; the ratio and the verdict use "best".
# PyTorch runs with OMP_WAIT_POLICY=PASSIVE: on a loaded machine its OpenMP
# threads otherwise spin at barriers and it runs up to ten times slower, so
# this setting only ever helps the baseline.
#
# Usage: bash benches/trainer_speed.sh [EPOCHS]   (from the repository root)
# Needs torch in .venv (python -m venv .venv && .venv/bin/pip install torch numpy)
# or PYTHON=/path/to/python. Raw output: benches/results/trainer_speed.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS="${1:-3}"
THREADS=2
CORPUS="${CORPUS:-../shared/data/jaychou_lyrics.txt.zip}"
PYTHON="${PYTHON:-.venv/bin/python}"
OUT=benches/results/trainer_speed.txt
mkdir -p benches/results

if [ ! -f "$CORPUS" ]; then
  echo "skipped: corpus $CORPUS not found" >&2
  exit 0
fi
if ! "$PYTHON" -c "import torch, numpy" 2>/dev/null; then
  echo "error: $PYTHON cannot import torch and numpy" >&2
  exit 1
fi
cargo build --release --example train >/dev/null 2>&1 || cargo build --release --example train

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# recur: best tokens/s, its s/epoch, and mean tokens/s over the timed epochs
# (the first epoch is warm-up).
recur_speed() {
  local preset="$1"
  # Through cargo: it puts the engine's driver library (a no-device stub
  # where CUDA is absent) on the loader's path.
  cargo run --release --quiet --example train -- --preset "$preset" --corpus "$CORPUS" --epochs $((EPOCHS + 1)) \
    --threads "$THREADS" --metrics "$TMP/$preset.jsonl" --quiet >/dev/null
  python3 - "$TMP/$preset.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])][1:]
secs = sum(r["seconds"] for r in rows)
toks = sum(r["tokens_per_s"] * r["seconds"] for r in rows)
best = min(rows, key=lambda r: r["seconds"])
print(f"{best['tokens_per_s']:.0f} {best['seconds']:.4f} {toks / secs:.0f}")
PY
}

{
  echo "# benches/trainer_speed.sh, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "# torch $("$PYTHON" -c 'import torch; print(torch.__version__)') (OMP_WAIT_POLICY=PASSIVE), threads $THREADS, $EPOCHS timed epochs after 1 warm-up"
  printf "%-18s %9s %8s %9s  %-13s %9s %8s %9s %7s %7s %s\n" recur best-tok/s s/epoch mean-tok/s \
    pytorch best-tok/s s/epoch mean-tok/s ratio target ok
  for pair in d2l-gru:scratch-gru:5 d2l-lstm:scratch-lstm:5 d2l-concise-gru:concise-gru:2 d2l-concise-lstm:concise-lstm:2; do
    IFS=: read -r preset model target <<<"$pair"
    read -r torch_tps torch_spe torch_mean < <(OMP_WAIT_POLICY=PASSIVE "$PYTHON" benches/trainer_speed.py --corpus "$CORPUS" \
      --epochs "$EPOCHS" --threads "$THREADS" --models "$model" | awk '{print $2, $3, $4}')
    read -r recur_tps recur_spe recur_mean < <(recur_speed "$preset")
    ratio=$(python3 -c "print(f'{$recur_tps / $torch_tps:.2f}')")
    ok=$(python3 -c "print('yes' if $recur_tps >= $target * $torch_tps else 'NO')")
    printf "%-18s %9s %8s %9s  %-13s %9s %8s %9s %7s %6sx %s\n" "$preset" "$recur_tps" "$recur_spe" \
      "$recur_mean" "$model" "$torch_tps" "$torch_spe" "$torch_mean" "$ratio" "$target" "$ok"
  done
} | tee "$OUT"
