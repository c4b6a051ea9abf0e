"""`python -m pruning prune` end to end on the built-in model, and its one-line errors."""
import json

import pytest

from pruning.__main__ import main
from pruning.pruners.masks import is_nm
from pruning.report import read_report

SMALL = ["--nsamples", "4", "--seqlen", "128", "--eval-seqlen", "128", "--max-windows", "2", "--quiet"]


def _run(argv, capsys):
    rc = main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


@pytest.fixture(scope="module")
def wanda_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("prune") / "wanda50"
    rc = main(["prune", "--pruner", "wanda", "--sparsity", "0.5", "--eval", "wikitext2", "--out", str(out), *SMALL])
    assert rc == 0
    return out, read_report(out / "report.json")


def test_report_contents(wanda_run):
    out, rep = wanda_run
    s = rep["runs"][0]
    assert (s["pruner"], s["allocation"], s["sparsity"], s["nsamples"], s["seqlen"], s["seed"]) == \
        ("wanda", "uniform", 0.5, 4, 128, 0)
    assert rep["calibration"]["shape"] == [4, 128]
    assert rep["model"]["source"] == "builtin:smollm2" and len(rep["model"]["weights_sha256"]) == 64
    assert {"torch", "transformers", "numpy", "python"} <= set(json.loads(s["versions"]))
    layers = rep["layers"]
    assert len(layers) == 210 and {l["role"] for l in layers} == {"q", "k", "v", "o", "gate", "up", "down"}
    for l in layers:
        assert l["target"] == 0.5 and abs(l["achieved"] - 0.5) <= 0.5 / l["num_params"]
    dense, pruned = rep["perplexity"]["dense"]["wikitext2"], rep["perplexity"]["pruned"]["wikitext2"]
    assert dense["nwindows"] == pruned["nwindows"] == 2 and dense["seqlen"] == 128
    assert 1.0 < dense["ppl"] < pruned["ppl"] < 1e4  # 50 % pruning hurts but does not destroy the model
    # (report.json keeps rss_before_mb to 0.1 MB: a run that does not raise the peak can sit 0.05 MB under it)
    assert rep["timings_s"]["total"] > 0 and s["peak_rss_mb"] >= rep["rss_before_mb"] - 0.05 > 0
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()


def test_saved_model_reloads_with_the_reported_sparsity_and_perplexity(wanda_run):
    from pruning.evaluation.perplexity import perplexity
    from spectra.models import load_model
    from spectra.weights import iter_model_weights

    out, rep = wanda_run
    lm = load_model(str(out))
    achieved = {l["longname"]: l["achieved"] for l in rep["layers"]}
    seen = 0
    for info, W in iter_model_weights(lm.model):
        if info.block >= 0:
            assert float((W == 0).float().mean()) == pytest.approx(achieved[info.longname], abs=1e-9)
            seen += 1
    assert seen == 210
    r = perplexity(lm.model, lm.tokenizer, "wikitext2", seqlen=128, max_windows=2, progress=False)
    assert r.ppl == pytest.approx(rep["perplexity"]["pruned"]["wikitext2"]["ppl"], rel=1e-4)


def test_existing_out_is_never_overwritten(wanda_run, capsys):
    out, _ = wanda_run
    before = (out / "report.json").read_text()
    rc, _, err = _run(["prune", "--pruner", "magnitude", "--out", str(out), "--eval", "none", *SMALL], capsys)
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1 and "--overwrite" in err
    assert (out / "report.json").read_text() == before


def test_nm_magnitude_without_calibration_overwrite(tmp_path, capsys):
    from spectra.models import load_model
    from spectra.weights import iter_model_weights

    out = tmp_path / "m24"
    out.mkdir()
    (out / "report.json").write_text("{}")  # a previous output: replaced only with --overwrite
    rc, stdout, err = _run(["prune", "--pruner", "magnitude", "--nm", "2:4", "--eval", "none", "--overwrite",
                            "--out", str(out), *SMALL], capsys)
    assert rc == 0, err
    rep = json.loads((out / "report.json").read_text())
    assert rep["calibration"]["shape"] is None and rep["runs"][0]["nm"] == "2:4"
    lm = load_model(str(out))
    for info, W in iter_model_weights(lm.model):
        if info.block >= 0:
            assert is_nm(W, 2, 4)


