#!/bin/bash
# bench/RESULTS_tune.md: the tuned allocation at 70 % on the built-in model, for Wanda and SparseGPT, with
# AlphaPruning (λ) and OWL (λ, M). Each run: dense C4 statistics (16 × 256 calibration tokens, seed 0), every
# candidate pruned one-shot from them and scored on 8 × 256 held-out C4 validation windows (documents 1000–1999),
# then --final: the sequential (reference) prune at the chosen value and at uniform, each scored on the same
# held-out windows and on WikiText-2 test (seqlen 512, the first 64 windows = 32,768 tokens; all 595 windows take
# ~10 min per model on 2 cores). Resumable (the JSON is rewritten after every candidate). Print the table with:
#   python bench/tune_report.py results/tune_*.json
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
PY=${PY:-.venv/bin/python}
mkdir -p results
C="--sparsity 0.7 --nsamples 16 --seqlen 256 --max-windows 8 --final --eval-seqlen 512 --eval-windows 64"
for pruner in ${PRUNERS:-wanda sparsegpt}; do
  $PY -m pruning tune --pruner $pruner --allocation alphapruning --lams 0,0.1,0.2,0.3,0.4,0.5 $C \
      --out results/tune_${pruner}_alphapruning.json
  # OWL: λ × M grid around the paper's defaults (λ 0.08, M 5); SparseGPT's one-shot prune costs seconds per
  # candidate (its OBS updates), so its grid is smaller
  if [[ $pruner == sparsegpt ]]; then lams=0.04,0.08,0.12; ms=3,5,7; else lams=0.02,0.05,0.08,0.12,0.16,0.2; ms=3,5,7,10; fi
  $PY -m pruning tune --pruner $pruner --allocation owl --lams $lams --owl-ms $ms $C \
      --out results/tune_${pruner}_owl.json
done
