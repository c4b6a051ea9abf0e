"""Benchmark: spectra.analyze vs weightwatcher.analyze on the built-in model's 210 block matrices, one thread.

Prints, for the same matrices in the same run:
  * wall and CPU time of ``spectra.analyze`` (streaming from safetensors, ``cache=False``) and of weightwatcher's
    ``analyze()`` on the in-memory blocks — for our ``ks`` rule vs weightwatcher's default fit, and our
    ``peak_ref`` rule vs weightwatcher ``fix_fingers='xmin_peak', pl_package='powerlaw'`` — their ratio, and whether
    the alphas are identical (relative difference ≤ 1e-6);
  * the eigenvalue floor: the bare float64 eigenvalue routine of every matrix with the weights already in memory
    (fp64 copy + ``dsyrk`` Gram + LAPACK ``eigvalsh``, exactly what ``analyze`` calls), the ``eigvalsh`` calls
    alone (Gram precomputed), and the plain torch route (``W.T @ W`` + ``torch.linalg.eigvalsh``) for reference;
  * peak memory (RSS high-water mark ``VmHWM`` of /proc/self/status) of a fresh process that streams the analysis, of a
    fresh process that only imports the same modules, and of one that loads the whole model then analyses it,
    next to the working set of the largest matrix.

CPU time (``time.process_time``) is reported next to wall time because the benchmark machine may be shared: with
one thread, CPU time is the better estimate of the work done. Every timing is the best of ``REPEATS`` rounds; each
round runs every measurement once (floors, ours, weightwatcher's, interleaved) so that load changes hit all alike.
Run: ``python bench/bench_spectra.py [REPEATS]`` (default 3).
"""
from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
           "VECLIB_MAXIMUM_THREADS"):
    os.environ[_v] = "1"

import io  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from contextlib import redirect_stderr, redirect_stdout  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


REPEATS = int(sys.argv[1]) if len(sys.argv) > 1 else 3


def timed_once(fn, *args, **kwargs):
    w, c = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - w, time.process_time() - c


def quiet(fn, *a, **k):
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*a, **k)


_CHILD = r"""
import os, sys, json
for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"): os.environ[v] = "1"
sys.path.insert(0, {root!r})
import torch; torch.set_num_threads(1)
import spectra.analyze, spectra.weights, spectra.models, transformers  # the same imports in every mode
mode = {mode!r}
if mode == "prefix":  # what spectra.weights needs to name checkpoint keys: imports the model's modeling module
    import json as _j
    spectra.weights.base_prefix(_j.loads((spectra.models.builtin_model_dir() / "config.json").read_text()))
elif mode == "stream":
    df = spectra.analyze.analyze(None, progress=False, cache=False)
elif mode == "memory":
    lm = spectra.models.load_model()
    df = spectra.analyze.analyze(lm.model, progress=False, cache=False)
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]  # kB, reset at exec
print(json.dumps({{"maxrss_mb": int(hwm) / 1024}}))
"""


def child_rss(mode: str) -> float:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", _CHILD.format(root=root, mode=mode)], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["maxrss_mb"]


