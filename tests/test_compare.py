"""``python -m pruning compare`` and the bad-input errors of the 2025 allocations on the command lines. compare's
bookkeeping holds for any weights: it runs on the 2-block random Llama (tests/conftest.py ``tiny_dir``)."""
from __future__ import annotations

import json

import pytest

from pruning.__main__ import main as pruning_main


def run_cli(argv, capsys):
    code = pruning_main(argv)
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_lm(tiny_dir):
    """The 2-block random Llama as a LoadedModel (compare leaves it dense)."""
    from spectra.models import load_model

    return load_model(str(tiny_dir))


@pytest.fixture()
def metrics_csv(tmp_path):
    import pandas as pd

    df = pd.DataFrame({"longname": [f"model.layers.{b}.mlp.up_proj" for b in range(3)], "rows": 8, "cols": 4,
                       "num_params": 32, "alpha": [2.0, 3.0, 4.0]})
    p = tmp_path / "m.csv"
    df.to_csv(p, index=False)
    return str(p)


def test_farms_allocation_without_alpha_farms_names_the_flag(metrics_csv, capsys):
    code, err = run_cli(["allocate", "--metrics", metrics_csv, "--method", "farms", "--sparsity", "0.5"], capsys)
    assert code == 2 and err.count("\n") == 1 and "alpha_farms" in err and "--farms" in err, err


def test_calibration_allocation_without_data_names_the_flag(metrics_csv, capsys):
    code, err = run_cli(["allocate", "--metrics", metrics_csv, "--method", "dlp", "--sparsity", "0.5"], capsys)
    assert code == 2 and err.count("\n") == 1 and "--outlier-ratios" in err and "calibration" in err, err


def test_compute_allocation_without_calibration_windows_is_one_line(builtin):
    from pruning.prune import compute_allocation
    from pruning.settings import PruneSettings

    with pytest.raises(ValueError, match=r"--allocation dlp\) needs calibration windows") as e:
        compute_allocation(builtin.model, PruneSettings.from_flat(allocation="dlp", sparsity=0.5))
    assert "\n" not in str(e.value)


def test_atp_beta_outside_its_bound_on_the_command_line(metrics_csv, capsys):
    code, err = run_cli(["allocate", "--metrics", metrics_csv, "--method", "atp", "--sparsity", "0.5",
                         "--atp-beta", "0.9"], capsys)
    assert code == 2 and err.count("\n") == 1 and "--atp-beta" in err and "outside [0, 0.5]" in err, err


def test_compare_bad_allocations_are_one_line(tmp_path, capsys):
    code, err = run_cli(["compare", "builtin", "--allocations", "uniform,nope", "--out", str(tmp_path / "c.json")],
                        capsys)
    assert code == 2 and err.count("\n") == 1 and "--allocations" in err and "nope" in err, err
    code, err = run_cli(["compare", "builtin", "--allocations", "erk", "--out", str(tmp_path / "c.json")], capsys)
    assert code == 2 and "nothing to tune" not in err and "no parameter to tune" in err, err
    code, err = run_cli(["compare", "builtin", "--tune-dataset", "wikitext2", "--out", str(tmp_path / "c.json")],
                        capsys)
    assert code == 2 and "never tune on the test set" in err, err


