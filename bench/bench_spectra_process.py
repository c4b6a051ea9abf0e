"""Benchmark: the whole ``python -m spectra`` command against a whole weightwatcher script, same run, same matrices.

The end-to-end speed claim against weightwatcher. Every measurement is a fresh process (imports, model reading,
eigenvalues, fits, writing included):

* ours: ``python -m spectra --xmin ks --no-cache --quiet --out F.csv`` on the built-in model (210 block matrices,
  streamed from the cached safetensors), one thread (``OMP_NUM_THREADS=1``), and the same with ``--workers 2`` (matrix
  level parallelism, reported apart: it uses two cores);
* peer: a script that loads the same model with transformers (``spectra.models.load_model``, the one loader) and
  runs weightwatcher ``analyze()`` (its default fit = our ``ks`` rule) on the 30 decoder blocks, one thread;
* floor: a process that imports torch + numpy, reads the same safetensors and runs only the float64 eigenvalue
  routine ``analyze`` uses (fp64 copy + ``dsyrk`` Gram + LAPACK ``eigvalsh``) on every matrix.

Rounds are interleaved (ours, ours ×2, peer, floor in every round); each figure is the best of the rounds: wall
seconds and CPU seconds (user + system of the child). α, xmin and D of ours and the peer are compared matrix by
matrix (relative difference ≤ 1e-6). Ours also reports its phases (``spectra_timings`` line: imports, reading,
eigenvalues, fits, writing; the rest of the process wall time is interpreter start-up, the CLI's own imports and
exit). Run: ``python bench/bench_spectra_process.py [ROUNDS]`` (default 3) on a quiet machine.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 3
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
       "PYTHONPATH": str(ROOT), "SPL_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}

PEER = r"""
import json, logging, sys, warnings
warnings.simplefilter("ignore")
import torch
torch.set_num_threads(1)
import weightwatcher as ww
from spectra.models import load_model
logging.getLogger("weightwatcher").setLevel(logging.ERROR)
lm = load_model(None)
details = ww.WeightWatcher(model=lm.model.model.layers).analyze()
rows = [{"longname": "model.layers." + str(n), "alpha": float(a), "xmin": float(x), "D": float(d)}
        for n, a, x, d in zip(details["longname"], details["alpha"], details["xmin"], details["D"])]
json.dump(rows, open(sys.argv[1], "w"))
"""

FLOOR = r"""
import sys
import numpy as np, torch
torch.set_num_threads(1)
from safetensors import safe_open
from scipy.linalg import blas
from spectra.models import builtin_model_dir, weight_files
from spectra.weights import checkpoint_matrices, read_config, safetensors_header
d = builtin_model_dir()
(f,) = weight_files(d)  # the built-in model: one safetensors file
keys = [k for _, k in checkpoint_matrices(safetensors_header(f), read_config(d))]  # the 210 matrices analyze reads
with safe_open(str(f), "pt") as fh:
    for k in keys:
        X = fh.get_tensor(k).to(torch.float64).numpy()
        G = blas.dsyrk(1.0, X.T, trans=int(X.shape[0] < X.shape[1]), lower=1)
        np.linalg.eigvalsh(G, UPLO="L")
print(len(keys))
"""


def run(cmd: list[str]) -> tuple[float, float, str]:
    """Wall and CPU seconds (user + system of the finished child) of one fresh process; its stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    out = subprocess.run(cmd, env=ENV, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise RuntimeError(f"{cmd[:4]} failed: {out.stderr[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), out.stdout


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="spl-bench-"))
    ours_csv, ours2_csv, peer_json = tmp / "ours.csv", tmp / "ours2.csv", tmp / "peer.json"
    cmds = {
        "ours (1 thread)": [sys.executable, "-m", "spectra", "--xmin", "ks", "--no-cache", "--quiet", "--timings",
                            "--out", str(ours_csv), "--overwrite"],
        "ours --workers 2": [sys.executable, "-m", "spectra", "--xmin", "ks", "--no-cache", "--quiet", "--workers",
                             "2", "--out", str(ours2_csv), "--overwrite"],
        "weightwatcher script (1 thread)": [sys.executable, "-c", PEER, str(peer_json)],
        "floor: read + fp64 Gram + eigvalsh": [sys.executable, "-c", FLOOR],
    }
    run([sys.executable, "-c", FLOOR])  # warm the page cache
    best: dict = {}
    phases = None
    for _ in range(ROUNDS):
        for name, cmd in cmds.items():
            wall, cpu, out = run(cmd)
            bw, bc = best.get(name, (float("inf"), float("inf")))
            best[name] = (min(bw, wall), min(bc, cpu))
            if name == "ours (1 thread)":
                line = [ln for ln in out.splitlines() if ln.startswith("spectra_timings ")]
                if line and (phases is None or wall <= bw):
                    phases = json.loads(line[-1].split(" ", 1)[1])
                    phases["interpreter start-up, numpy/pandas, exit"] = wall - sum(phases.values())
    from spectra.results import load_results

    ours = load_results(ours_csv)
    ours2 = load_results(ours2_csv)
    peer = pd.DataFrame(json.loads(peer_json.read_text()))
    m = ours.merge(peer, on="longname", suffixes=("", "_ww"))
    rel = {c: (np.abs(m[c] - m[c + "_ww"]) / np.abs(m[c + "_ww"])).to_numpy() for c in ("alpha", "xmin", "D")}
    same = int(((rel["alpha"] <= 1e-6) & (rel["xmin"] <= 1e-6) & (rel["D"] <= 1e-6)).sum())
    workers_same = bool(np.array_equal(ours[["alpha", "xmin", "D"]].to_numpy(), ours2[["alpha", "xmin",
                                                                                       "D"]].to_numpy(),
                                       equal_nan=True))
    import torch

    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; best of {ROUNDS} interleaved "
          f"rounds; torch {torch.__version__}, numpy {np.__version__}")
    pw, pc = best["weightwatcher script (1 thread)"]
    fw, fc = best["floor: read + fp64 Gram + eigvalsh"]
    for name, (w, c) in best.items():
        print(f"  {name:38s} wall {w:6.2f} s  cpu {c:6.2f} s   peer/this: wall {pw / w:5.2f}x  cpu {pc / c:5.2f}x   "
              f"this/floor: wall {w / fw:4.2f}  cpu {c / fc:4.2f}")
    print(f"alpha, xmin, D identical to weightwatcher (rel ≤ 1e-6): {same}/{len(m)} matrices "
          f"(max rel |Δα| {np.nanmax(rel['alpha']):.1e}); --workers 2 identical to 1 thread: {workers_same}")
    if phases:
        print("phases of ours (1 thread, best round): " + ", ".join(f"{k} {v:.2f} s" for k, v in phases.items()))


if __name__ == "__main__":
    main()