@pytest.mark.parametrize("argv,needle", [
    (["--sparsity", "1.0"], "outside [0, 1)"),
    (["--sparsity", "-0.1"], "outside [0, 1)"),
    (["--sparsity", "half"], "--sparsity must be a number"),
    (["--nm", "4:4"], "0 < N < M"),
    (["--nm", "2-4"], "write it as N:M"),
    (["--nm", "2:4", "--allocation", "alphapruning"], "needs allocation 'uniform'"),
    (["--pruner", "obd"], "unknown pruner 'obd'"),
    (["--pruner", "prox24", "--sparsity", "0.5"], "2:4 sparsity only"),
    (["--allocation", "alpha"], "unknown allocation 'alpha'"),
    (["--eval", "wikitext103"], "unknown dataset"),
    (["--nsamples", "0"], "--nsamples must be"),
    (["--correction", "inter"], "unknown correction"),
    (["--allocation-file", "/nonexistent/alloc.json"], "not found"),
    (["--pruner", "wanda", "--pruner-opt", "max_iter=30"], "has no option(s) max_iter"),
    (["--pruner", "fista", "--pruner-opt", "max_iters=30"], "its options: warm_start"),
    (["--pruner", "fista", "--pruner-opt", "max_iter"], "takes KEY=VALUE"),
])
def test_bad_input_is_one_error_line(argv, needle, tmp_path, capsys):
    rc, _, err = _run(["prune", "--out", str(tmp_path / "x"), *SMALL, *argv], capsys)
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert needle in err
    assert not (tmp_path / "x").exists()


def test_missing_data_is_one_error_line(tmp_path, capsys):
    empty = tmp_path / "nodata"
    empty.mkdir()
    rc, _, err = _run(["prune", "--out", str(tmp_path / "x"), "--data-dir", str(empty), *SMALL], capsys)
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1 and "not found" in err


def test_pruner_options_are_parsed_typed_and_reach_the_settings():
    import argparse

    import torch

    from pruning.cli.prune import add_common_arguments, parse_pruner_options, settings_from_args

    assert parse_pruner_options(["max_iter=30", "tol=1e-4", "restart=true", "warm-start=sparsegpt",
                                 "dtype=float64"]) == {"max_iter": 30, "tol": 1e-4, "restart": True,
                                                       "warm_start": "sparsegpt", "dtype": torch.float64}
    p = argparse.ArgumentParser()
    add_common_arguments(p)
    s = settings_from_args(p.parse_args(["--pruner", "fista", "--pruner-opt", "search_steps=8"]))
    assert s.pruner.options == {"search_steps": 8}


def test_process_peak_rss_is_the_whole_process():
    """The report's process peak is ru_maxrss (every phase), never below the RSS measured before."""
    import types

    import pandas as pd
    import psutil

    from pruning.report import build_report, process_peak_rss_mb
    from pruning.settings import PruneSettings

    rss = psutil.Process().memory_info().rss / 2**20
    assert process_peak_rss_mb() >= rss * 0.999 > 0
    result = types.SimpleNamespace(settings=PruneSettings(), target_sparsity=0.5, achieved_sparsity=0.5,
                                   allocation_info={}, calibration_shape=None, timings={"total": 1.0},
                                   peak_rss_mb=1.0, rss_before_mb=0.5, layers=pd.DataFrame())
    rep = build_report(result, fingerprint=False)
    assert rep["process_peak_rss_mb"] >= rss * 0.999 and rep["runs"][0]["peak_rss_mb"] == 1.0


# ------------------------------------------------------------------ --exclude-flagged (our option, off by default)
def test_exclude_flagged_option_reaches_the_settings_and_the_sweep_key():
    from pruning.__main__ import build_parser
    from pruning.cli.prune import settings_from_args
    from pruning.settings import LATER_FIELDS, PruneSettings

    p = build_parser()
    base = ["prune", "--out", "x", "--allocation", "alphapruning"]
    assert settings_from_args(p.parse_args(base)).allocation.exclude_flagged is False  # off by default = the reference
    assert settings_from_args(p.parse_args(base + ["--exclude-flagged"])).allocation.exclude_flagged is True
    # old sweep keys (written before the field existed) still match a run with the default
    assert LATER_FIELDS["exclude_flagged"] is False and "exclude_flagged" not in PruneSettings().key_dict()
    flagged = PruneSettings.from_flat(allocation="alphapruning", exclude_flagged=True)
    assert flagged.key_dict()["exclude_flagged"] is True


