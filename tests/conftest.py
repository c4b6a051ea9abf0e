"""Shared fixtures: the built-in model is loaded once per test session (fp32, eval mode)."""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")

import pytest


@pytest.fixture(scope="session")
def builtin():
    """The built-in SmolLM2-135M-Instruct as a :class:`spectra.models.LoadedModel`."""
    from spectra.models import load_model

    return load_model()
