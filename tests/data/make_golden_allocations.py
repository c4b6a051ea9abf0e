"""Writes tests/data/golden_allocations.npz: the allocations of every method that existed before the allocation
registry (commit b8bbc25), for tests/test_allocation_registry.py to check bit-identical equality after the refactor.

Inputs saved with the outputs: the built-in model's metrics (``spectra.analyze.analyze('builtin')``, the columns the
methods read) and OWL's per-block / per-matrix outlier ratios computed from the built-in model's weights and
deterministic input norms (seeded RNG, ``x_j² ~ Exp(1)·(1 + 10·[j % 37 == 0])``: a few outlier features).
global / LAMP read the built-in model's weights themselves (loaded by the test).

    PYTHONPATH=$PWD python tests/data/make_golden_allocations.py
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

CASES_S = (0.5, 0.7)
CASES_LAM = (0.1, 0.3)
METRIC_COLS = ["longname", "rows", "cols", "num_params", "block", "role", "alpha", "stable_rank", "xmin_rule"]


def input_norms(weights: dict) -> dict:
    rng = np.random.default_rng(0)
    out = {}
    for name, W in weights.items():
        n = W.shape[1]
        out[name] = rng.exponential(1.0, n) * (1.0 + 10.0 * (np.arange(n) % 37 == 0))
    return out


def cases():
    """(case name, method, S, kwargs without weights/outlier_ratios, needs) for every golden case."""
    for S in CASES_S:
        yield f"uniform_S{S}", "uniform", S, {}, None
        yield f"erk_S{S}", "erk", S, {}, None
        for m in ("global", "lamp"):
            yield f"{m}_S{S}", m, S, {}, "weights"
        for lam in CASES_LAM:
            yield f"alphapruning_S{S}_lam{lam}", "alphapruning", S, {"lam": lam}, None
            yield f"alphapruning_matrix_S{S}_lam{lam}", "alphapruning", S, {"lam": lam, "granularity": "matrix"}, None
            yield f"alphapruning_log_S{S}_lam{lam}", "alphapruning", S, {"lam": lam, "mapping": "log"}, None
            yield f"alphapruning_noclip_S{S}_lam{lam}", "alphapruning", S, {"lam": lam, "clip": False}, None
            yield f"alphapruning_flagged_S{S}_lam{lam}", "alphapruning", S, {"lam": lam, "exclude_flagged": True}, None
            yield f"stable_rank_S{S}_lam{lam}", "stable_rank", S, {"lam": lam}, None
            yield f"owl_S{S}_lam{lam}", "owl", S, {"owl_lambda": lam / 2}, "ratios_block"
            yield f"owl_matrix_S{S}_lam{lam}", "owl", S, {"owl_lambda": lam / 2,
                                                          "granularity": "matrix"}, "ratios_matrix"


def main() -> None:
    from pruning.allocation import allocate, owl_outlier_ratios
    from pruning.blocks import block_linears
    from spectra.analyze import analyze
    from spectra.models import load_model

    metrics = analyze("builtin", progress=False)[METRIC_COLS]
    lm = load_model("builtin")
    weights = {lin.longname: lin.get().detach() for blk in block_linears(lm.model) for lin in blk}
    norms = input_norms(weights)
    ratios = {"ratios_block": owl_outlier_ratios(weights, norms),
              "ratios_matrix": owl_outlier_ratios(weights, norms, granularity="matrix")}
    arrays = {f"metrics_{c}": metrics[c].to_numpy() for c in METRIC_COLS}
    arrays["ratios_block"] = np.array([ratios["ratios_block"][b] for b in sorted(ratios["ratios_block"])])
    arrays["ratios_matrix"] = np.array([ratios["ratios_matrix"][n] for n in metrics["longname"]])
    attrs = {}
    for name, method, S, kw, needs in cases():
        extra = {"weights": weights} if needs == "weights" else {"outlier_ratios": ratios[needs]} if needs else {}
        df = allocate(metrics, method, S, **kw, **extra)
        arrays[f"{name}__sparsity"] = df["sparsity"].to_numpy()
        arrays[f"{name}__metric"] = df["metric"].to_numpy()
        attrs[name] = df.attrs["allocation"]
    arrays["attrs_json"] = np.array(json.dumps(attrs, sort_keys=True, default=float))
    out = Path(__file__).with_name("golden_allocations.npz")
    np.savez_compressed(out, **{k: (v.astype(str) if v.dtype == object else v) for k, v in arrays.items()})
    print(f"wrote {out} ({out.stat().st_size} bytes, {len(attrs)} cases)")


if __name__ == "__main__":
    main()
