"""Shared fixtures: the built-in model is loaded once per test session (fp32, eval mode)."""
from __future__ import annotations

import os
from pathlib import Path

# idle OpenMP threads sleep instead of spinning (as the CLIs and the app set it): with other processes on the cores,
# spinning waits made torch's small ops 30-50x slower (a SparseGPT 2:4 layer: 5.6-9.1 s against 0.17 s on 2 busy
# cores); set before torch is imported
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest

# `--dist loadgroup` keeps an xdist_group on one worker again (tests/xdist_groups.py)
pytest_plugins = ["xdist_groups"]


def pytest_configure(config):
    """torch/BLAS threads (set here, before any test module imports torch; an explicit ``OMP_NUM_THREADS`` wins): 2
    in a serial run; under pytest-xdist the cores shared out among the workers (``make test`` runs two workers on
    two cores: one thread each, so that they do not oversubscribe the cores). The xdist controller sets nothing, so
    that its workers, which inherit its environment, set their own."""
    if getattr(config.option, "numprocesses", None):  # the xdist controller
        return
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 0)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 2) // workers)) if workers else "2")


@pytest.fixture(scope="session")
def builtin():
    """The built-in SmolLM2-135M-Instruct as a :class:`spectra.models.LoadedModel`."""
    from spectra.models import load_model

    return load_model()


@pytest.fixture(scope="session")
def transformers_gguf():
    """``get(name)``: a built-in model as transformers' own GGUF loader builds it (~25 s for SmolLM2), the independent
    reference of the fast conversion, built once per session (tests/test_gguf_fast.py and test_models_weights.py
    share it, one xdist group)."""
    import torch

    from spectra.models import _load_from_gguf, builtin_gguf_path

    models = {}

    def get(name: str = "smollm2"):
        if name not in models:
            path = builtin_gguf_path(name)
            models[name] = _load_from_gguf(path.parent, path.name, torch.float32, False)[0]
        return models[name]

    return get


@pytest.fixture(scope="session")
def analysis():
    """The built-in model's analysis with the default (peak) rule and eigenvalues — what the app shows (computed once
    for every app test file)."""
    from spectra.analyze import AnalysisSettings, analyze

    return analyze(None, AnalysisSettings(xmin_rule="peak", keep_eigs=True), progress=False)


@pytest.fixture()
def app(analysis):
    """A fresh streamlit AppTest of app.py, run once, with nothing failed (tests/app_helpers.py reads it)."""
    from app_helpers import APP, no_failure
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=240)
    at.run()
    no_failure(at)
    return at


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, builtin):
    """A 2-block random Llama (seed 0) with the built-in model's tokenizer, saved as a local HF directory."""
    from tiny_models import save_random_llama

    return save_random_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama", builtin.tokenizer)


_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """A streamlit server of app.py on a free local port, shared by the browser test modules (grouped on one xdist
    worker: one server start and one model load instead of one per module; each test opens its own browser session,
    as two users of one server would); its URL."""
    from webapp.serve import StreamlitServer

    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"), "PYTHONUNBUFFERED": "1"}
    with open(tmp_path_factory.mktemp("streamlit") / "streamlit.log", "w+") as log:  # kept when a test fails
        with StreamlitServer(_ROOT / "app.py", env, log=log, timeout_s=90) as srv:
            yield srv.url
