"""One source for every setting: the nested settings dataclasses check themselves, and the command
line and the app's widgets are built from their fields (spectra.options, pruning.settings, webapp.widgets)."""
import argparse
import dataclasses
import json
from typing import Optional

import pytest

from pruning.settings import (
    SECTIONS,
    AllocationSettings,
    CalibrationSettings,
    EvalSettings,
    GDSettings,
    OutputSettings,
    PrunerSettings,
    PruneSettings,
)
from spectra.options import add_options, check_options, default_help, option, options_from_namespace, options_of

ALL_CLASSES = [*SECTIONS.values(), EvalSettings, OutputSettings]

#: PruneSettings().key_dict() of the last flat release (sweep tables written with it must keep resuming)
FLAT_RELEASE_KEY = {"allocation": "uniform", "allocation_file": None, "batch_size": 8, "calib_dataset": "c4",
                    "correction": None, "data_path": None, "gd_precondition": True, "gd_steps": 0,
                    "granularity": "block", "lam": 0.3, "mapping": "linear", "max_sparsity": 0.99, "metric": "alpha",
                    "nm": None, "nsamples": 128, "owl_M": 5.0, "owl_lambda": 0.08, "pruner": "wanda",
                    "pruner_options": {}, "seed": 0, "seqlen": 512, "sparsity": 0.5, "sublayer_sequential": None,
                    "xmin_rule": "peak"}


@dataclasses.dataclass(frozen=True)
class Toy:
    rate: float = option(0.25, "a rate", lo=0.0, hi=1.0, hi_open=True)
    steps: int = option(3, "how many", lo=1)
    mode: str = option("a", "which", choices=("a", "b"))
    note: Optional[str] = option(None, "free text", kind=str)
    fast: bool = option(True, "go fast", off_flag="--slow", off_help="go slowly")
    hidden: int = option(7, "not on the command line", flag=None)

    def __post_init__(self):
        check_options(self)


def _parse(cls, argv, **kw):
    p = argparse.ArgumentParser(exit_on_error=False)
    add_options(p, cls, **kw)
    return p, p.parse_args(argv)


def test_toy_settings_round_trip_through_the_command_line():
    p, ns = _parse(Toy, [])
    assert options_from_namespace(Toy, ns) == Toy()  # every CLI default is the field's default
    _, ns = _parse(Toy, ["--rate", "0.5", "--steps", "9", "--mode", "b", "--note", "x", "--slow"])
    assert options_from_namespace(Toy, ns) == Toy(rate=0.5, steps=9, mode="b", note="x", fast=False)
    help_text = p.format_help()
    assert "--hidden" not in help_text and "default 0.25" in help_text and "(a, b)" in help_text
    for argv, needle in [(["--rate", "1"], "--rate 1 outside [0, 1)"), (["--steps", "0"], "--steps must be ≥ 1"),
                         (["--steps", "2.5"], "--steps must be an integer"), (["--mode", "c"], "choose one of: a, b"),
                         (["--rate", "fast"], "--rate must be a number")]:
        _, ns = _parse(Toy, argv)
        with pytest.raises(ValueError, match=None) as exc:
            options_from_namespace(Toy, ns)
        assert needle in str(exc.value) and "\n" not in str(exc.value)


def _tune_and_analysis_settings():
    from pruning.tune import TuneSettings
    from spectra.settings import AnalysisSettings

    return [TuneSettings, AnalysisSettings]


@pytest.mark.parametrize("cls", ALL_CLASSES + _tune_and_analysis_settings(), ids=lambda c: c.__name__)
def test_every_bound_is_enforced_with_a_one_line_error_naming_the_flag(cls):
    for o in options_of(cls):
        bad = []
        if o.kind in (int, float):
            if o.lo is not None:
                bad.append(o.lo - 1)
            if o.hi is not None:
                bad.append(o.hi if o.hi_open else o.hi + 1)
            bad.append("x")
        if o.choices is not None:
            bad.append("no-such-choice")
        for value in bad:
            with pytest.raises(ValueError) as exc:
                kwargs = {"out": "x"} if cls is OutputSettings and o.name != "out" else {}
                cls(**kwargs, **{o.name: value})
            msg = str(exc.value)
            assert "\n" not in msg and (o.flag or o.name) in msg, (o.name, value, msg)


def test_sections_are_frozen_and_checked_on_every_change():
    s = PruneSettings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.allocation.lam = 0.5  # type: ignore[misc]
    with pytest.raises(ValueError, match="--lam 1.5 outside"):
        s.replace(lam=1.5)
    with pytest.raises(ValueError, match="no pruning setting 'lamda'"):
        s.replace(lamda=0.2)
    t = s.replace(lam=0.4, nsamples=16, gd_steps=5, pruner="sparsegpt")
    assert (t.allocation.lam, t.calibration.nsamples, t.gd.steps, t.pruner.name) == (0.4, 16, 5, "sparsegpt")
    assert s.allocation.lam == 0.3  # the original is unchanged
    # rules between sections hold on construction, whatever the order of the changes
    with pytest.raises(ValueError, match="2:4 sparsity only"):
        s.replace(pruner="prox24")
    assert s.replace(pruner="prox24", nm="2:4").allocation.sparsity == 0.5
    with pytest.raises(ValueError, match="above --max-sparsity"):
        s.replace(min_sparsity=0.6, max_sparsity=0.5)
    with pytest.raises(TypeError, match="from_flat"):
        PruneSettings(pruner="wanda")  # type: ignore[arg-type]


