#!/bin/bash
# Issue 19's closing-note table: uniform, AlphaPruning, FARMS, OWL, DLP and ATP at 70 % unstructured with Wanda on
# both built-in models. Each method's first tunable parameter (allocation registry) is searched with the same
# budget (--candidates evenly spaced over its spec's range; OWL's M stays 5) on 32 × 256 held-out C4 validation
# windows (documents 1000–1999), one-shot from the dense statistics of 16 × 256 C4 calibration tokens (seed 0);
# then --final prunes each method sequentially at its tuned value and scores the same held-out windows and the first
# 64 × 512 WikiText-2 test windows (never used to choose anything). Resumable: the JSON is rewritten after every
# method and a rerun keeps the finished rows. Print the table with: python bench/allocations_report.py FILES
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
PY=${PY:-/work/main/.venv/bin/python}
OUT=${OUT:-bench/results_allocations}
mkdir -p "$OUT"
C="--allocations uniform,alphapruning,farms,owl,dlp,atp --sparsity 0.7 --candidates ${CANDIDATES:-4} --nsamples 16 --seqlen 256 \
--max-windows 32 --final --eval-seqlen 512 --eval-windows 64"
# one hold of the shared lock for the whole table (the heavy queue is long); Gemma-3 first (the model in question)
flock /tmp/heavy.lock nice -n 5 bash -c '
for model in '"${MODELS:-gemma3 builtin}"'; do
  for pruner in '"${PRUNERS:-wanda}"'; do
    '"$PY"' -m pruning compare "$model" --pruner "$pruner" '"$C"' --out "'"$OUT"'/compare_${model}_${pruner}_70.json"
  done
done'
