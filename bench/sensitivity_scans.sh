#!/usr/bin/env bash
# The measurements of bench/RESULTS_sensitivity.md: Wanda 70 %, both modes, both built-in models; held-out C4
# (validation documents 1000–1999), 8 × 256 windows, tune's 16 × 256 calibration. Each run is resumable.
# Usage (from the repository root): bash bench/sensitivity_scans.sh [MODEL ...]   (default: builtin gemma3)
set -euo pipefail
PY=${PY:-python}
PRUNER=${PRUNER:-wanda}
for model in "${@:-builtin gemma3}"; do
  for model1 in $model; do
    for mode in alone marginal; do
      flock /tmp/heavy.lock nice -n 5 "$PY" -m pruning sensitivity "$model1" --pruner "$PRUNER" --sparsity 0.7 \
        --mode "$mode" --delta 0.05 --max-windows 8 --tune-seqlen 256 --nsamples 16 --seqlen 256 --quiet \
        --out "bench/sensitivity/${model1}_${PRUNER}70_${mode}.parquet"
    done
  done
done
