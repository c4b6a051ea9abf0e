#!/bin/bash
# The seed pruners' perplexity table (FISTAPruner, prox24 and their references): built-in model, 64 × 512 C4
# calibration tokens (seed 0), WikiText-2 raw test at seqlen 512, first 32 windows — the same for every row. One resumable sweep table (finished cells are skipped on a
# rerun); one thread per process. Print it with:  python bench/seed_pruner_report.py $OUT
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
OUT=${OUT:-results/seed_pruners.parquet}
mkdir -p "$(dirname "$OUT")"
PY=${PY:-.venv/bin/python}
C="--nsamples 64 --seqlen 512 --seed 0 --eval wikitext2 --eval-seqlen 512 --max-windows 32 --out $OUT --quiet"
part=${1:-all}
if [[ $part == all || $part == base ]]; then
  $PY -m pruning sweep --pruners magnitude,wanda,sparsegpt --sparsities 0.5 $C
  $PY -m pruning sweep --pruners magnitude,wanda,sparsegpt --nm 2:4 $C
fi
if [[ $part == all || $part == fista ]]; then
  $PY -m pruning sweep --pruners fista --sparsities 0.5 $C                                   # re-fitted (default)
  $PY -m pruning sweep --pruners fista --nm 2:4 $C
  $PY -m pruning sweep --pruners fista --sparsities 0.5 --pruner-opt refit=none $C           # paper-literal
  $PY -m pruning sweep --pruners fista --nm 2:4 --pruner-opt refit=none $C
fi
if [[ $part == all || $part == gd ]]; then
  $PY -m pruning sweep --pruners wanda,sparsegpt --sparsities 0.5 --gd-steps 100 $C          # preconditioned GD
  $PY -m pruning sweep --pruners wanda,sparsegpt --nm 2:4 --gd-steps 100 $C
  $PY -m pruning sweep --pruners prox24 --nm 2:4 --gd-steps 100 $C                           # prox24 rescaled
  $PY -m pruning sweep --pruners prox24 --nm 2:4 --gd-steps 100 --pruner-opt precondition=false $C
fi
if [[ $part == all || $part == modes ]]; then
  for mode in none intra+inter sequential; do                                                 # intra = the default row
    $PY -m pruning sweep --pruners fista --sparsities 0.5 --correction $mode $C
  done
fi
if [[ $part == all || $part == ap70 ]]; then
  $PY -m pruning sweep --pruners wanda,sparsegpt,fista --sparsities 0.7 --allocations alphapruning --lams 0.3 $C
fi
