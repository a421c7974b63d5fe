#!/usr/bin/env bash
# Runs every preset in full, one at a time, and records d2l's lines, the
# final perplexity and the mean seconds per epoch next to the perplexity the
# seeds printed. Long: about half an hour on 2 cores.
#
# Usage: bash benches/trainer_presets.sh [PRESET ...]   (from the repository root)
# Raw output: benches/results/trainer_presets.txt (appended per preset).
set -euo pipefail
cd "$(dirname "$0")/.."
CORPUS="${CORPUS:-../shared/data/jaychou_lyrics.txt.zip}"
THREADS="${THREADS:-2}"
# Through cargo: it puts the engine's driver library (a no-device stub where
# CUDA is absent) on the loader's path.
TRAIN="${TRAIN:-cargo run --release --quiet --example train --}"
OUT=benches/results/trainer_presets.txt
mkdir -p benches/results
if [ ! -f "$CORPUS" ]; then
  echo "skipped: corpus $CORPUS not found" >&2
  exit 0
fi
[ -n "${TRAIN_PREBUILT:-}" ] || cargo build --release --example train >/dev/null 2>&1 || cargo build --release --example train

# The perplexity each seed printed at the end of the same experiment.
declare -A SEED=(
  [d2l-rnn-random]="1.337 at 250 (seed 003)"
  [d2l-rnn-consecutive]="none printed (seed 002 was interrupted)"
  [d2l-gru]="1.80 (seed 003) / 1.46 (seed 000) at 160"
  [d2l-lstm]="4.20 at 160 (seed 003)"
  [d2l-concise-rnn]="1.038 at 250 (seed 003)"
  [d2l-concise-gru]="1.026 at 160 (seed 003; 1.013-1.026 from epoch 40)"
  [d2l-concise-lstm]="1.017 at 160 (seed 003; 1.015-1.024 from epoch 40)"
)
PRESETS=("$@")
[ ${#PRESETS[@]} -gt 0 ] || PRESETS=(d2l-rnn-random d2l-rnn-consecutive d2l-gru d2l-lstm d2l-concise-rnn d2l-concise-gru d2l-concise-lstm)
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
for preset in "${PRESETS[@]}"; do
  {
    echo "## $preset  ($(date -u +%Y-%m-%dT%H:%M:%SZ), threads $THREADS, load $(cut -d' ' -f1-3 /proc/loadavg))"
    $TRAIN --preset "$preset" --corpus "$CORPUS" --threads "$THREADS" --metrics "$TMP/m.jsonl"
    python3 - "$TMP/m.jsonl" "${SEED[$preset]}" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
mean = sum(r["seconds"] for r in rows) / len(rows)
print(f"summary: final perplexity {rows[-1]['perplexity']:.3f} after {rows[-1]['epoch']} epochs, "
      f"{mean:.3f} s/epoch (mean), seed printed {sys.argv[2]}")
PY
    echo
  } | tee -a "$OUT"
done
