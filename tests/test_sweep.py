"""Sweep: cell expansion, keys, and resume after an interruption (finished cells are never recomputed)."""
import dataclasses
import hashlib
import json

import pandas as pd
import pytest

from pruning.__main__ import main
from pruning.pruners import PRUNERS, PrunerSpec, get_pruner
from pruning.sweep import SweepSpec, append_row, cell_key, expand, load_table


def test_expand_sweeps_lambda_only_where_used_and_nm_as_uniform():
    spec = SweepSpec(sparsities=[0.5, 0.7], allocations=["uniform", "alphapruning", "owl"], pruners=["wanda"],
                     lams=[0.1, 0.2, 0.3], nms=[None, "2:4"])
    cells = expand(spec)
    assert len(cells) == 2 * (1 + 3 + 1) + 1
    alpha = [c for c in cells if c.allocation.method == "alphapruning"]
    assert sorted({c.allocation.lam for c in alpha}) == [0.1, 0.2, 0.3]
    nm = [c for c in cells if c.allocation.nm]
    assert len(nm) == 1 and nm[0].allocation.method == "uniform" and nm[0].allocation.sparsity == 0.5
    keys = {cell_key("m", c, spec.eval_settings()) for c in cells}
    assert len(keys) == len(cells)  # every cell has its own key
    c2 = cells[0].replace(seed=1)
    assert cell_key("m", c2, spec.eval_settings()) != cell_key("m", cells[0], spec.eval_settings())
    assert cell_key("m", cells[0], {**spec.eval_settings(), "max_windows": 3}) != \
        cell_key("m", cells[0], spec.eval_settings())


def test_sweep_pruner_options_go_to_the_pruners_that_take_them(tmp_path, capsys):
    import argparse

    from pruning.cli.sweep import add_parser, spec_from_args

    ap = argparse.ArgumentParser()
    add_parser(ap.add_subparsers())
    args = ap.parse_args(["sweep", "--pruners", "wanda,fista,sparsegpt", "--pruner-opt", "max_iter=30",
                          "--pruner-opt", "percdamp=0.05", "--eval", "none", "--out", str(tmp_path / "t.parquet")])
    with pytest.raises(ValueError, match="exactly one dataset"):
        spec_from_args(args)
    args.eval = "wikitext2"
    cells = {c.pruner.name: c for c in expand(spec_from_args(args))}
    assert cells["wanda"].pruner.options == {}
    assert cells["fista"].pruner.options == {"max_iter": 30}
    assert cells["sparsegpt"].pruner.options == {"percdamp": 0.05}
    # a cell without options keeps the key it had before options existed (old sweep tables still resume)
    plain = SweepSpec(pruners=["wanda"])
    assert cell_key("m", expand(plain)[0], plain.eval_settings()) == \
        cell_key("m", cells["wanda"], plain.eval_settings())
    # a field added later (gd_precondition) leaves the key alone at its first default (False: rows written before
    # it existed still resume) and is part of the key otherwise (True is the default now)
    old_style = cells["wanda"].replace(gd_precondition=False)
    assert cell_key("m", old_style, plain.eval_settings()) != cell_key("m", cells["wanda"], plain.eval_settings())
    from pruning.settings import LATER_FIELDS

    old_key = hashlib.sha256(json.dumps({"model": "m", "settings": {k: v for k, v in old_style.as_dict().items()
                                                                   if not (k in LATER_FIELDS and v == LATER_FIELDS[k])},
                                         "eval": plain.eval_settings()}, sort_keys=True, default=str)
                             .encode()).hexdigest()[:16]
    assert cell_key("m", old_style, plain.eval_settings()) == old_key
    # a 2:4-only pruner sweeps its pattern (the base settings are validated with the first pattern)
    args2 = ap.parse_args(["sweep", "--pruners", "prox24", "--nm", "2:4", "--pruner-opt", "growth=1.25",
                           "--out", str(tmp_path / "t.parquet")])
    (cell,) = expand(spec_from_args(args2))
    f = cell.flat()
    assert (f["pruner"], f["nm"], f["sparsity"], f["pruner_options"]) == ("prox24", "2:4", 0.5, {"growth": 1.25})
    args.pruner_opt = ["mu0=1"]
    with pytest.raises(ValueError, match="no pruner of --pruners wanda,fista,sparsegpt has option"):
        spec_from_args(args)


def _argv(tiny_dir, out, pruners):
    return ["sweep", str(tiny_dir), "--pruners", pruners, "--sparsities", "0.5", "--allocations", "uniform",
            "--nsamples", "2", "--seqlen", "32", "--eval", "wikitext2", "--eval-seqlen", "64", "--max-windows", "2",
            "--out", str(out), "--quiet"]