def test_compute_allocation_leaves_flagged_fits_out(builtin):
    """PruneSettings.exclude_flagged is handed to allocate(): on the built-in model (10 blocks with α > 8 fits)
    the allocation equals allocate(..., exclude_flagged=True) and differs from the reference."""
    from pruning.allocation import allocate
    from pruning.prune import compute_allocation
    from pruning.settings import PruneSettings
    from spectra.analyze import AnalysisSettings, analyze

    metrics = analyze(None, AnalysisSettings(xmin_rule="peak"), progress=False)
    s = PruneSettings.from_flat(allocation="alphapruning", sparsity=0.6, lam=0.3)
    ref = compute_allocation(builtin.model, s, metrics=metrics)
    s = s.replace(exclude_flagged=True)
    out = compute_allocation(builtin.model, s, metrics=metrics)
    want = allocate(metrics, "alphapruning", 0.6, lam=0.3, exclude_flagged=True)
    assert out["longname"].tolist() == want["longname"].tolist()
    assert out["sparsity"].tolist() == want["sparsity"].tolist()
    assert abs(out["sparsity"] - ref["sparsity"]).max() > 0.05


def test_prune_cli_exclude_flagged_end_to_end(tmp_path, capsys):
    from pruning.allocation import allocate
    from spectra.analyze import AnalysisSettings, analyze

    out = tmp_path / "ap-flagged-out"
    rc, _, err = _run(["prune", "--pruner", "magnitude", "--allocation", "alphapruning", "--sparsity", "0.6",
                       "--exclude-flagged", "--eval", "none", "--out", str(out), *SMALL], capsys)
    assert rc == 0, err
    rep = json.loads((out / "report.json").read_text())
    assert rep["runs"][0]["exclude_flagged"] is True
    want = allocate(analyze(None, AnalysisSettings(xmin_rule="peak"), progress=False), "alphapruning", 0.6, lam=0.3,
                    exclude_flagged=True)
    target = {l["longname"]: l["target"] for l in rep["layers"]}
    assert [target[n] for n in want["longname"]] == pytest.approx(want["sparsity"].tolist(), abs=1e-12)


@pytest.mark.parametrize("argv", [["--exclude-flagged"], ["--exclude-flagged", "--allocation", "erk"]])
def test_exclude_flagged_needs_alphapruning(argv, tmp_path, capsys):
    rc, _, err = _run(["prune", "--out", str(tmp_path / "x"), "--eval", "none", *SMALL, *argv], capsys)
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1 and "'alphapruning'" in err, err
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------ report.json: the run record of a sweep row
#: record columns measured anew by every run (wall and CPU time, memory, the time of day)
PER_RUN = {"finished", "prune_seconds", "prune_cpu_seconds", "eval_seconds", "peak_rss_mb"}


def _no_constant(name: str):
    raise AssertionError(f"{name} in a JSON file: not strict JSON")


