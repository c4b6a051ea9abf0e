"""spectra.analyze vs weightwatcher.analyze() on the built-in model's 210 block matrices.

* ``ks`` rule vs weightwatcher's default fit (``WWFit``, eigenvalues ≤ 1e-5 dropped);
* ``peak_ref`` rule vs ``fix_fingers='xmin_peak', pl_package='powerlaw'``.

``alpha``, ``xmin`` and ``D`` must agree to 1e-6 relative for ≥ 99% of the matrices; every disagreement must be a
near-tie of D between the two xmin candidates (checked on our eigenvalues). The norm metrics must agree for all.
"""
from __future__ import annotations

import io
import logging
import warnings
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pandas as pd
import pytest

from spectra.analyze import analyze
from spectra.hill import candidate_fits

ww = pytest.importorskip("weightwatcher")
# one pytest-xdist worker runs the whole module (`make test`), so that its fixtures (two weightwatcher and two spectra
# analyses of the model, minutes on one thread) are computed once instead of once per worker
pytestmark = pytest.mark.xdist_group("vs_weightwatcher")
RTOL = 1e-6
NORM_COLUMNS = ["lambda_max", "spectral_norm", "norm", "log_norm", "log_spectral_norm", "stable_rank", "entropy",
                "num_pl_spikes", "sigma", "alpha_weighted", "log_alpha_norm"]


def _ww_analyze(model, **kwargs) -> pd.DataFrame:
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    watcher = ww.WeightWatcher(model=model.model.layers)  # the 30 blocks only: exactly the 210 block matrices
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df = watcher.analyze(**kwargs)
    return df.assign(longname="model.layers." + df["longname"])


@pytest.fixture(scope="module")
def ww_frames(builtin):
    return {"ks": _ww_analyze(builtin.model),
            "peak_ref": _ww_analyze(builtin.model, fix_fingers="xmin_peak", pl_package="powerlaw")}


@pytest.fixture(scope="module")
def ours():
    return {rule: analyze(None, xmin_rule=rule, keep_eigs=True, progress=False, cache=False)
            for rule in ("ks", "peak_ref")}


def _near_tie(evals: np.ndarray, xmin_a: float, xmin_b: float, thresh: float = 1e-5, tol: float = 1e-9) -> bool:
    """Whether the KS distances at the two candidate xmins differ by less than ``tol`` (a near-tie)."""
    x = np.sort(evals[evals > thresh])
    idx = np.searchsorted(x, [xmin_a, xmin_b])
    _, D = candidate_fits(x, idx)
    return abs(D[0] - D[1]) < tol


@pytest.mark.parametrize("rule", ["ks", "peak_ref"])
def test_alpha_xmin_D_equal_weightwatcher(rule, ours, ww_frames):
    df, ref = ours[rule], ww_frames[rule]
    assert len(df) == 210 and len(ref) == 210
    m = df.merge(ref, on="longname", suffixes=("", "_ww"), validate="one_to_one")
    assert len(m) == 210  # the same matrices, matched by name
    close = np.ones(len(m), dtype=bool)
    for col in ("alpha", "xmin", "D"):
        close &= np.isclose(m[col], m[col + "_ww"].astype(float), rtol=RTOL, atol=0)
    assert close.mean() >= 0.99, f"{(~close).sum()} matrices differ"
    for r in m[~close].itertuples():  # every exception must be a near-tie between the two xmin candidates
        assert _near_tie(r.evals, r.xmin, r.xmin_ww), f"{r.longname}: alpha {r.alpha} vs {r.alpha_ww}, not a tie"
    # weightwatcher's own thresholds give the same status reading where it has one
    assert ((m["alpha"] > 6) == (m["warning_ww"] == "under-trained")).all()
    assert ((m["alpha"] < 2) == (m["warning_ww"] == "over-trained")).all()


def test_norm_metrics_equal_weightwatcher(ours, ww_frames):
    m = ours["ks"].merge(ww_frames["ks"], on="longname", suffixes=("", "_ww"))
    for col in NORM_COLUMNS:
        np.testing.assert_allclose(m[col].astype(float), m[col + "_ww"].astype(float), rtol=1e-9, err_msg=col)
    assert (m["xmax"] == m["lambda_max"]).all()
    np.testing.assert_allclose(m["xmax"], m["xmax_ww"].astype(float), rtol=1e-9)  # ww's default xmax = λ_max
    assert (m["num_evals"] == m["num_evals_ww"]).all() and (m["M"] == m["M_ww"]).all()
