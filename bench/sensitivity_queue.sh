#!/usr/bin/env bash
# The order the results of bench/RESULTS_sensitivity.md were produced in (each step under the shared lock).
set -uo pipefail
PY=${PY:-python}
scan() {  # MODEL MODE WINDOWS
  flock /tmp/heavy.lock nice -n 5 "$PY" -m pruning sensitivity "$1" --pruner wanda --sparsity 0.7 --mode "$2" \
    --delta 0.05 --max-windows "$3" --tune-seqlen 256 --nsamples 16 --seqlen 256 --quiet \
    --out "bench/sensitivity/${1}_wanda70_${2}.parquet"
}
# scan builtin alone 8   (run first by bench/sensitivity_scans.sh)
scan builtin marginal 8
flock /tmp/heavy.lock nice -n 5 "$PY" bench/sensitivity_compare.py builtin --windows 8
scan gemma3 alone 4
scan gemma3 marginal 4
flock /tmp/heavy.lock nice -n 5 "$PY" bench/sensitivity_compare.py gemma3 --windows 4
