"""An exported recipe really runs in llm-compressor and prunes every block matrix to its allocated sparsity.

llm-compressor pins conflict with ours (transformers ≤ 5.17), so it lives in its own virtual environment,
``<cache>/llmc-venv`` (built on first use: ``torch==2.13.0`` first — the local CPU wheel; any other torch spec pulls
CUDA wheels — then ``llmcompressor==0.14.0.1``; reused when present; one folder, 1.5 GB, removed by ``make
clean-cache``; pip's download cache is not filled). Skipped only when pip cannot reach the registry.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest
from tiny_models import save_random_llama

pytestmark = pytest.mark.ecosystem

LLMC = "0.14.0.1"
HERE = Path(__file__).resolve().parent


def _registry_host() -> str:
    """Host of pip's index (``PIP_INDEX_URL`` / pip config), default pypi.org."""
    url = os.environ.get("PIP_INDEX_URL")
    if not url:
        r = subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.index-url"], capture_output=True,
                           text=True)
        url = r.stdout.strip() if r.returncode == 0 else ""
    return urlparse(url).hostname if url.startswith("http") else "pypi.org"


def _reachable(host: str) -> bool:
    try:
        socket.create_connection((host, 443), timeout=5).close()
        return True
    except OSError:
        return False


def _venv_ok(python: Path) -> bool:
    if not python.exists():
        return False
    r = subprocess.run([str(python), "-c", "from importlib.metadata import version; print(version('llmcompressor'))"],
                       capture_output=True, text=True)
    return r.returncode == 0 and r.stdout.strip().splitlines()[-1:] == [LLMC]


@pytest.fixture(scope="module")
def llmc_python() -> Path:
    """Python of the isolated llm-compressor venv (built once, then reused)."""
    from spectra.config import cache_dir

    venv = cache_dir() / "llmc-venv"
    python = venv / "bin" / "python"
    if _venv_ok(python):
        return python
    host = _registry_host()
    if not _reachable(host):
        pytest.skip(f"pip cannot reach the package registry ({host}); llm-compressor {LLMC} cannot be installed")
    # built in a temporary sibling of this process (removed however the build ends), then renamed into place
    tmp = venv.with_name(f".llmc-venv.{os.getpid()}.tmp")
    base = getattr(sys, "_base_executable", sys.executable)
    try:
        subprocess.run([base, "-m", "venv", str(tmp)], check=True)
        for spec in ("torch==2.13.0", f"llmcompressor=={LLMC}"):  # torch first: the CPU wheel, not CUDA
            r = subprocess.run([str(tmp / "bin" / "python"), "-m", "pip", "install", "-q", "--no-cache-dir", spec],
                               capture_output=True, text=True)
            assert r.returncode == 0, f"pip install {spec} failed: {r.stderr[-2000:]}"
        if not _venv_ok(python):  # a broken one; or another run finished first, and its venv is kept
            shutil.rmtree(venv, ignore_errors=True)
            tmp.rename(venv)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    assert _venv_ok(python)
    return python


@pytest.fixture(scope="module")
def llama6(builtin, tmp_path_factory) -> Path:
    """A 6-block random Llama (seed 0, 42 block matrices) with the built-in model's tokenizer, saved as a local HF
    directory: the property (llm-compressor applies every matrix's exported sparsity, in list order, and leaves the
    head alone) does not depend on the weights, and its SparseGPT passes take a second instead of the 30 blocks of
    the built-in model (transformers 5.17 of the llm-compressor venv loads it)."""
    return save_random_llama(tmp_path_factory.mktemp("llama6") / "llama6", builtin.tokenizer, layers=6)


def test_exported_recipe_runs_in_llm_compressor(llmc_python, llama6, tmp_path):
    from pruning.__main__ import main as pruning_main
    from pruning.allocation import allocate, save_allocation
    from pruning.evaluation.data import get_calibration
    from spectra.analyze import AnalysisSettings, analyze
    from spectra.models import load_model

    alloc = allocate(analyze(str(llama6), AnalysisSettings(xmin_rule="peak"), progress=False), "alphapruning", 0.6,
                     lam=0.3, granularity="matrix")
    save_allocation(alloc, tmp_path / "alloc.json")
    assert pruning_main(["export-recipe", str(llama6), "--allocation-file", str(tmp_path / "alloc.json"),
                         "--pruner", "sparsegpt", "--out", str(tmp_path / "recipe.yaml")]) == 0
    lm = load_model(str(llama6))
    (tmp_path / "calib.json").write_text(json.dumps(get_calibration(lm.tokenizer, 8, 64, 0).tolist()))
    head_zeros = float((lm.model.lm_head.weight == 0).float().mean())
    env = dict(os.environ, PYTHONPATH="")
    r = subprocess.run([str(llmc_python), str(HERE / "_llmc_oneshot.py"), str(llama6),
                        str(tmp_path / "recipe.yaml"), str(tmp_path / "calib.json"), str(tmp_path / "out.json")],
                       capture_output=True, text=True, env=env, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads((tmp_path / "out.json").read_text())["sparsity"]
    want = dict(zip(alloc["longname"], alloc["sparsity"].astype(float)))
    assert len(set(round(v, 3) for v in want.values())) > 20  # distinct values: the list order matters
    assert len(want) == 42
    worst = max(abs(got[n] - s) for n, s in want.items())
    assert worst <= 0.005, worst
    assert got["lm_head"] == pytest.approx(head_zeros, abs=1e-7)  # the head is ignored