def test_flat_view_keeps_the_sweep_keys_of_the_flat_release():
    assert PruneSettings().key_dict() == FLAT_RELEASE_KEY
    s = PruneSettings.from_flat(pruner="sparsegpt", allocation="alphapruning", sparsity=0.7, lam=0.2, nsamples=32)
    assert PruneSettings.from_flat(**s.flat()) == s
    assert set(s.flat()) == set(FLAT_RELEASE_KEY) | {"exclude_flagged", "min_sparsity", "atp_beta", "dlp_alpha"}
    assert json.dumps(s.flat(), default=str)  # reports record it as JSON
    # an N:M pattern gives its own sparsity, whatever was asked
    assert PruneSettings.from_flat(nm="1:4", sparsity=0.3).allocation.sparsity == 0.75


def test_prune_and_sweep_command_lines_are_the_settings_fields():
    from pruning.__main__ import build_parser
    from pruning.cli.prune import settings_from_args
    from pruning.cli.sweep import spec_from_args

    p = build_parser()
    assert settings_from_args(p.parse_args(["prune", "--out", "x"])) == PruneSettings()
    actions = p._subparsers._group_actions[0].choices["prune"]._actions  # noqa: SLF001
    by_flag = {flag: a for a in actions for flag in a.option_strings}
    dests = {a.dest for a in actions}
    for cls in ALL_CLASSES:
        for o in options_of(cls):
            if o.flag is None:
                assert o.dest not in dests, f"{o.dest} is not a command-line setting"
                continue
            assert o.flag in by_flag, f"{o.flag} missing from the prune command"
            action = by_flag[o.flag]
            assert action.dest == o.dest and action.help.startswith(default_help(o))  # help, choices, default
            assert action.default == (o.default if o.kind is bool or o.default is None else str(o.default))
            if o.off_flag:
                assert by_flag[o.off_flag].dest == o.dest and by_flag[o.off_flag].const is False
    s = settings_from_args(p.parse_args(["prune", "--out", "x", "--allocation", "owl", "--owl-m", "7",
                                         "--min-sparsity", "0.2", "--gd-steps", "10", "--gd-plain"]))
    assert (s.allocation.method, s.allocation.owl_M, s.allocation.min_sparsity, s.gd.steps, s.gd.precondition) == \
        ("owl", 7.0, 0.2, 10, False)
    spec = spec_from_args(p.parse_args(["sweep", "--out", "t.parquet", "--pruners", "wanda", "--nsamples", "4"]))
    assert spec.base.calibration.nsamples == 4 and spec.base.allocation.xmin_rule == "peak"


def test_tune_command_line_is_the_tune_settings_fields():
    from pruning.__main__ import build_parser
    from pruning.calib_stats import TUNE_CALIBRATION
    from pruning.cli.tune import settings_from_args
    from pruning.tune import TuneSettings

    p = build_parser()
    s = settings_from_args(p.parse_args(["tune", "--out", "x.json"]))
    assert s == TuneSettings() and s.calib == TUNE_CALIBRATION and s.eval_seqlen == TUNE_CALIBRATION.seqlen
    s = settings_from_args(p.parse_args(["tune", "--out", "x.json", "--lams", "0.1,0.3", "--seqlen", "128",
                                         "--allocation", "owl", "--owl-ms", "3,7"]))
    assert (s.lams, s.owl_Ms, s.calib.seqlen, s.eval_seqlen) == ([0.1, 0.3], [3.0, 7.0], 128, 128)
    with pytest.raises(ValueError, match="--lams 1.5 outside"):
        settings_from_args(p.parse_args(["tune", "--out", "x.json", "--lams", "0.1,1.5"]))


