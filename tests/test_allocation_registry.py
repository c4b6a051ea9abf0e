"""The allocation registry: every method that existed before it gives bit-identical allocations (golden file written
by tests/data/make_golden_allocations.py from the code before the refactor), and the registry's contract."""
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


def test_golden_allocations_bit_identical(saved, builtin):
    from pruning.allocation import allocate
    from pruning.blocks import block_linears

    arrays, metrics, ratios, attrs = saved
    weights = {lin.longname: lin.get() for blk in block_linears(builtin.model) for lin in blk}
    n = 0
    for name, method, S, kw, needs in golden.cases():
        extra = {"weights": weights} if needs == "weights" else {"outlier_ratios": ratios[needs]} if needs else {}
        df = allocate(metrics, method, S, **kw, **extra)
        np.testing.assert_array_equal(df["sparsity"].to_numpy(), arrays[f"{name}__sparsity"], err_msg=name)
        np.testing.assert_array_equal(df["metric"].to_numpy(), arrays[f"{name}__metric"], err_msg=name)
        got = json.loads(json.dumps(df.attrs["allocation"], sort_keys=True, default=float))
        assert {k: got[k] for k in attrs[name]} == attrs[name], name
        n += 1
    assert n == 40


def test_owl_ratios_unchanged(saved, builtin):
    from pruning.allocation import owl_outlier_ratios
    from pruning.blocks import block_linears

    arrays, metrics, _, _ = saved
    weights = {lin.longname: lin.get() for blk in block_linears(builtin.model) for lin in blk}
    got = owl_outlier_ratios(weights, golden.input_norms(weights))
    np.testing.assert_array_equal([got[b] for b in sorted(got)], arrays["ratios_block"])
