"""``python -m pruning tune``'s command line: the held-out windows of the search (``--max-windows``,
``--tune-seqlen``) and the WikiText-2 windows of ``--final`` (``--eval-windows``, ``--eval-seqlen``) are separate
settings, ``--final`` works without ``--eval-seqlen`` (512), and a bad value fails before the model loads.
The search and the final prune are replaced by recorders (their numbers are tested in tests/test_tune.py)."""
from __future__ import annotations

import json

import pytest


@pytest.fixture()
def recorded(monkeypatch):
    """Run ``python -m pruning tune ...`` with load_model / tune / final_prune recorded instead of run."""
    import pruning.tune
    import spectra.models

    calls: dict = {}

    def fake_load(model):
        calls["load"] = model
        return "LM"

    def fake_tune(lm, settings, out):
        calls["tune"] = settings
        return {"best": {"lam": 0.2, "owl_M": None, "ppl": 1.0}}

    def fake_final(lm, settings, best, test_seqlen=512, test_windows=None):
        calls["final"] = (test_seqlen, test_windows)
        return {"chosen": {}}

    monkeypatch.setattr(spectra.models, "load_model", fake_load)
    monkeypatch.setattr(pruning.tune, "tune", fake_tune)
    monkeypatch.setattr(pruning.tune, "final_prune", fake_final)

    def run(*argv):
        from pruning.__main__ import main

        calls.clear()
        return main(["tune", *argv]), calls

    return run


def test_held_out_and_final_windows_are_separate(recorded, tmp_path):
    out = tmp_path / "t.json"
    rc, calls = recorded("--max-windows", "8", "--tune-seqlen", "64", "--final", "--eval-windows", "32",
                         "--eval-seqlen", "128", "--out", str(out))
    assert rc == 0
    assert (calls["tune"].eval_windows, calls["tune"].eval_seqlen) == (8, 64)  # the search's held-out windows
    assert calls["final"] == (128, 32)  # WikiText-2 windows of --final
    assert json.loads(out.read_text())["final"] == {"chosen": {}}


def test_final_without_eval_seqlen(recorded, tmp_path):
    rc, calls = recorded("--final", "--out", str(tmp_path / "t.json"))
    assert rc == 0 and calls["final"] == (512, None)
    assert calls["tune"].eval_windows == 8 and calls["tune"].eval_seqlen == calls["tune"].calib.seqlen


@pytest.mark.parametrize("argv, flag", [
    (("--final", "--eval-seqlen", "x"), "--eval-seqlen"),
    (("--final", "--eval-windows", "0"), "--eval-windows"),
    (("--eval-windows", "32"), "--final"),  # a WikiText-2 window count without --final is a mistake, not ignored
    (("--max-windows", "0"), "--max-windows"),
])
def test_bad_values_fail_before_the_model_loads(recorded, tmp_path, capsys, argv, flag):
    rc, calls = recorded(*argv, "--out", str(tmp_path / "t.json"))
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1 and flag in err, err
    assert "load" not in calls and "tune" not in calls


def test_final_with_stream_fails_before_the_model_loads(recorded, tmp_path, capsys):
    rc, calls = recorded("--final", "--stream", "--out", str(tmp_path / "t.json"))
    err = capsys.readouterr().err
    assert rc == 2 and "--final prunes the whole model in memory" in err and "load" not in calls