def _same(a, b) -> bool:
    """Equal values, NaN equal to NaN (a float column of a parquet row against the JSON value, where strict JSON
    writes a missing number as null)."""
    import math

    a, b = (float("nan") if v is None else v for v in (a, b))

    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def test_report_run_record_is_the_sweep_row_of_the_same_cell(tiny_dir, tmp_path, capsys):
    """report.json's run record has the keys of the sweep's row for the same settings and the same values (the
    per-run timings, memory and time of day aside): the same cell key, settings, perplexities (pruned and dense),
    sparsities and versions; it is run_record of the same settings and perplexity result plus the sweep's columns."""
    import math

    from pruning.__main__ import build_parser
    from pruning.cli.prune import settings_from_args
    from pruning.runs import run_record
    from pruning.sweep import load_table

    budget = ["--nsamples", "2", "--seqlen", "32", "--eval", "wikitext2", "--eval-seqlen", "32", "--max-windows", "1",
              "--quiet"]
    argv = ["prune", str(tiny_dir), "--pruner", "wanda", "--sparsity", "0.5", "--out", str(tmp_path / "w"), *budget]
    rc, _, err = _run(argv, capsys)
    assert rc == 0, err
    rep = read_report(tmp_path / "w")
    assert rep["layout"] == 2 and len(rep["runs"]) == 1
    run = rep["runs"][0]
    strict = json.loads((tmp_path / "w" / "report.json").read_text(), parse_constant=_no_constant)
    assert strict["runs"][0]["lam"] is None  # uniform: no λ, written as null (never a bare NaN)
    rc, _, err = _run(["sweep", str(tiny_dir), "--pruners", "wanda", "--sparsities", "0.5", "--allocations", "uniform",
                       "--out", str(tmp_path / "s.parquet"), *budget], capsys)
    assert rc == 0, err
    table = load_table(tmp_path / "s.parquet")
    row = table[table["kind"] == "pruned"].iloc[0].to_dict()
    assert set(run) == set(row)
    differ = {k for k in run if k not in PER_RUN and not _same(run[k], row[k])}
    assert differ == set(), {k: (run[k], row[k]) for k in differ}
    assert run["ppl"] == rep["perplexity"]["pruned"]["wikitext2"]["ppl"] and math.isfinite(run["ppl"])
    assert run["dense_ppl"] == table.loc[table["kind"] == "dense", "ppl"].iloc[0] != run["ppl"]  # (random model)
    assert run["achieved_sparsity"] == pytest.approx(0.5, abs=1e-6) and run["model"] == str(tiny_dir)
    # run_record of the same settings and perplexity result: the record's own columns, value for value
    settings = settings_from_args(build_parser().parse_args(argv))
    own = run_record(settings, "wikitext2", 32, 1, rep["perplexity"]["pruned"]["wikitext2"])
    assert set(own) < set(run)
    assert {k for k, v in own.items() if k != "finished" and not _same(v, run[k])} == set()
    assert rep["timings_s"]["total"] == pytest.approx(run["prune_seconds"], abs=1e-4)  # (rounded to 0.1 ms)


def test_report_of_the_previous_layout_is_one_error_line(tmp_path):
    """A report.json written before the run records (no ``runs``, no ``layout``) is refused in one line that names the
    problem and the fix; so are a newer layout and a JSON file that is no report; the current layout reads back."""
    import types

    import pandas as pd

    from pruning.report import build_report, write_json_atomic
    from pruning.settings import PruneSettings

    result = types.SimpleNamespace(settings=PruneSettings(), target_sparsity=0.5, achieved_sparsity=0.5,
                                   allocation_info={}, calibration_shape=None, timings={"total": 1.0},
                                   peak_rss_mb=1.0, rss_before_mb=0.5, layers=pd.DataFrame())
    rep = json.loads(write_json_atomic(tmp_path / "report.json", build_report(result, fingerprint=False)).read_text())
    old = {"created": "2025-01-01T00:00:00", "method": "wanda", "settings": {"pruner": "wanda", "sparsity": 0.5},
           "perplexity": {"dense": {}, "pruned": {}}, "target_sparsity": 0.5, "layers": []}
    cases = {"old.json": (old, "previous report layout"), "new.json": ({**rep, "layout": 3}, "newer than"),
             "other.json": ({"rows": []}, "is not a report")}
    for name, (doc, needle) in cases.items():
        (tmp_path / name).write_text(json.dumps(doc))
        with pytest.raises(ValueError) as exc:
            read_report(tmp_path / name)
        assert needle in str(exc.value) and "\n" not in str(exc.value) and name in str(exc.value)
    assert "--overwrite" in str(pytest.raises(ValueError, read_report, tmp_path / "old.json").value)
    assert read_report(tmp_path)["runs"] == rep["runs"] and rep["runs"][0]["ppl"] is None  # (no evaluation)
    with pytest.raises(FileNotFoundError, match="--out DIR"):
        read_report(tmp_path / "missing")
