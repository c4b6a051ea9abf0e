"""Streamlit AppTest of the "Which blocks matter" page: the run started from the page gives the library's numbers,
the bars, verdict and scatter show them, and a measured table opens from a file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from app_helpers import figure, no_failure, open_local, trace
from tiny_models import save_deeper

from pruning.signals import verdict

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
PAGE = "webapp/sensitivity.py"


@pytest.fixture(scope="module")
def tiny6_dir(tiny_dir, tmp_path_factory):
    """A 6-block random Llama (tests/tiny_models.py): enough blocks for the verdict's rank correlations."""
    return save_deeper(tiny_dir, 6, tmp_path_factory.mktemp("tiny6") / "tiny-llama-6")


@pytest.fixture()
def page(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=600)
    at.run()
    no_failure(at)
    at.switch_page(PAGE).run()
    no_failure(at)
    return at


def test_page_is_registered():
    from webapp.state import VIEW_PAGES

    assert VIEW_PAGES["Which blocks matter"] == PAGE


def test_measure_from_the_page_equals_the_library(page, tiny6_dir):
    from pruning.sensitivity import SensitivitySettings, measure
    from pruning.settings import CalibrationSettings
    from spectra.models import load_model
    from webapp import cache

    # on the 6-block random Llama opened from the sidebar (the page's path is the built-in model's; the library's
    # walk is checked against full evaluations in tests/test_sensitivity.py); the tokens per window come from
    # Prune & evaluate's setting (64 here instead of the default 256)
    open_local(page, tiny6_dir)
    page.switch_page("webapp/prune_evaluate.py").run()
    page.number_input(key="pr_seqlen").set_value(64).run()
    page.switch_page(PAGE).run()
    page.number_input(key="se_nsamples").set_value(2).run()
    page.number_input(key="se_windows").set_value(1).run()
    page.button(key="se_run").click().run()
    no_failure(page)
    df = page.session_state["se_result"]
    seqlen = int(page.session_state["pr_seqlen"])
    assert seqlen == 64 and df.attrs["sensitivity"]["key"]["eval_seqlen"] == 64
    assert len(df) == 6 and np.abs(df["delta_nll"]).min() > 1e-3  # every block, costs far above the tolerance
    want = measure(load_model(str(tiny6_dir)), SensitivitySettings(sparsity=0.7, eval_windows=1, eval_seqlen=seqlen,
                                                calib=CalibrationSettings(nsamples=2, seqlen=seqlen,
                                                                          seed=cache.CALIB_SEED)),
                   None, log=lambda m: None, progress=False, with_signals=False)
    np.testing.assert_allclose(df["delta_nll"], want["delta_nll"], atol=1e-9)
    bars = trace(figure(page, "se_bars"), "measured Δ NLL")
    np.testing.assert_allclose(np.asarray(bars["y"], float), df["delta_nll"])
    v = verdict(df, permutations=10000, seed=0).set_index("signal")
    shown = page.session_state["se_pick"]
    title = figure(page, "se_scatter")["layout"]["title"]["text"]
    assert f"ρ = {v.loc[shown, 'rho']:+.2f}" in title and f"τ = {v.loc[shown, 'tau']:+.2f}" in title


def test_a_measured_table_opens_from_a_file(page, tmp_path):
    from pruning.sensitivity import write_table

    L = 30
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"unit": [f"block {b}" for b in range(L)], "block": range(L), "longname": [""] * L,
                       "delta_nll": rng.random(L), "alpha": rng.random(L) + 2, "depth": range(L)})
    path = tmp_path / "sens.parquet"
    write_table(df, path, {"label": "test", "reference_ppl": 10.0, "permutations": 500, "seed": 1})
    page.text_input(key="se_path").input(str(path)).run()
    page.button(key="se_open").click().run()
    no_failure(page)
    fig = figure(page, "se_bars")
    np.testing.assert_allclose(np.asarray(trace(fig, "measured Δ NLL")["y"], float), df["delta_nll"])
    alpha = np.asarray(trace(fig, "α (PL_Alpha_Hill, block mean) (normalised)")["y"], float)
    np.testing.assert_allclose(alpha, (df["alpha"] - df["alpha"].min()) / np.ptp(df["alpha"]))
    page.text_input(key="se_path").input(str(tmp_path / "missing.parquet")).run()
    page.button(key="se_open").click().run()
    assert page.error and "missing.parquet" in page.error[0].value