def test_compare_tunes_each_method_with_the_same_budget_and_resumes(tiny_lm, tmp_path, monkeypatch):
    from pruning.allocation import atp_bound
    from pruning.blocks import block_linears
    from pruning.compare import CompareSettings, compare
    from pruning.settings import CalibrationSettings
    from pruning.tune import TuneSettings

    monkeypatch.setenv("SPL_CACHE_DIR", str(tmp_path / "cache"))
    ts = TuneSettings(pruner="wanda", sparsity=0.6, candidates=3, calib=CalibrationSettings(nsamples=2, seqlen=64),
                      eval_seqlen=64, eval_windows=1)
    s = CompareSettings(allocations="uniform,atp,dlp", tune=ts)
    out = tmp_path / "cmp.json"
    res = compare(tiny_lm, s, str(out), log=lambda m: None)
    rows = {r["method"]: r for r in res["rows"]}
    assert list(rows) == ["uniform", "atp", "dlp"]
    bound = atp_bound(0.6, len(block_linears(tiny_lm.model)))  # ATP's bound on β for L blocks
    assert [c["value"] for c in rows["atp"]["candidates"]] == pytest.approx([0.0, bound / 2, bound], abs=1e-6)
    assert [c["value"] for c in rows["dlp"]["candidates"]] == [0.0, 0.15, 0.3]  # DLP α over its spec's [0, 0.3]
    for m in ("atp", "dlp"):  # the tuned value is the candidate with the lowest held-out perplexity
        best = min(rows[m]["candidates"], key=lambda c: c["ppl"])
        assert rows[m]["tuned_value"] == best["value"] and rows[m]["heldout_ppl_one_shot"] == best["ppl"]
        # β = 0 / α = 0 is uniform: its one-shot perplexity is the uniform row's
        assert rows[m]["candidates"][0]["ppl"] == pytest.approx(rows["uniform"]["heldout_ppl_one_shot"])
    saved = json.loads(out.read_text())
    assert saved["rows"] == json.loads(json.dumps(res["rows"])) and saved["versions"]
    logs = []
    compare(tiny_lm, s, str(out), log=logs.append)  # resumed: nothing recomputed
    assert sum("done already" in m for m in logs) == 3
    with pytest.raises(ValueError, match="other settings"):
        compare(tiny_lm, CompareSettings(allocations="uniform", tune=TuneSettings(sparsity=0.5)), str(out))


def test_candidates_equal_to_uniform_are_not_evaluated_again(tiny_lm, tmp_path, monkeypatch):
    """λ = 0 (β = 0, α = 0) allocates uniform sparsity: the tuner takes uniform's score instead of pruning and
    evaluating the same masks again, and compare takes the uniform row's final prune for a method tuned to it."""
    import pruning.compare as compare_mod
    from pruning.compare import CompareSettings, compare
    from pruning.settings import CalibrationSettings
    from pruning.tune import TuneSettings, _Scorer

    monkeypatch.setenv("SPL_CACHE_DIR", str(tmp_path / "cache"))
    scored, finals = [], []
    real_score, real_final = _Scorer.score, compare_mod.final_prune

    def score(self, sparsity, label):  # every non-uniform candidate loses, so the tuned value is β = 0
        scored.append(label)
        row = real_score(self, sparsity, label)
        return row if label["lam"] == "uniform" else {**row, "ppl": 1e9}

    monkeypatch.setattr(_Scorer, "score", score)
    monkeypatch.setattr(compare_mod, "final_prune", lambda *a, **k: finals.append(a[2]) or real_final(*a, **k))
    ts = TuneSettings(pruner="wanda", sparsity=0.6, candidates=3, calib=CalibrationSettings(nsamples=2, seqlen=64),
                      eval_seqlen=64, eval_windows=1)
    res = compare(tiny_lm, CompareSettings(allocations="uniform,atp", tune=ts, final=True, test_seqlen=64,
                                           test_windows=1), None, log=lambda m: None)
    uni, atp = res["rows"]
    assert [lab["lam"] for lab in scored] == ["uniform", pytest.approx(atp["candidates"][1]["value"]),
                                              pytest.approx(atp["candidates"][2]["value"])]  # β = 0 not scored
    assert atp["tuned_value"] == 0.0 and atp["candidates"][0]["ppl"] == uni["heldout_ppl_one_shot"]
    assert len(finals) == 1 and atp["final_same_as"] == "uniform"  # one sequential prune, the uniform row's
    assert (atp["test_ppl"], atp["heldout_ppl"]) == (uni["test_ppl"], uni["heldout_ppl"])
