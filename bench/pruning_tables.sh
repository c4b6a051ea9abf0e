#!/bin/bash
# The perplexity tables of the first pruners and of masked GD: one resumable sweep table, built-in model,
# 16 × 256 C4 calibration tokens (seed 0), WikiText-2 seqlen 512, first 16 windows. One thread per process; several
# of these commands may run at once on the same table (each save merges under a file lock). Rerunning skips the
# finished cells. Print the table with:  python -c "import pandas as pd; print(pd.read_parquet('$OUT').to_string())"
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
OUT=${OUT:-results/pruning_tables.parquet}
mkdir -p "$(dirname "$OUT")"
PY=${PY:-.venv/bin/python}
COMMON="--nsamples 16 --seqlen 256 --seed 0 --eval wikitext2 --eval-seqlen 512 --max-windows 16 --out $OUT --quiet"
FISTA="--pruner-opt max_iter=30 --pruner-opt search_steps=8"
# the pruners and allocations at 50 % / 70 % and 2:4
$PY -m pruning sweep --pruners magnitude,wanda,sparsegpt --sparsities 0.5 --allocations uniform $COMMON
$PY -m pruning sweep --pruners wanda,sparsegpt --nm 2:4 $COMMON
$PY -m pruning sweep --pruners wanda,sparsegpt --sparsities 0.7 --allocations uniform,owl,alphapruning --lams 0.1,0.2,0.3 $COMMON
# masked gradient steps after the pruner, and SparseGPT with AlphaPruning
$PY -m pruning sweep --pruners wanda,sparsegpt --nm 2:4 --gd-steps 100 $COMMON
$PY -m pruning sweep --pruners sparsegpt --sparsities 0.5 --allocations alphapruning --lams 0.3 $COMMON
$PY -m pruning sweep --pruners fista --nm 2:4 $FISTA --pruner-opt fill=none $COMMON
$PY -m pruning sweep --pruners fista --nm 2:4 $FISTA --pruner-opt fill=dense $COMMON
$PY -m pruning sweep --pruners fista --sparsities 0.5,0.7 --allocations uniform,alphapruning --lams 0.3 $FISTA $COMMON
$PY -m pruning sweep --pruners prox24 --nm 2:4 --gd-steps 100 --pruner-opt growth=1.25 --pruner-opt dtype=float32 $COMMON
$PY -m pruning sweep --pruners sparsegpt,wanda --nm 2:4 --gd-steps 100 --gd-precondition $COMMON
