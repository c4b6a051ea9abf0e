"""The allocation registry: every method that existed before it gives the allocations of the code before it (golden
file written by tests/data/make_golden_allocations.py from that code; bit-identical on the CPU that wrote it, to
1e-14 relative on others), and the registry's contract."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

DATA = Path(__file__).parent / "data"
sys.path.insert(0, str(DATA))
import make_golden_allocations as golden  # noqa: E402


@pytest.fixture(scope="module")
def saved():
    z = np.load(DATA / "golden_allocations.npz", allow_pickle=False)
    arrays = {k: z[k] for k in z.files}
    metrics = pd.DataFrame({c: arrays[f"metrics_{c}"] for c in golden.METRIC_COLS})
    for c in ("rows", "cols", "num_params", "block"):
        metrics[c] = metrics[c].astype("int64")
    ratios = {"ratios_block": {i: float(v) for i, v in enumerate(arrays["ratios_block"])},
              "ratios_matrix": dict(zip(metrics["longname"], map(float, arrays["ratios_matrix"])))}
    return arrays, metrics, ratios, json.loads(str(arrays["attrs_json"]))


def test_golden_allocations_match_the_code_before_the_registry(saved, builtin):
    from pruning.allocation import allocate
    from pruning.blocks import block_linears

    arrays, metrics, ratios, attrs = saved
    weights = {lin.longname: lin.get() for blk in block_linears(builtin.model) for lin in blk}
    n = 0
    for name, method, S, kw, needs in golden.cases():
        extra = {"weights": weights} if needs == "weights" else {"outlier_ratios": ratios[needs]} if needs else {}
        df = allocate(metrics, method, S, **kw, **extra)
        # equal to the last bits: numpy's SIMD reductions (sums over the matrices) round differently on different
        # CPUs (the file was written on another host; up to 3 ulp apart on an AVX-512 EPYC)
        for col in ("sparsity", "metric"):
            np.testing.assert_allclose(df[col].to_numpy(), arrays[f"{name}__{col}"], rtol=1e-14, atol=0,
                                       err_msg=name)
        got = json.loads(json.dumps(df.attrs["allocation"], sort_keys=True, default=float))
        for k, want in attrs[name].items():  # floats (mean sparsity, ...) as above
            assert got[k] == (pytest.approx(want, rel=1e-14, abs=0) if isinstance(want, float) else want), (name, k)
        n += 1
    assert n == 40


def test_owl_ratios_unchanged(saved, builtin):
    from pruning.allocation import owl_outlier_ratios
    from pruning.blocks import block_linears

    arrays, metrics, _, _ = saved
    weights = {lin.longname: lin.get() for blk in block_linears(builtin.model) for lin in blk}
    got = owl_outlier_ratios(weights, golden.input_norms(weights))
    np.testing.assert_array_equal([got[b] for b in sorted(got)], arrays["ratios_block"])