def main() -> None:
    import weightwatcher as ww

    from spectra.analyze import analyze
    from spectra.esd import gram
    from spectra.models import builtin_model_dir, files_sha256, load_model, weight_files
    from spectra.weights import iter_model_weights

    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    wdir = builtin_model_dir()
    files_sha256(weight_files(wdir))  # memoised content hash (computed once per file version)
    lm = load_model()
    mats = [(info.longname, w) for info, w in iter_model_weights(lm.model)]
    print(f"built-in model: {len(mats)} block matrices, torch threads = {torch.get_num_threads()}, best of {REPEATS}, "
          f"torch {torch.__version__}, numpy {np.__version__}, weightwatcher {ww.__version__}", flush=True)

    # eigenvalue floor ----------------------------------------------------------------------------------------
    from scipy.linalg import blas

    from spectra.esd import _esd_cpu64

    def floor_full():  # the bare eigenvalue routine analyze() uses: fp64 copy, dsyrk Gram, LAPACK syevd
        return [_esd_cpu64(w) for _, w in mats]

    def torch_floor():  # the plain torch route: fp64 copy, W^T W product, torch eigvalsh (MKL)
        return [torch.linalg.eigvalsh(gram(w.double())) for _, w in mats]

    grams = [blas.dsyrk(1.0, w.double().numpy().T, trans=int(w.shape[0] < w.shape[1]), lower=1) for _, w in mats]

    def floor_eig_only(grams=grams):  # bound now: the list is deleted after the timings
        return [np.linalg.eigvalsh(g, UPLO="L") for g in grams]

    floor_full()  # warm-up (LAPACK workspace, page cache)
    for rule in ("ks", "peak_ref", "peak"):
        analyze(None, xmin_rule=rule, progress=False, cache=False)  # warm-up
    watcher = ww.WeightWatcher(model=lm.model.model.layers)
    pairs = [("ks", {}, "weightwatcher default fit"),
             ("peak_ref", {"fix_fingers": "xmin_peak", "pl_package": "powerlaw"}, "weightwatcher xmin_peak (powerlaw)")]
    best: dict = {}
    outs: dict = {}

    def record(key, fn, *a, **k):
        out, w, c = timed_once(fn, *a, **k)
        bw, bc = best.get(key, (float("inf"), float("inf")))
        best[key] = (min(bw, w), min(bc, c))
        outs[key] = out

    for _ in range(REPEATS):  # every measurement in every round, interleaved; best of the rounds for each
        record("floor", floor_full)
        record("eig_only", floor_eig_only)
        record("torch_floor", torch_floor)
        for rule, kwargs, _label in pairs:
            record(("ours", rule), analyze, None, xmin_rule=rule, progress=False, cache=False)
            record(("ww", rule), quiet, watcher.analyze, **kwargs)
        record(("ours", "peak"), analyze, None, progress=False, cache=False)
    del grams
    (fw, fc), (ew, ec), (tw, tc) = best["floor"], best["eig_only"], best["torch_floor"]
    print(f"eigenvalue floor, {len(mats)} matrices: fp64 copy + dsyrk Gram + eigvalsh: wall {fw:.2f} s  cpu {fc:.2f} s;"
          f"  eigvalsh alone: wall {ew:.2f} s  cpu {ec:.2f} s;  torch (W^T W + eigvalsh): wall {tw:.2f} s  "
          f"cpu {tc:.2f} s", flush=True)
    for rule, _kwargs, label in pairs:
        ours, ref = outs[("ours", rule)], outs[("ww", rule)]
        (ow, oc), (ww_w, ww_c) = best[("ours", rule)], best[("ww", rule)]
        ref = ref.assign(longname="model.layers." + ref["longname"])
        m = ours.merge(ref[["longname", "alpha", "xmin", "D"]], on="longname", suffixes=("", "_ww"))
        rel = {c: np.abs(m[c] - m[c + "_ww"].astype(float)) / np.abs(m[c + "_ww"].astype(float))
               for c in ("alpha", "xmin", "D")}
        same = int(((rel["alpha"] <= 1e-6) & (rel["xmin"] <= 1e-6) & (rel["D"] <= 1e-6)).sum())
        print(f"\n[{rule} vs {label}] matrices compared: {len(m)}; alpha, xmin, D identical (rel ≤ 1e-6): "
              f"{same}/{len(m)}; max rel |Δalpha| = {rel['alpha'].max():.2e}")
        print(f"  spectra.analyze (stream):   wall {ow:7.2f} s   cpu {oc:7.2f} s")
        print(f"  weightwatcher.analyze:      wall {ww_w:7.2f} s   cpu {ww_c:7.2f} s")
        print(f"  speed-up (ww / ours):       wall {ww_w / ow:6.2f}x   cpu {ww_c / oc:6.2f}x")
        print(f"  ours / floor (copy+Gram+eigvalsh): wall {ow / fw:5.2f}   cpu {oc / fc:5.2f}")
        print(f"  ours / eigvalsh calls alone:       wall {ow / ew:5.2f}   cpu {oc / ec:5.2f}", flush=True)
    pw, pc = best[("ours", "peak")]
    print(f"\nspectra.analyze default rule (peak): wall {pw:.2f} s  cpu {pc:.2f} s  "
          f"(ours / floor: cpu {pc / fc:.2f}, wall {pw / fw:.2f})", flush=True)

    # memory --------------------------------------------------------------------------------------------------
    M = max(min(w.shape) for _, w in mats)
    big = max(mats, key=lambda t: t[1].numel())[1]
    n, m = big.shape
    working_mb = (n * m * 4 + n * m * 8 + M * M * 8 * 2 + 64 * M * 8 * 3) / 2**20  # W f32, W f64, Gram+LAPACK, KS
    base = child_rss("imports")
    prefix = child_rss("prefix")
    stream = child_rss("stream")
    memory = child_rss("memory")
    print(f"\npeak RSS (VmHWM) of fresh processes: imports only {base:.0f} MB; + transformers modeling-module import "
          f"done by spectra.weights.base_prefix {prefix:.0f} MB; streaming analysis {stream:.0f} MB "
          f"(+{stream - base:.0f} MB over imports, +{stream - prefix:.0f} MB over imports incl. modeling module); "
          f"load whole model + analyse {memory:.0f} MB (+{memory - base:.0f} MB)")
    print(f"largest matrix {n}x{m}: working set ≈ {working_mb:.1f} MB (fp32 W + fp64 copy + Gram/LAPACK + KS block); "
          f"streaming peak − (working set + 400 MB) = {stream - working_mb - 400:+.0f} MB", flush=True)


if __name__ == "__main__":
    main()
