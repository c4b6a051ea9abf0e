#!/usr/bin/env bash
# The order the results of bench/RESULTS_sensitivity.md were produced in, as one job under the shared lock
# (run as: flock /tmp/heavy.lock nice -n 5 bash bench/sensitivity_queue.sh). builtin alone (8 windows) ran first,
# from bench/sensitivity_scans.sh. uniform and the tuned AlphaPruning (λ = 0.3) of the built-in model ran with these
# settings in bench/RESULTS_tune.md, so its comparison runs the sensitivity allocations' finals only.
set -uo pipefail
PY=${PY:-python}
scan() {  # MODEL MODE WINDOWS
  "$PY" -m pruning sensitivity "$1" --pruner wanda --sparsity 0.7 --mode "$2" --delta 0.05 --max-windows "$3" \
    --tune-seqlen 256 --nsamples 16 --seqlen 256 --quiet --out "bench/sensitivity/${1}_wanda70_${2}.parquet"
}
scan gemma3 alone 4
scan builtin marginal 8
"$PY" bench/sensitivity_compare.py builtin --windows 8 --finals sensitivity-alone,sensitivity-marginal
"$PY" bench/sensitivity_compare.py gemma3 --windows 4
"$PY" bench/bench_sensitivity.py --models builtin gemma3 --windows 2 --json bench/sensitivity/bench_cost.json
scan gemma3 marginal 4
