"""The app's caches of heavy work (webapp.cache) serve exactly what the library computes uncached: the dense input
norms kept on disk, OWL's ratios read ahead in the background, and the λ-effect chart's AlphaPruning allocations
reused by the allocation curves on a λ step."""
from __future__ import annotations

import os
import sys
import threading

import pandas as pd
import pytest
import torch


def fail(*args, **kwargs):
    raise AssertionError("recomputed: the cache was not used")


def test_input_norms_from_the_disk_cache_equal_the_dense_forward(tmp_path, monkeypatch, builtin):
    from pruning.block_loop import collect_input_norms
    from pruning.evaluation.data import get_calibration
    from webapp import cache

    monkeypatch.setenv("SPL_CACHE_DIR", str(tmp_path))
    cache.input_norms.clear()
    got = cache.input_norms("builtin", 2, 64)
    calib = get_calibration(builtin.tokenizer, nsamples=2, seqlen=64, seed=cache.CALIB_SEED)
    want = collect_input_norms(builtin.model, calib)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert len(list((tmp_path / "calib_stats").glob("*.safetensors"))) == 1
    # a restarted app (the in-memory cache empty) reads the file: no forward pass, the same numbers
    cache.input_norms.clear()
    monkeypatch.setattr("pruning.calib_stats.dense_layer_stats", fail)
    again = cache.input_norms("builtin", 2, 64)
    assert again.keys() == want.keys() and all(torch.equal(again[k], want[k]) for k in want)


