"""Execute every notebook in quick mode (nbclient, kernel ``python3`` = this interpreter) in a temporary working
directory, then check its key numbers against independent computations and that its figures and tables exist.

The notebooks are stored as jupytext pairs (``notebooks/NN_name.py`` is the source, see docs/NOTEBOOKS.md); the
first test checks that each stored .ipynb has its .py's cells and no outputs. Each notebook runs unchanged except for
two cells added in memory: an ``injected-parameters`` cell right after the ``parameters`` cell (papermill convention)
and a final *probe* cell that prints the notebook's key variables as JSON.
"""
from __future__ import annotations

import json
import math
import os
import re
import time
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
PROBE = "__NOTEBOOK_PROBE__"
PLOTLY_MIME = "application/vnd.plotly.v1+json"
NOTEBOOKS = ["01_esd_and_heavy_tails.ipynb", "02_estimating_alpha.ipynb", "03_alpha_to_sparsity.ipynb",
             "04_pruning_tradeoffs.ipynb", "05_spectral_report.ipynb", "06_does_alpha_predict_sensitivity.ipynb",
             "07_seed_pruners.ipynb"]


class Run:
    """An executed notebook: the notebook node, the probe's JSON, its figures (plotly JSON) and the wall time."""

    def __init__(self, nb, probe: dict, seconds: float):
        self.nb = nb
        self.probe = probe
        self.seconds = seconds
        self.figures = [o["data"][PLOTLY_MIME] for c in nb.cells if c.cell_type == "code"
                        for o in c.get("outputs", []) if PLOTLY_MIME in o.get("data", {})]
        self.html_tables = [o["data"]["text/html"] for c in nb.cells if c.cell_type == "code"
                            for o in c.get("outputs", []) if "<table" in o.get("data", {}).get("text/html", "")]

    def titles(self) -> list[str]:
        out = []
        for f in self.figures:
            t = f.get("layout", {}).get("title")
            out.append((t.get("text", "") if isinstance(t, dict) else t) or "")
        return out


def execute(name: str, cwd: Path, params: dict | None = None, probe: str = "", timeout: int = 900) -> Run:
    nb = nbformat.read(NB_DIR / name, as_version=4)
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert code_cells and "parameters" in code_cells[0].metadata.get("tags", []), \
        f"{name}: the first code cell must be tagged 'parameters'"
    first = nb.cells.index(code_cells[0])
    if params:
        nb.cells.insert(first + 1, new_code_cell("\n".join(f"{k} = {v!r}" for k, v in params.items()),
                                                 metadata={"tags": ["injected-parameters"]}))
    if probe:
        nb.cells.append(new_code_cell("import json as _json\n" + probe +
                                      f"\nprint({PROBE!r} + _json.dumps(_probe, default=float))"))
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(cwd)}})
    # the kernel imports spectra / pruning from this checkout, not from wherever the package is installed
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    t0 = time.perf_counter()
    client.execute(env=env)
    seconds = time.perf_counter() - t0
    print(f"{name}: executed in {seconds:.1f} s")
    result: dict = {}
    if probe:
        text = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.get("output_type") == "stream")
        line = [ln for ln in text.splitlines() if ln.startswith(PROBE)]
        assert line, f"{name}: the probe printed nothing: {text[-500:]}"
        result = json.loads(line[-1][len(PROBE):])
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    return Run(nb, result, seconds)


def cells(nb) -> list[tuple[str, str, list]]:
    """(cell type, source, tags) of every cell: what a .py source and its .ipynb must share."""
    return [(c.cell_type, c.source, list(c.metadata.get("tags", []))) for c in nb.cells]


