"""python -m spectra: summary output, saved results, and one-line errors (exit code 2, no traceback)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import spectra.results as results
from spectra.__main__ import main
from spectra.results import load_results


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    d = tmp_path / "spectra-cache"
    d.mkdir()
    monkeypatch.setattr(results, "_spectra_cache_dir", lambda: d)
    return d


@pytest.fixture
def tiny_dir(tmp_path):
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = LlamaConfig(vocab_size=64, num_hidden_layers=2, hidden_size=32, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=64)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    with torch.no_grad():
        model.model.layers[1].mlp.up_proj.weight.zero_()
    d = tmp_path / "tiny"
    model.save_pretrained(d)
    return d


def test_cli_on_builtin_model(tmp_path, capsys):
    out = tmp_path / "smol.parquet"
    assert main(["--xmin", "ks", "--out", str(out), "--eigs", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "model: builtin:smollm2   matrices: 210   xmin rule: ks" in text
    assert "per-role alpha:  q=" in text and " down=" in text and "largest alpha" in text
    assert "status: ok " in text and f"wrote {out}" in text
    df = load_results(out)
    assert len(df) == 210 and df.attrs["metadata"]["xmin_rule"] == "ks"
    assert all(len(e) == m for e, m in zip(df["evals"], df["M"]))
    worst = df.nlargest(5, "alpha")["longname"].tolist()
    lines = text.splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("largest alpha"))
    assert [l.split()[0] for l in lines[start + 1:start + 6]] == worst  # the 5 largest α, in order
    medians = df.groupby("role", sort=False)["alpha"].median()
    assert f"q={medians['q']:.2f}" in text and f"down={medians['down']:.2f}" in text
    # refusing to overwrite happens before any work
    assert main(["--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "already exists" in err and err.count("\n") == 1


def test_cli_tiny_model_failed_rows_and_csv(tiny_dir, tmp_path, capsys):
    out = tmp_path / "t.csv"
    assert main([str(tiny_dir), "--xmin", "median", "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "failed (1):" in text and "model.layers.1.mlp.up_proj" in text and "all-zero" in text
    assert "failed 1" in text
    df = load_results(out)
    assert len(df) == 14 and (df["status"] == "failed").sum() == 1
    assert np.isnan(df.set_index("longname").loc["model.layers.1.mlp.up_proj", "alpha"])
    assert main([str(tiny_dir), "--out", str(out), "--overwrite", "--quiet", "--xmin-value", "0.01"]) == 0
    assert load_results(out).attrs["metadata"]["xmin_rule"] == "fixed"


@pytest.mark.parametrize("argv,msg", [
    (["/no/such/model"], "model path not found"),
    (["--xmin", "mid"], "invalid choice"),
    (["--out", "/tmp/x.xlsx"], "use .parquet or .csv"),
    (["--out", "/no/such/dir/x.csv"], "does not exist"),
])
def test_cli_user_mistakes_are_one_line(argv, msg, capsys):
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse errors
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and msg in err and err.count("\n") == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cli_subprocess_no_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "spectra", str(tmp_path / "missing"), "--quiet"], capture_output=True,
                       text=True)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("error: model path not found") and r.stderr.count("\n") == 1
    assert "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "spectra", "--device", "cuda", "--quiet"], capture_output=True,
                       text=True)
    assert r.returncode == 2 and "no CUDA GPU" in r.stderr and "Traceback" not in r.stderr
