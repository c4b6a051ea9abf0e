"""Benchmark: LAMP's compact scores (``pruning.allocation.LampScores``) against the full float64 score arrays
(``lamp_scores_sorted``, the representation before), same weights, same threshold fits.

Each side runs in a fresh process on the built-in model's 210 block matrices (two threads, as
``pruning.allocation.methods.threshold`` builds them): the seconds to build every matrix's scores, the growth of
the process's peak RSS while building (the weights are read once before, so their pages are already counted), and
the seconds of ``threshold_fit`` at three settings. The parent checks that both give the same sparsities, threshold
and note at every setting. Run: ``python bench/bench_lamp_scores.py`` (nothing else running; it prints the
first-touch rate of fresh memory, which moves the build times on a VM).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from memory_probe import describe as memory_state  # noqa: E402  (bench/ is sys.path[0])

#: (S, min sparsity, max sparsity) of the fits
SETTINGS = [(0.6, 0.0, 1.0), (0.7, 0.0, 0.99), (0.5, 0.3, 0.7)]

CHILD = """
import json, resource, sys, time
from concurrent.futures import ThreadPoolExecutor
sys.path.insert(0, {root!r})
from spectra.models import load_model
from spectra.weights import iter_model_weights
from pruning.allocation.mappings import LampScores, lamp_scores_sorted, threshold_fit
build = {{"compact": LampScores, "full": lamp_scores_sorted}}[sys.argv[1]]
W = {{i.longname: w for i, w in iter_model_weights(load_model("builtin").model)}}
for w in W.values():  # read every weight once: a file-mapped weight's pages then count before, not during
    float(w.sum())
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
r0, t0 = rss(), time.perf_counter()
with ThreadPoolExecutor(2) as pool:
    scores = list(pool.map(build, W.values()))
out = {{"build_s": time.perf_counter() - t0, "peak_growth_bytes": rss() - r0, "fits": []}}
for S, lo, hi in {settings!r}:
    t = time.perf_counter()
    sp, thr, note = threshold_fit(scores, S, lo, hi, list(W))
    out["fits"].append({{"s": time.perf_counter() - t, "sparsity": sp.tolist(), "t": thr, "note": note}})
print("RESULT " + json.dumps(out))
"""


def run(kind: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT), settings=SETTINGS), kind],
                          capture_output=True, text=True, check=True)
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def main() -> None:
    print(f"{memory_state()}")
    res = {kind: run(kind) for kind in ("full", "compact")}
    for a, b, (S, lo, hi) in zip(res["full"]["fits"], res["compact"]["fits"], SETTINGS):
        if (a["sparsity"], a["t"], a["note"]) != (b["sparsity"], b["t"], b["note"]):
            raise SystemExit(f"the two representations differ at S={S} [{lo}, {hi}]")
    print("identical sparsities, thresholds and notes at every setting")
    print(f"{'scores':28s} {'build s':>8s} {'peak RSS growth GiB':>20s} {'fit s (3 settings)':>20s}")
    for kind, label in (("full", "float64 arrays (before)"), ("compact", "LampScores")):
        r = res[kind]
        fits = " / ".join(f"{f['s']:.2f}" for f in r["fits"])
        print(f"{label:28s} {r['build_s']:8.2f} {r['peak_growth_bytes'] / 2**30:20.2f} {fits:>20s}")


if __name__ == "__main__":
    main()