def test_app_widgets_and_defaults_come_from_the_fields():
    from webapp import state
    from webapp.widgets import widget_spec

    for cls in ALL_CLASSES:
        for o in options_of(cls):
            spec = widget_spec(o)
            if spec["widget"] in ("slider", "number_input"):
                if o.lo is not None and spec["min_value"] is not None:
                    assert spec["min_value"] >= o.lo, o.name
                if o.hi is not None and spec["max_value"] is not None:
                    assert spec["max_value"] <= o.hi and not (o.hi_open and spec["max_value"] == o.hi), o.name
            if o.choices is not None:
                assert spec["options"] == list(o.choices)
            assert spec["help"].startswith(o.help)
    d, a, g = state.DEFAULTS, AllocationSettings(), GDSettings()
    assert (d["al_mapping"], d["al_gran"], d["al_min"], d["al_max"], d["al_metric"], d["al_exclude_flagged"]) == \
        (a.mapping, a.granularity, a.min_sparsity, a.max_sparsity, a.metric, a.exclude_flagged)
    assert (d["pr_pruner"], d["pr_gd_steps"], d["pr_gd_pre"]) == (PrunerSettings().name, g.steps, g.precondition)
    assert (d["pr_nsamples"], d["pr_seqlen"]) == (state.APP_DEFAULTS["nsamples"], state.APP_DEFAULTS["seqlen"])
    assert CalibrationSettings().nsamples != state.APP_DEFAULTS["nsamples"]  # the one documented difference
    assert state.SELECTION_DEFAULTS["lam"] == a.lam


def test_min_sparsity_reaches_the_allocation(builtin):
    from pruning.allocation import allocate
    from pruning.prune import compute_allocation
    from spectra.analyze import AnalysisSettings, analyze

    metrics = analyze(None, AnalysisSettings(xmin_rule="peak"), progress=False)
    s = PruneSettings.from_flat(allocation="alphapruning", sparsity=0.6, lam=0.5, min_sparsity=0.5)
    out = compute_allocation(builtin.model, s, metrics=metrics)
    want = allocate(metrics, "alphapruning", 0.6, lam=0.5, min_sparsity=0.5)
    assert out["sparsity"].tolist() == want["sparsity"].tolist()
    assert out["sparsity"].min() >= 0.5 - 1e-12
    free = compute_allocation(builtin.model, s.replace(min_sparsity=0.0), metrics=metrics)
    assert free["sparsity"].min() < 0.5  # the floor changed the allocation


def test_allocate_and_export_recipe_take_every_allocation_setting(builtin, tmp_path, capsys):
    """Both commands read the allocation options from AllocationSettings' fields, and the values reach allocate()
    (export-recipe used to pass λ only: mapping, granularity, bounds and exclude_flagged were ignored)."""
    import re

    from pruning.__main__ import main as pruning_main
    from pruning.allocation import allocate
    from pruning.recipe import block_matrix_names
    from spectra.analyze import AnalysisSettings, analyze

    metrics = analyze(None, AnalysisSettings(xmin_rule="peak"), progress=False)
    path = tmp_path / "m.parquet"
    metrics.drop(columns=[c for c in ("evals",) if c in metrics]).to_parquet(path)
    opts = ["--sparsity", "0.6", "--lam", "0.4", "--mapping", "log", "--granularity", "matrix", "--min-sparsity",
            "0.3", "--max-sparsity", "0.9", "--exclude-flagged"]
    want = allocate(metrics, "alphapruning", 0.6, lam=0.4, mapping="log", granularity="matrix", min_sparsity=0.3,
                    max_sparsity=0.9, exclude_flagged=True)
    assert pruning_main(["allocate", "--metrics", str(path), "--method", "alphapruning", *opts]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert list(doc["layers"].values()) == want["sparsity"].tolist()
    assert pruning_main(["export-recipe", "--allocation", "alphapruning", "--metrics", str(path), *opts,
                         "--out", str(tmp_path / "r.yaml")]) == 0
    text = (tmp_path / "r.yaml").read_text()
    values = [float(v) for v in re.search(r"sparsity: \[(.*)\]", text).group(1).split(",")]
    by_name = dict(zip(want["longname"], want["sparsity"]))
    assert values == pytest.approx([by_name[n] for n in block_matrix_names()], abs=1e-4)
    assert min(values) >= 0.3 - 1e-4 and max(values) <= 0.9 + 1e-4
    capsys.readouterr()
    assert pruning_main(["allocate", "--metrics", str(path), "--sparsity", "0.6", "--min-sparsity", "0.95",
                         "--max-sparsity", "0.9"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "--min-sparsity" in err


def test_spectra_command_line_is_the_analysis_settings_fields(capsys):
    from spectra.__main__ import build_parser
    from spectra.options import options_from_namespace
    from spectra.settings import AnalysisSettings

    p = build_parser()
    assert options_from_namespace(AnalysisSettings, p.parse_args([])) == AnalysisSettings()
    s = options_from_namespace(AnalysisSettings, p.parse_args(["--xmin", "ks", "--workers", "2", "--eigs",
                                                               "--mp-method", "median", "--min-evals", "4"]))
    assert (s.xmin_rule, s.workers, s.keep_eigs, s.mp_method, s.min_evals) == ("ks", 2, True, "median", 4)
    s = options_from_namespace(AnalysisSettings, p.parse_args(["--xmin-value", "0.5"]))
    assert (s.xmin_rule, s.xmin) == ("fixed", 0.5)
    help_text = p.format_help()
    for o in options_of(AnalysisSettings):
        assert o.flag in help_text
