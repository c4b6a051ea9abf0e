"""Notebook 06 (does α predict which blocks matter?) in quick mode: its table, verdict and one-shot comparison
against the library called directly (the runner is tests/test_notebooks.py's)."""
from __future__ import annotations

import numpy as np
import pytest
from test_notebooks import execute

NB06_PROBE = """
_t = tables["builtin", "alone"]
_probe = {"delta": _t["delta_nll"].tolist(), "nll": _t["nll"].tolist(), "alpha": _t["alpha"].tolist(),
          "ref": _t.attrs["sensitivity"]["reference_nll"], "rho": verdict_table.set_index("signal")["rho"].to_dict(),
          "tau": verdict_table.set_index("signal")["tau"].to_dict(),
          "one_shot": one_shot.set_index("allocation")["held-out ppl (one-shot)"].to_dict()}
"""


def test_nb06_measures_the_blocks_and_gives_the_verdict(tmp_path):
    from scipy.stats import kendalltau, spearmanr

    from pruning.evaluation.perplexity import perplexity
    from spectra.models import load_model

    run = execute("06_does_alpha_predict_sensitivity.ipynb", tmp_path, probe=NB06_PROBE, timeout=1500)
    p = run.probe
    delta, alpha = np.array(p["delta"]), np.array(p["alpha"])
    assert len(delta) == 30 and np.isfinite(delta).all()
    np.testing.assert_allclose(delta, np.array(p["nll"]) - p["ref"], atol=1e-12)
    # the reference is the dense model's held-out NLL (quick mode: 2 C4 windows of 32 tokens)
    lm = load_model()
    assert p["ref"] == pytest.approx(perplexity(lm.model, lm.tokenizer, "c4", seqlen=32, max_windows=2,
                                                progress=False).nll, abs=1e-9)
    assert p["rho"]["alpha"] == pytest.approx(spearmanr(alpha, delta)[0], abs=1e-12)
    assert p["tau"]["alpha"] == pytest.approx(kendalltau(alpha, delta)[0], abs=1e-12)
    assert set(p["one_shot"]) == {"uniform", "alphapruning", "sensitivity (alone)"}
    # figures: one cost-bars figure and one scatter per table
    titles = run.titles()
    assert any("builtin: wanda 70%, alone" in t for t in titles)
    assert any(t.startswith("α (PL_Alpha_Hill") and f"ρ = {p['rho']['alpha']:+.2f}" in t for t in titles)
    assert any("<table" in h for h in run.html_tables)
    assert all(v > 1 for v in p["one_shot"].values())
