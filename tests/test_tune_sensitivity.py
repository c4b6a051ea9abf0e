"""The measured allocation (``sensitivity``, a table of ``python -m pruning sensitivity``) in ``tune`` and ``compare``
(``--sensitivity-table``): its λ search equals scoring every candidate directly, compare's row equals tune's, the
resume key names the table, and the mistakes (no table, another model, another sparsity) are one line, before the
model loads where they can be. A 2-block random Llama (tests/conftest.py ``tiny_dir``) and tiny budgets."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from pruning.settings import CalibrationSettings

CAL = CalibrationSettings(nsamples=2, seqlen=32)


@pytest.fixture(scope="module")
def measured(tiny_dir, tmp_path_factory):
    """(the tiny model, its measured table at S = 0.5 with Wanda, the folder) with a cache of its own."""
    from pruning.sensitivity import SensitivitySettings, measure
    from spectra.models import load_model

    folder = tmp_path_factory.mktemp("sens")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPL_CACHE_DIR", str(folder / "cache"))
        lm = load_model(str(tiny_dir))
        path = folder / "sens.parquet"
        measure(lm, SensitivitySettings(pruner="wanda", sparsity=0.5, eval_windows=1, eval_seqlen=32, calib=CAL), path,
                log=lambda m: None, progress=False, with_signals=False)
        yield lm, path, folder


def _settings(path, **kw):
    from pruning.tune import TuneSettings

    base = dict(pruner="wanda", allocation="sensitivity", sparsity=0.6, candidates=3, calib=CAL, eval_seqlen=32,
                eval_windows=1, sensitivity_table=str(path))
    return TuneSettings(**{**base, **kw})


def _table(path, delta, meta):
    from pruning.sensitivity_table import write_table

    L = len(delta)
    df = pd.DataFrame({"unit": [f"block {b}" for b in range(L)], "block": range(L), "longname": [""] * L,
                       "delta_nll": delta})
    write_table(df, path, meta)
    return path


def test_tune_picks_the_lowest_of_the_candidates_scored_directly(measured, capsys, monkeypatch):
    from pruning.calib_stats import DenseWeights, dense_stats, prune_from_stats
    from pruning.evaluation.perplexity import perplexity
    from pruning.sensitivity import read_table
    from pruning.signals import sensitivity_allocation
    from pruning.tune import tune
    from spectra.weights import weight_table

    lm, path, folder = measured
    monkeypatch.setenv("SPL_CACHE_DIR", str(folder / "cache"))
    out = folder / "tune.json"
    res = tune(lm, _settings(path), str(out), log=lambda m: None)
    values = [r["lam"] for r in res["rows"]]
    assert values == [0.0, 0.25, 0.5]  # AlphaPruning's λ range [0, 0.5], 3 candidates
    # every candidate scored directly: the sensitivity allocation of the table, one-shot from the dense statistics
    table = read_table(path)
    stats = dense_stats(lm.model, lm.tokenizer, CAL)
    wt = weight_table(lm.model)
    wt = wt[wt["block"] >= 0].reset_index(drop=True)
    dense = DenseWeights(lm.model)
    direct = {}
    for lam in values:
        a = sensitivity_allocation(wt, table, 0.6, lam=lam)
        prune_from_stats(lm.model, stats, dict(zip(a["longname"], a["sparsity"].astype(float))), "wanda")
        direct[lam] = perplexity(lm.model, lm.tokenizer, "c4", seqlen=32, max_windows=1, progress=False).ppl
        dense.restore()
    assert [r["ppl"] for r in res["rows"]] == pytest.approx([direct[v] for v in values], rel=1e-9)
    assert len(set(direct.values())) == 3  # the candidates are different allocations
    assert res["best"]["lam"] == min(direct, key=direct.get) and res["best"]["param"] == "lam"
    assert direct[0.0] == pytest.approx(res["uniform"]["ppl"], rel=1e-9)  # λ = 0 is uniform
    # measured at S = 0.5, tuned at S = 0.6: a warning on stderr, kept in the JSON
    err = capsys.readouterr().err
    assert err.count("warning: ") == 1 and "S = 0.5" in err and "S = 0.6" in err, err
    assert res["warnings"] == [err.strip()[len("warning: "):]]
    # the resume key names the table: its path and the hash of its costs
    costs = sorted((str(b), float(d)) for b, d in zip(table["block"], table["delta_nll"]))
    key = json.loads(out.read_text())["key"]["sensitivity_table"]
    assert key == {"path": str(path.resolve()), "costs_sha256": hashlib.sha256(json.dumps(costs).encode()).hexdigest()}
    other = _table(folder / "other.parquet", np.asarray(table["delta_nll"])[::-1].copy(),
                   {"model": str(lm.source.label)})
    with pytest.raises(ValueError, match="other settings"):
        tune(lm, _settings(other), str(out), log=lambda m: None)


def test_compare_row_of_sensitivity_equals_tune(measured, monkeypatch):
    from pruning.compare import CompareSettings, compare
    from pruning.tune import tune

    lm, path, folder = measured
    monkeypatch.setenv("SPL_CACHE_DIR", str(folder / "cache"))
    ts = _settings(path, allocation="alphapruning")
    res = compare(lm, CompareSettings(allocations="uniform,alphapruning,sensitivity", tune=ts),
                  str(folder / "cmp.json"), log=lambda m: None)
    rows = {r["method"]: r for r in res["rows"]}
    alone = tune(lm, _settings(path), None, log=lambda m: None)
    row = rows["sensitivity"]
    assert row["data_driven"] and "data-driven" in row["label"]
    assert not rows["uniform"]["data_driven"] and not rows["alphapruning"]["data_driven"]
    assert (row["param"], row["tuned_value"]) == ("lam", alone["best"]["lam"])
    assert row["heldout_ppl_one_shot"] == pytest.approx(alone["best"]["ppl"], rel=1e-12)
    assert [(c["value"], c["ppl"]) for c in row["candidates"]] == \
        [(r["lam"], pytest.approx(r["ppl"], rel=1e-12)) for r in alone["rows"]]
    assert rows["uniform"]["heldout_ppl_one_shot"] == pytest.approx(alone["uniform"]["ppl"], rel=1e-12)
    assert res["key"]["sensitivity_table"]["path"] == str(path.resolve())


def test_a_table_of_other_weights_is_refused_in_one_line(measured, monkeypatch):
    from pruning.tune import tune

    lm, path, folder = measured
    monkeypatch.setenv("SPL_CACHE_DIR", str(folder / "cache"))
    meta = {"model": lm.source.label, "key": {"weights_sha256": "0" * 64, "pruner": "wanda", "sparsity": 0.6}}
    other = _table(folder / "other-weights.parquet", [0.1, 0.2], meta)
    with pytest.raises(ValueError, match="measured on another model") as e:
        tune(lm, _settings(other), None, log=lambda m: None)
    assert "\n" not in str(e.value) and "python -m pruning sensitivity" in str(e.value)


def test_settings_without_or_with_an_unused_table(tmp_path):
    from pruning.compare import CompareSettings
    from pruning.tune import TuneSettings

    with pytest.raises(ValueError, match="--sensitivity-table sens.parquet .*python -m pruning sensitivity"):
        TuneSettings(allocation="sensitivity")
    with pytest.raises(ValueError, match="--sensitivity-table sens.parquet .*python -m pruning sensitivity"):
        CompareSettings(allocations="uniform,sensitivity")
    table = _table(tmp_path / "t.parquet", [0.1] * 30, {"model": "builtin:smollm2"})
    with pytest.raises(ValueError, match="add sensitivity to --allocations"):
        CompareSettings(allocations="uniform,alphapruning", tune=TuneSettings(sensitivity_table=str(table)))
    unfinished = _table(tmp_path / "u.parquet", [0.1, float("nan")], {})
    with pytest.raises(ValueError, match="unfinished"):
        TuneSettings(allocation="sensitivity", sensitivity_table=str(unfinished))


@pytest.fixture()
def cli(monkeypatch, capsys):
    """``python -m pruning CMD ...`` with the model load recorded (and refused): (exit status, stderr, loaded?)."""
    import spectra.models

    loads = []

    def fake_load(model):
        loads.append(model)
        raise ValueError("the model would load now")

    monkeypatch.setattr(spectra.models, "load_model", fake_load)

    def run(*argv):
        from pruning.__main__ import main

        loads.clear()
        code = main(list(argv))
        return code, capsys.readouterr().err, bool(loads)

    return run


@pytest.mark.parametrize("cmd", [["compare", "builtin", "--allocations", "uniform,alphapruning,sensitivity"],
                                 ["tune", "builtin", "--allocation", "sensitivity"]])
def test_command_lines_refuse_before_the_model_loads(cli, tmp_path, cmd):
    out = ["--out", str(tmp_path / "o.json")]
    code, err, loaded = cli(*cmd, *out)  # no table
    assert code == 2 and err.count("\n") == 1 and not loaded, err
    assert "--sensitivity-table" in err and "python -m pruning sensitivity MODEL --out sens.parquet" in err, err
    code, err, loaded = cli(*cmd, "--sensitivity-table", str(tmp_path / "none.parquet"), *out)
    assert code == 2 and err.count("\n") == 1 and "not found" in err and not loaded, err
    gemma = _table(tmp_path / "g.parquet", [0.1] * 18, {"model": "builtin:gemma3",
                                                         "key": {"pruner": "wanda", "sparsity": 0.7}})
    code, err, loaded = cli(*cmd, "--sensitivity-table", str(gemma), *out)
    assert code == 2 and err.count("\n") == 1 and not loaded, err
    assert "measured on builtin:gemma3, not on builtin:smollm2" in err, err
    mine = _table(tmp_path / "s.parquet", [0.1] * 30, {"model": "builtin:smollm2"})
    code, err, loaded = cli(*cmd, "--sensitivity-table", str(mine), *out)
    assert loaded and "the model would load now" in err  # every check passed: the model loads next


def test_tune_refuses_a_table_for_another_allocation(cli, tmp_path):
    mine = _table(tmp_path / "s.parquet", [0.1] * 30, {"model": "builtin:smollm2"})
    code, err, loaded = cli("tune", "builtin", "--allocation", "alphapruning", "--sensitivity-table", str(mine),
                            "--out", str(tmp_path / "o.json"))
    assert code == 2 and "read by --allocation sensitivity only" in err and not loaded, err