def test_notebooks_are_in_sync_with_their_sources_and_stored_without_outputs():
    """Every notebook is a jupytext pair: ``NN_name.py`` (percent format, the source) and ``NN_name.ipynb`` with the
    same cells, stored without outputs (``make notebooks-sync`` writes the .ipynb from the .py)."""
    import jupytext

    assert sorted(p.name for p in NB_DIR.glob("[0-9][0-9]_*.py")) == [n.replace(".ipynb", ".py") for n in NOTEBOOKS]
    assert sorted(p.name for p in NB_DIR.glob("*.ipynb")) == NOTEBOOKS
    for name in NOTEBOOKS:
        source = NB_DIR / name.replace(".ipynb", ".py")
        text = jupytext.read(source, fmt="py:percent")
        nb = nbformat.read(NB_DIR / name, as_version=4)
        nbformat.validate(nb)
        for pair in (text, nb):
            assert pair.metadata["jupytext"]["formats"] == "ipynb,py:percent", f"{name}: not paired"
            assert pair.metadata["kernelspec"]["name"] == "python3"
        for c in nb.cells:
            if c.cell_type == "code":
                assert c.outputs == [] and c.execution_count is None, f"{name} is stored with outputs"
        assert cells(nb) == cells(text), f"{name} is out of sync with {source.name}: run `make notebooks-sync`"
        params = nb.cells[[c.cell_type for c in nb.cells].index("code")]
        assert "parameters" in params.metadata["tags"]
        assert re.search(r"^QUICK = True\b", params.source, re.M) and re.search(r"^MODEL = None\b", params.source, re.M)
        # public API only: no private names of the project's packages
        for c in nb.cells:
            if c.cell_type == "code":
                assert not re.search(r"from (spectra|pruning)[\w.]* import [^\n]*\b_\w", c.source), name
                assert not re.search(r"\b(spectra|pruning)\.\w+\._\w", c.source), name


# ------------------------------------------------------------------------------------------------------ 01
NB01_PROBE = """
_probe = {"alpha_trained": fit_trained.alpha, "D": summary["D"].to_dict(), "sigma2": sigma2, "N": N, "M": M,
          "edges_table": edges.iloc[:, 0].tolist(), "ev_random_min": float(ev_random.min()),
          "ev_random_max": float(ev_random.max()), "n_spikes": N_SPIKES,
          "ev_spiked_top": ev_spiked[::-1][:N_SPIKES + 1].tolist(),
          "spiked_edge": mp_spiked.bulk_max, "num_spikes": summary["num_spikes"].to_dict(),
          "lambda_max": summary["lambda_max"].to_dict(), "mp_bulk_max": summary["mp_bulk_max"].to_dict(),
          "n_matrices": len(df), "matrix": MATRIX, "shuffled_sorted_equal": bool(
              (W_shuffled.flatten().sort().values == W.flatten().sort().values).all())}
"""


def test_nb01_esd_and_heavy_tails(tmp_path):
    run = execute("01_esd_and_heavy_tails.ipynb", tmp_path, probe=NB01_PROBE)
    p = run.probe
    assert p["matrix"] == "model.layers.15.mlp.down_proj" and p["n_matrices"] == 210
    assert 1.5 < p["alpha_trained"] < 8
    # Marchenko–Pastur edges by hand: N σ² (1 ± √(M/N))²
    q = p["M"] / p["N"]
    lo, hi = (p["N"] * p["sigma2"] * (1 - math.sqrt(q)) ** 2, p["N"] * p["sigma2"] * (1 + math.sqrt(q)) ** 2)
    assert p["edges_table"] == pytest.approx([lo, hi], rel=1e-12)
    assert p["ev_random_min"] == pytest.approx(lo, rel=0.10)
    assert p["ev_random_max"] == pytest.approx(hi, rel=0.10)
    # spikes: the planted ones leave the bulk, the next eigenvalue is at the bulk edge
    top = p["ev_spiked_top"]
    assert min(top[:-1]) > 1.5 * p["spiked_edge"]
    assert top[-1] == pytest.approx(p["spiked_edge"], rel=0.05)
    ns = p["num_spikes"]
    assert ns["random"] <= 1 and ns["trained, shuffled"] <= 2
    assert p["n_spikes"] <= ns[f"random + {p['n_spikes']} spikes"] <= p["n_spikes"] + 1
    assert ns["trained"] > 10 * max(ns["random"], 1)
    assert p["lambda_max"]["trained"] > 3 * p["mp_bulk_max"]["trained"]
    assert p["shuffled_sorted_equal"]  # shuffling keeps the weight values
    assert p["D"]["trained"] < 0.5 * p["D"]["random"]  # a power-law tail fits the trained matrix, not the random one
    titles = " | ".join(run.titles())
    for part in ("Marchenko–Pastur law", "spikes leave the bulk", "bulk + heavy tail", "Random vs trained",
                 "α of every matrix along depth"):
        assert part in titles
    random_fig = next(f for f in run.figures if "Random Gaussian" in str(f.get("layout", {}).get("title")))
    assert any("Marchenko–Pastur" in (t.get("name") or "") for t in random_fig["data"])
    assert len(run.html_tables) >= 3