def test_the_shared_model_is_never_hooked(tmp_path, monkeypatch, builtin):
    """The statistics and a layer's inputs are taken on a private copy: a hook on the shared model (the app's one
    model for every session and the read-ahead) fired in other threads' forwards and was deep-copied into a
    leaderboard's model, where it failed ("leaderboard failed: <id>")."""
    from webapp import cache

    monkeypatch.setenv("SPL_CACHE_DIR", str(tmp_path))
    shared = {id(m) for m in cache.load_model_cached("builtin").model.modules()}
    hooked = []
    real = torch.nn.Module.register_forward_pre_hook

    def spy(self, *args, **kwargs):
        hooked.append(id(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "register_forward_pre_hook", spy)
    cache.input_norms.clear()
    norms = cache.input_norms("builtin", 2, 64)
    W, X = cache.layer_inputs("builtin", "model.layers.3.mlp.up_proj", 2, 64)
    assert len(norms) == 210 and X.shape[-1] == W.shape[1] == 576
    assert hooked and not shared & set(hooked)


def test_read_ahead_serves_the_allocation_labs_owl_call(tmp_path, monkeypatch, builtin):
    """warm_model (started once the analysis is shown) computes OWL's ratios under the very cache key the Allocation
    lab's OWL curve asks for (cache.cached_allocation → calibration_signal), in a thread of lower priority."""
    from pruning.allocation import owl_outlier_ratios
    from pruning.block_loop import collect_input_norms
    from pruning.evaluation.data import get_calibration
    from spectra.weights import iter_model_weights
    from webapp import cache, read_ahead
    from webapp.state import DEFAULTS

    assert cache.WARM_GRANULARITY == DEFAULTS["al_gran"]
    monkeypatch.setenv("SPL_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cache, "WARM_CALIBRATION", (2, 64))  # the defaults' 16 × 256 would take a minute here
    for f in (cache.owl_ratios, cache.calibration_signal, cache.input_norms):
        f.clear()
    niceness = []
    real = read_ahead.background_priority

    def lowered():  # the warm thread's niceness before and after
        niceness.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        real()
        niceness.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    monkeypatch.setattr(read_ahead, "background_priority", lowered)
    cache.warm_model(None)
    for t in threading.enumerate():
        if t.name == read_ahead.THREAD_NAME:
            t.join(600)
    if sys.platform.startswith("linux"):
        assert niceness[1] == min(19, niceness[0] + read_ahead.BACKGROUND_NICE)
    monkeypatch.setattr("pruning.allocation.owl_outlier_ratios", fail)
    monkeypatch.setattr("pruning.calib_stats.dense_layer_stats", fail)
    got = cache.calibration_signal("builtin", "owl", 2, 64, DEFAULTS["al_gran"])  # the lab's call
    norms = collect_input_norms(builtin.model, get_calibration(builtin.tokenizer, nsamples=2, seqlen=64,
                                                                seed=cache.CALIB_SEED))
    weights = {info.longname: w for info, w in iter_model_weights(builtin.model)}
    assert got == owl_outlier_ratios(weights, norms, granularity=DEFAULTS["al_gran"])


def test_lambda_effect_allocations_serve_the_curves(analysis, monkeypatch):
    """The λ-effect chart computes AlphaPruning at λ = 0, 0.05, …, 1; the curves' allocation at a slider value
    (step 0.05) is then a cache hit, equal to allocate() on the analysis (its attrs, which the cache drops, change
    nothing)."""
    from pruning.allocation import allocate
    from pruning.settings import AllocationSettings
    from webapp import cache
    from webapp.widgets import default_of

    lo, hi = default_of(AllocationSettings, "min_sparsity"), default_of(AllocationSettings, "max_sparsity")
    settings = dict(S=0.6, lam=0.3, mapping="linear", granularity="block", metric="alpha", lo=lo, hi=hi,
                    nsamples=16, seqlen=256, exclude_flagged=False)  # webapp.state.alloc_settings' keys
    key = ("test_app_cache", "peak")
    cache.cached_allocation.clear()
    cache.lambda_range_chart.clear()
    assert cache.lambda_range_chart(analysis, key, None, tuple(sorted((k, v) for k, v in settings.items()
                                                                      if k != "lam"))) is not None
    monkeypatch.setattr(cache, "allocate", fail)
    for lam in (0.35, 0.5, 0.95):
        got = cache.cached_allocation(analysis, key, None, "alphapruning",
                                      cache.method_settings("alphapruning", {**settings, "lam": lam}))
        want = allocate(analysis.drop(columns="evals"), "alphapruning", 0.6, lam=lam, min_sparsity=lo,
                        max_sparsity=hi)
        pd.testing.assert_frame_equal(got, want)
        assert got.attrs == want.attrs
    with pytest.raises(AssertionError, match="recomputed"):  # a λ off the chart's grid is computed
        cache.cached_allocation(analysis, key, None, "alphapruning",
                                cache.method_settings("alphapruning", {**settings, "lam": 0.33}))


def test_read_ahead_pauses_while_pages_start_running(monkeypatch):
    """Between two decoder blocks the read-ahead waits until no page has started for QUIET_S seconds (a burst of λ
    steps keeps the cores), never longer than its limit, not at all while a page waits for it, and it stops at exit
    (a daemon thread inside torch at finalisation aborts Python)."""
    import time

    from webapp import read_ahead

    monkeypatch.setattr(read_ahead, "QUIET_S", 0.4)
    read_ahead.page_started()
    t0 = time.monotonic()
    read_ahead.yield_to_pages()
    assert 0.35 <= time.monotonic() - t0 < 2.0
    read_ahead.page_started()
    t0 = time.monotonic()
    read_ahead.yield_to_pages(limit_s=0.1)
    assert time.monotonic() - t0 < 0.35
    read_ahead.page_started()
    t0 = time.monotonic()
    with read_ahead.waiting():  # a page needs the result: no pause
        read_ahead.yield_to_pages()
    assert time.monotonic() - t0 < 0.1
    time.sleep(0.45)
    t0 = time.monotonic()
    read_ahead.yield_to_pages()  # quiet by now: no wait
    assert time.monotonic() - t0 < 0.1
    stopped = threading.Event()
    stopped.set()
    monkeypatch.setattr(read_ahead, "_STOP", stopped)
    with pytest.raises(read_ahead.ReadAheadStopped):
        read_ahead.yield_to_pages()


RACE = """
import threading
from webapp.imports import import_transformers
errors, gate = [], threading.Barrier(4)
def first_run():  # what each session's first script run does: app.py's call, then the pages' imports
    gate.wait()
    try:
        import_transformers()
        from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401
    except Exception as exc:
        errors.append(repr(exc))
threads = [threading.Thread(target=first_run) for _ in range(4)]
[t.start() for t in threads]
[t.join() for t in threads]
print(len(errors), errors[:1])
"""


def test_sessions_opened_together_import_transformers_one_at_a_time():
    """Four threads importing transformers' lazy names at once in a fresh process failed in one of them in 2 of 3
    tries ("cannot import name 'AutoModelForCausalLM'": three of four browser sessions opened together showed it);
    through ``webapp.imports.import_transformers`` (app.py calls it first) none fails."""
    import subprocess
    from pathlib import Path

    for _ in range(3):
        r = subprocess.run([sys.executable, "-c", RACE], capture_output=True, text=True, timeout=300,
                           cwd=str(Path(__file__).resolve().parent.parent))
        assert r.returncode == 0, r.stderr[-2000:]
        assert r.stdout.split()[0] == "0", r.stdout


PRELOAD = """
import os, sys, time
assert "OMP_WAIT_POLICY" not in os.environ
from webapp import preload
assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE" and "torch" not in sys.modules  # before anything loads torch
t0 = time.perf_counter()
preload.wait()  # nothing started: returns at once
assert time.perf_counter() - t0 < 0.5 and "torch" not in sys.modules
preload.start()
preload.wait()
from webapp import imports
print(all(m in sys.modules for m in ("torch", "pandas", "webapp.state", "webapp.figures", "transformers")),
      imports._IMPORTED.is_set())
"""


def test_preload_imports_the_app_modules_and_app_waits_for_it():
    """``python -m webapp.launch`` (make app) starts the app's imports with the server; :func:`webapp.preload.wait`
    returns at once when none was started and once they are done otherwise (transformers' names included); importing
    it sets torch's passive OpenMP waiting first (the launcher's process loads torch before app.py runs)."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}  # as a shell that never set it
    r = subprocess.run([sys.executable, "-c", PRELOAD], capture_output=True, text=True, timeout=300, cwd=str(root),
                       env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["True", "True"], r.stdout
    app = (root / "app.py").read_text()
    assert app.index("preload.wait()") < app.index("import streamlit")  # before the app's own imports
    assert "-m webapp.launch run app.py" in (root / "Makefile").read_text()