def test_resume_skips_finished_cells(tiny_dir, tmp_path, monkeypatch, capsys):
    calls = {"magnitude": 0, "_flaky": 0}
    mag = get_pruner("magnitude")

    def counting(W, stats, sparsity, nm=None, **o):
        calls["magnitude"] += 1
        return mag.fn(W, stats, sparsity, nm, **o)

    def broken(W, stats, sparsity, nm=None, **o):
        raise RuntimeError("simulated crash in the second cell")

    def working(W, stats, sparsity, nm=None, **o):
        calls["_flaky"] += 1
        return mag.fn(W, stats, sparsity, nm, **o)

    monkeypatch.setitem(PRUNERS, "magnitude", dataclasses.replace(mag, fn=counting))
    monkeypatch.setitem(PRUNERS, "_flaky", PrunerSpec("_flaky", broken))
    out = tmp_path / "sweep.parquet"

    with pytest.raises(RuntimeError, match="simulated crash"):
        main(_argv(tiny_dir, out, "magnitude,_flaky"))
    t1 = load_table(out)
    assert list(t1["kind"]) == ["dense", "pruned"] and t1["pruner"].tolist() == ["dense", "magnitude"]
    assert calls["magnitude"] == 14  # 2 blocks × 7 matrices
    first = t1.loc[t1["pruner"] == "magnitude"].iloc[0]

    monkeypatch.setitem(PRUNERS, "_flaky", PrunerSpec("_flaky", working))
    assert main(_argv(tiny_dir, out, "magnitude,_flaky")) == 0
    t2 = load_table(out)
    assert calls["magnitude"] == 14  # the finished cell was not recomputed
    assert calls["_flaky"] == 14
    assert t2["kind"].tolist().count("dense") == 1 and len(t2) == 3
    again = t2.loc[t2["pruner"] == "magnitude"].iloc[0]
    assert again["finished"] == first["finished"] and again["ppl"] == first["ppl"]
    row = t2.loc[t2["pruner"] == "_flaky"].iloc[0]
    assert row["ppl"] == pytest.approx(first["ppl"])  # same pruning (magnitude) → same perplexity
    assert row["achieved_sparsity"] == pytest.approx(0.5, abs=1e-6)
    assert row["dense_ppl"] == t2.loc[t2["kind"] == "dense", "ppl"].iloc[0]

    assert main(_argv(tiny_dir, out, "magnitude,_flaky")) == 0  # all done: nothing runs
    assert calls == {"magnitude": 14, "_flaky": 14}
    pd.testing.assert_frame_equal(load_table(out), t2)
    assert "skipped" in capsys.readouterr().out


def test_sweep_bad_input(tmp_path, capsys):
    rc = main(["sweep", "--nm", "2:4", "--allocations", "owl", "--out", str(tmp_path / "s.parquet"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1 and "uniform" in err
    rc = main(["sweep", "--sparsities", "0.5,1.2", "--out", str(tmp_path / "s.parquet"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "outside [0, 1)" in err
    (tmp_path / "bad.parquet").write_text("not parquet")
    rc = main(["sweep", "--out", str(tmp_path / "bad.parquet"), "--quiet", "--eval", "wikitext2"])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot read the sweep table" in err
    assert (tmp_path / "bad.parquet").read_text() == "not parquet"


def test_concurrent_sweeps_on_one_table_lose_no_row(tiny_dir, tmp_path, monkeypatch, capsys):
    # sweep A runs while another process appends a row to the same table (simulated inside A's pruner call):
    # A must keep that row when it saves its own cell, and a later sweep skips every finished cell
    out = tmp_path / "shared.parquet"
    mag = get_pruner("magnitude")
    foreign = {"key": "f" * 16, "model": "other", "kind": "pruned", "pruner": "wanda", "ppl": 12.5}

    def meddling(W, stats, sparsity, nm=None, **o):
        if not (load_table(out)["key"] == foreign["key"]).any():
            append_row(out, foreign)  # "the other sweep" finishes a cell now
        return mag.fn(W, stats, sparsity, nm, **o)

    monkeypatch.setitem(PRUNERS, "magnitude", PrunerSpec("magnitude", meddling))
    assert main(_argv(tiny_dir, out, "magnitude")) == 0
    t = load_table(out)
    assert foreign["key"] in set(t["key"]) and float(t.loc[t["key"] == foreign["key"], "ppl"].iloc[0]) == 12.5
    assert sorted(t["kind"].tolist()) == ["dense", "pruned", "pruned"]
    assert len(set(t["key"])) == len(t)
    # the same row twice is stored once
    assert len(append_row(out, foreign)) == len(t)
    monkeypatch.setitem(PRUNERS, "magnitude", mag)
    capsys.readouterr()
    assert main(_argv(tiny_dir, out, "magnitude")) == 0
    assert "done already, skipped" in capsys.readouterr().out and len(load_table(out)) == len(t)