# ------------------------------------------------------------------------------------------------------ 02
NB02_PROBE = """
_probe = {"hill": hill_check.to_dict(orient="list"), "evals": [float(v) for v in ev],
          "rule_fits": {r: {"alpha": f.alpha, "xmin": f.xmin} for r, f in fits.items()},
          "agreement_max": agreement_summary["max |difference|"].to_dict(), "n_compared": len(agreement),
          "alpha_ks": agreement["alpha ks"].tolist(),
          "sensitivity": sensitivity.to_dict(orient="records"),
          "df": df[["block", "alpha", "num_params"]].to_dict(orient="list"),
          "per_block": per_block.to_dict(orient="list")}
"""


def _hill(x: np.ndarray, xmin: float) -> float:
    t = x[x >= xmin]
    return 1 + t.size / float(np.sum(np.log(t / xmin)))


def test_nb02_estimating_alpha(tmp_path):
    run = execute("02_estimating_alpha.ipynb", tmp_path, probe=NB02_PROBE)
    p = run.probe
    hill = pd.DataFrame(p["hill"])
    # Pareto samples with α = 3: the estimate is within 4 standard errors (α−1)/√n, and 0.05 at n = 100k
    assert (np.abs(hill["error"]) < 4 * 2 / np.sqrt(hill["n"])).all()
    assert abs(hill["error"].iloc[-1]) < 0.05
    # the rule table: α is the Hill formula at the rule's xmin; median xmin and ks choice by brute force
    ev = np.sort(np.array(p["evals"]))
    x = ev[ev > 1e-5]            # weightwatcher's threshold (ks, peak, peak_ref)
    x_ap = ev[ev > 0]            # AlphaPruning's rules keep every positive eigenvalue (median, peak_ap)
    assert {"ks", "peak", "peak_ref", "median"} <= set(p["rule_fits"])
    for rule, fit in p["rule_fits"].items():
        xs = x_ap if rule in ("median", "peak_ap") else x
        assert fit["alpha"] == pytest.approx(_hill(xs, fit["xmin"]), rel=1e-10), rule
    assert p["rule_fits"]["median"]["xmin"] == x_ap[x_ap.size // 2]
    best = min(range(x.size - 1), key=lambda i: max(
        abs(1 - (x[i:] / x[i]) ** (1 - _hill(x, x[i])) - np.arange(x.size - i) / (x.size - i))))
    assert p["rule_fits"]["ks"]["xmin"] == x[best]
    # agreement with weightwatcher and powerlaw on the same eigenvalues: round-off only
    assert p["n_compared"] == 21
    for col, v in p["agreement_max"].items():
        assert v < 1e-8, col
    assert 1.0 < min(p["alpha_ks"])
    sens = {(r["rule A"], r["rule B"]): r for r in p["sensitivity"]}
    assert sens[("peak", "ks")]["Spearman ρ"] > 0.5
    # block aggregates equal an independent groupby
    d = pd.DataFrame(p["df"])
    d = d[np.isfinite(d["alpha"])]
    pb = pd.DataFrame(p["per_block"]).set_index("block")
    np.testing.assert_allclose(pb["alpha"], d.groupby("block")["alpha"].mean().reindex(pb.index), rtol=1e-12)
    wmean = d.groupby("block").apply(lambda g: np.average(g["alpha"], weights=g["num_params"]), include_groups=False)
    np.testing.assert_allclose(pb["alpha (param-weighted)"], wmean.reindex(pb.index), rtol=1e-12)
    titles = " | ".join(run.titles())
    for part in ("KS distance and α for every xmin candidate", "peak rule (x) against the other rules",
                 "Per-matrix α", "α by block and role"):
        assert part in titles
    assert len(run.figures) >= 5 and len(run.html_tables) >= 5


# ------------------------------------------------------------------------------------------------------ 03
NB03_PROBE = """
import torch as _torch
from spectra.weights import iter_model_weights as _imw
_thr = allocations["global"].attrs["allocation"]["threshold"]
_glob = {info.longname: [float((w.abs() < _thr).double().mean()), float((w.abs() <= _thr).double().mean())]
         for info, w in _imw(lm.model)
         if info.longname in ("model.layers.0.self_attn.q_proj", "model.layers.15.mlp.down_proj",
                              "model.layers.29.mlp.up_proj")}
_probe = {"S": SPARSITY, "lam": LAM, "lambdas": LAMBDAS,
          "alloc": {m: a[["longname", "block", "role", "num_params", "sparsity"]].to_dict(orient="list")
                    for m, a in allocations.items()},
          "notes": {m: a.attrs["allocation"].get("note", "") for m, a in allocations.items()},
          "df": df[["longname", "block", "alpha", "rows", "cols", "num_params"]].to_dict(orient="list"),
          "lam_table": lam_table[["lam", "min", "max", "weighted_mean"]].to_dict(orient="list"),
          "sweep0": sweep["λ=0"]["sparsity"].tolist(), "variants": variant_diff.to_dict(),
          "global_check": _glob, "calib_shape": list(calib.shape)}
"""


@pytest.mark.slow
def test_nb03_alpha_to_sparsity(tmp_path):
    run = execute("03_alpha_to_sparsity.ipynb", tmp_path, probe=NB03_PROBE)
    p = run.probe
    S, lam = p["S"], p["lam"]
    assert p["calib_shape"] == [8, 128]
    d = pd.DataFrame(p["df"])
    allocs = {m: pd.DataFrame(a) for m, a in p["alloc"].items()}
    from pruning.allocation import ALLOCATION_METHODS, get_allocation

    assert set(allocs) == {m for m in ALLOCATION_METHODS if get_allocation(m).reads != "table"
                           and not get_allocation(m).analysis}
    assert {"uniform", "alphapruning", "owl", "erk", "global", "lamp", "stable_rank", "atp", "dlp"} <= set(allocs)
    for m, a in allocs.items():
        assert list(a["longname"]) == list(d["longname"]), m
        assert np.average(a["sparsity"], weights=a["num_params"]) == pytest.approx(S, abs=1e-9), m
        assert a["sparsity"].between(0, 0.99 + 1e-12).all(), m
    assert (allocs["uniform"]["sparsity"] == S).all()
    # AlphaPruning by hand: block means of α → min-max map to [1-λ, 1+λ] → s = min(c·r, 0.99) with one scale c
    # (on this model the block with the largest mean α reaches the 0.99 cap at S = 0.7, λ = 0.3; the note says so)
    m = d.groupby("block")["alpha"].transform("mean").to_numpy()
    r = (m - m.min()) / (m.max() - m.min()) * 2 * lam + 1 - lam
    s_ap = allocs["alphapruning"]["sparsity"].to_numpy()
    free = s_ap < 0.99 - 1e-12
    c = s_ap[free] / r[free]
    np.testing.assert_allclose(c, c[0], rtol=1e-10)
    assert (c[0] * r[~free] >= 0.99 - 1e-12).all()
    assert ((~free).sum() > 0) == ("above max sparsity" in p["notes"]["alphapruning"])
    assert c[0] > S / np.average(r, weights=d["num_params"]) - 1e-12  # capping raised the others' scale
    assert np.argmax(m) in np.flatnonzero(~free) or free.all()
    # ERK by hand: density ∝ (rows + cols)/(rows·cols), mean density 1 − S (every density stays < 1 at S = 0.7)
    k = (d["rows"] + d["cols"]) / (d["rows"] * d["cols"])
    dens = k * (1 - S) * d["num_params"].sum() / np.dot(k, d["num_params"])
    assert dens.max() < 1
    np.testing.assert_allclose(allocs["erk"]["sparsity"], 1 - dens, rtol=1e-10)
    # OWL: per-block values, within a 2·0.08 range
    owl = allocs["owl"]
    assert owl.groupby("block")["sparsity"].nunique().max() == 1
    assert 0 < owl["sparsity"].max() - owl["sparsity"].min() <= 0.16 + 1e-12
    # global magnitude: each matrix's sparsity lies between the fractions of |w| < and ≤ the common threshold
    # (the dequantized GGUF weights repeat values; weights exactly at the threshold get a fractional share)
    glob = allocs["global"].set_index("longname")["sparsity"]
    for name, (below, at_or_below) in p["global_check"].items():
        assert below - 1e-12 <= glob[name] <= at_or_below + 1e-12, name
        assert at_or_below - below < 0.01, name
    assert len(p["global_check"]) == 3
    # λ sweep: λ = 0 is uniform, the range widens with λ, the mean stays S
    assert np.allclose(p["sweep0"], S, atol=1e-12)
    lt = pd.DataFrame(p["lam_table"])
    spread = (lt["max"] - lt["min"]).to_numpy()
    assert spread[0] < 1e-12 and (np.diff(spread) > 0).all()
    assert np.allclose(lt["weighted_mean"], S, atol=1e-9)
    assert p["variants"]["max |Δ| vs default"]["log, block"] > 0
    titles = " | ".join(run.titles())
    for part in ("block sparsity is linear", "sparsity range against λ", "AlphaPruning variants",
                 "every allocation method"):
        assert part in titles
    fig = next(f for f in run.figures if "every allocation method" in str(f["layout"].get("title")))
    assert {t["name"] for t in fig["data"]} == set(allocs)


# ------------------------------------------------------------------------------------------------------ 04
NB04_PROBE = """
_probe = {"source": table_source, "dense_ppl": dense_ppl,
          "pruned": pruned[["pruner", "allocation", "sparsity", "ppl", "target_sparsity", "achieved_sparsity",
                            "nwindows", "eval_seqlen"]].to_dict(orient="list"),
          "results": results.reset_index().to_dict(orient="list"), "n_rows": len(table)}
"""

NB04_DENSE_CHECK = """
import numpy as _np
import torch as _torch
from spectra.models import load_model as _lm
from pruning.evaluation.data import get_eval_tokens as _tok
_m = _lm(MODEL)
_ids = _tok(_m.tokenizer, "wikitext2").reshape(-1)[: MAX_WINDOWS * EVAL_SEQLEN].reshape(MAX_WINDOWS, EVAL_SEQLEN)
with _torch.no_grad():
    _loss = [float(_m.model(input_ids=w[None], labels=w[None]).loss) for w in _ids]   # HF's own shifted CE
_probe["dense_ppl_hf"] = float(_np.exp(_np.mean(_loss)))
"""


@pytest.mark.slow
def test_nb04_pruning_tradeoffs_runs_then_reads_the_table(tmp_path):
    out = tmp_path / "sweep.parquet"
    # quick mode on 2 evaluation windows of 64 tokens (the orderings below hold by factors of 2-60 at any size)
    run = execute("04_pruning_tradeoffs.ipynb", tmp_path, params={"SWEEP_OUT": str(out), "MAX_WINDOWS": 2,
                                                                  "EVAL_SEQLEN": 64},
                  probe=NB04_PROBE + NB04_DENSE_CHECK, timeout=1200)
    p = run.probe
    assert out.is_file() and p["source"].startswith("computed")
    assert p["n_rows"] == 1 + 2 * 2 * 2  # dense + pruners × allocations × sparsities
    # the dense perplexity equals exp(mean HF cross-entropy) over the same 2 windows of 64 tokens
    assert p["dense_ppl"] == pytest.approx(p["dense_ppl_hf"], rel=1e-4)
    pr = pd.DataFrame(p["pruned"])
    assert sorted(set(zip(pr["pruner"], pr["allocation"], pr["sparsity"]))) == sorted(
        (a, b, c) for a in ("magnitude", "wanda") for b in ("alphapruning", "uniform") for c in (0.5, 0.7))
    assert (pr["nwindows"] == 2).all() and (pr["eval_seqlen"] == 64).all()
    assert np.allclose(pr["target_sparsity"], pr["sparsity"], atol=1e-9)
    assert (np.abs(pr["achieved_sparsity"] - pr["target_sparsity"]) < 1e-4).all()
    assert (np.isfinite(pr["ppl"]) & (pr["ppl"] > p["dense_ppl"])).all()
    ppl = pr.set_index(["pruner", "allocation", "sparsity"])["ppl"]
    for pruner in ("magnitude", "wanda"):
        for alloc in ("uniform", "alphapruning"):
            assert ppl[(pruner, alloc, 0.7)] > ppl[(pruner, alloc, 0.5)]  # more sparsity, worse
    for alloc in ("uniform", "alphapruning"):
        for s in (0.5, 0.7):
            assert ppl[("wanda", alloc, s)] < ppl[("magnitude", alloc, s)]  # activation-aware beats magnitude
    fig = next(f for f in run.figures if "perplexity against sparsity" in str(f["layout"].get("title")))
    assert len(fig["data"]) == 4 and all(len(t["x"]) == 2 for t in fig["data"])

    # second run: read the table, compute nothing
    again = execute("04_pruning_tradeoffs.ipynb", tmp_path, params={"SWEEP_TABLE": str(out)}, probe=NB04_PROBE)
    assert again.probe["source"] == f"read from {out}"
    assert again.probe["results"] == p["results"] and again.probe["dense_ppl"] == p["dense_ppl"]
    assert again.seconds < run.seconds / 3


# ------------------------------------------------------------------------------------------------------ 05
NB05_PROBE = """
_probe = {"path": str(path), "title": TITLE, "alpha": df["alpha"].tolist(), "n": len(df),
          "n_figures": 3 + len(fig_other) + len(fig_esd) + 1, "summary_median": float(summary.loc["median α", "value"]),
          "flagged": len(flagged)}
"""


def test_nb05_spectral_report_html(tmp_path):
    target = tmp_path / "reports" / "report.html"
    run = execute("05_spectral_report.ipynb", tmp_path, params={"REPORT_PATH": str(target)}, probe=NB05_PROBE)
    p = run.probe
    assert Path(p["path"]) == target and target.is_file()
    html = target.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert f"<title>{p['title']}</title>" in html and p["title"] == "Spectral report: builtin:smollm2"
    for heading in ("Summary", "α across depth and roles", "Other spectral metrics along depth", "Example ESDs",
                    "Matrices to look at", "AlphaPruning allocation", "All matrices"):
        assert f"<h2>{heading}</h2>" in html, heading
    # self-contained: plotly.js embedded once, no external script, one graph div per figure
    assert html.count("<script type='text/javascript'>") == 1 and "<script src=" not in html
    assert html.count('class="plotly-graph-div"') == p["n_figures"] == 3 + 4 + 3 + 1
    # the per-matrix table has one row per matrix
    tail = html[html.index("<h3>Per-matrix metrics</h3>"):]
    table = tail[: tail.index("</table>")]
    assert table.count("<tr") == p["n"] + 1 == 211
    alpha = np.array(p["alpha"], dtype=float)
    assert p["summary_median"] == pytest.approx(np.median(alpha[np.isfinite(alpha)]), rel=1e-12)
    assert f"{p['flagged']} of {p['n']} matrices flagged." in html
    assert len(run.figures) == p["n_figures"]
