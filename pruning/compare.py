"""Every allocation tuned on held-out text with the same candidate budget, side by side (``python -m pruning compare``).

For each method of ``allocations``: its first tunable parameter (from the allocation registry) is searched with
:func:`pruning.tune.tune` on held-out C4 (one-shot from the cached dense statistics; ``uniform`` has nothing to tune);
with ``final`` the model is then pruned sequentially (the reference loop) at the tuned value and scored on the same
held-out windows and on WikiText-2 test. Test text never chooses anything. One row per method (tuned value,
held-out perplexity, test perplexity, prune time, settings); the JSON is written atomically after every method and a
rerun with the same settings keeps the finished rows (resumable).

``sensitivity`` (the measured cost table of :mod:`pruning.sensitivity`, named by ``tune.sensitivity_table``,
``--sensitivity-table``) is tuned like AlphaPruning's λ over its spec's range; its row is marked ``data_driven`` (the
table was measured on held-out text) and the resume key holds the table's identity (path and hash of its costs).
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from pruning.allocation.registry import METHOD_LABELS, TUNABLE_METHODS, check_method, get_allocation
from pruning.sensitivity_table import HOW_TO_MEASURE
from pruning.tune import TuneSettings, final_prune, tune

__all__ = ["CompareJob", "CompareSettings", "compare", "parse_allocations"]

DEFAULT_ALLOCATIONS = ("uniform", "alphapruning", "farms", "owl", "dlp", "atp")


def parse_allocations(text) -> tuple:
    """``"uniform,alphapruning"`` (or a list) → checked method names; one-line ValueError naming ``--allocations``."""
    names = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if str(t).strip()]
    if not names:
        raise ValueError("--allocations needs at least one method, e.g. uniform,alphapruning,owl")
    for n in names:
        try:
            check_method(n)
        except ValueError as exc:
            raise ValueError(f"--allocations: {exc}") from None
        if n != "uniform" and not get_allocation(n).tunable:
            raise ValueError(f"--allocations: {n!r} has no parameter to tune; compare uniform or a method with one "
                             f"({', '.join(TUNABLE_METHODS)})")
    return tuple(dict.fromkeys(names))


@dataclass
class CompareSettings:
    """The methods compared, the tuning they share (:class:`pruning.tune.TuneSettings`, whose ``allocation`` is set
    per method) and the final sequential prune (``final``; WikiText-2 test windows of ``test_seqlen`` tokens, the
    first ``test_windows`` or all)."""

    allocations: tuple = DEFAULT_ALLOCATIONS
    tune: TuneSettings = field(default_factory=TuneSettings)
    final: bool = False
    test_seqlen: int = 512
    test_windows: Optional[int] = None

    def __post_init__(self) -> None:
        self.allocations = parse_allocations(self.allocations)
        reads = [m for m in self.allocations if get_allocation(m).reads == "table"]
        if reads and not self.tune.sensitivity_table:
            raise ValueError(f"--allocations {reads[0]} reads a measured table; pass --sensitivity-table sens.parquet "
                             f"(measure it with {HOW_TO_MEASURE})")
        if self.tune.sensitivity_table and not reads:
            raise ValueError("--sensitivity-table is read by the sensitivity allocation only; add sensitivity to "
                             "--allocations or drop the table")

    def key(self) -> dict:
        """What changes a row's numbers (the resume key): the tuning's key without its allocation, the budget and
        the final evaluation."""
        k = self.tune.key()
        k.pop("allocation", None)
        return {**k, "candidates": self.tune.candidates, "lams": self.tune.lams, "owl_Ms": list(self.tune.owl_Ms),
                "search": self.tune.search, "final": self.final, "test_seqlen": self.test_seqlen,
                "test_windows": self.test_windows}


def _tune_settings(settings: CompareSettings, method: str) -> TuneSettings:
    """The tuning of one method: the shared settings with its allocation (the measured table for the method that
    reads it only)."""
    table = settings.tune.sensitivity_table if get_allocation(method).reads == "table" else None
    if method == "uniform":  # the baseline only: ATP reads just the depth, and β = 0 is uniform (one candidate)
        return dataclasses.replace(settings.tune, allocation="atp", lams=[0.0], search="grid", sensitivity_table=None)
    return dataclasses.replace(settings.tune, allocation=method, sensitivity_table=table)


def _load(path: Optional[Path], key: dict, log: Callable[[str], None]) -> dict:
    from spectra.results import jsonable

    if path is None or not path.exists():
        return {}
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        raise ValueError(f"{path} exists but is not a compare JSON; choose another --out") from None
    if old.get("key") != jsonable(key):
        raise ValueError(f"{path} holds a compare with other settings; choose another --out (or delete it)")
    log(f"resuming {path}: {len(old.get('rows', []))} method(s) finished")
    return old


def _method_row(lm, settings: CompareSettings, method: str, baseline: Optional[dict], log,
                uniform_row: Optional[dict] = None) -> tuple[dict, dict]:
    """(row, baseline) of one method: tuned on held-out text, then (``final``) pruned sequentially and scored (a
    method whose tuned allocation is uniform sparsity takes ``uniform_row``'s final prune: the same masks)."""
    ts = _tune_settings(settings, method)
    t0 = time.perf_counter()
    if method == "uniform" and baseline is not None:
        res = {"best": {"lam": "uniform", "owl_M": None, "ppl": baseline["uniform"]["ppl"]}, "rows": []}
    else:
        res = tune(lm, ts, None, log=lambda m: log(f"  [{method}] {m}"), baseline=baseline)
        baseline = {"dense": res["dense"], "uniform": res["uniform"]}
    best = dict(res["best"]) if method != "uniform" else {"lam": "uniform", "owl_M": None,
                                                           "ppl": baseline["uniform"]["ppl"]}
    spec = get_allocation(method)
    row = {"method": method, "label": METHOD_LABELS[method], "data_driven": spec.reads == "table",
           "param": spec.params[0].name if spec.params else None,
           "tuned_value": None if method == "uniform" else best["lam"], "owl_M": best.get("owl_M"),
           "heldout_ppl_one_shot": best["ppl"], "dense_heldout_ppl": baseline["dense"]["ppl"],
           "candidates": [] if method == "uniform" else
           [{"value": r["lam"], "owl_M": r.get("owl_M"), "ppl": r["ppl"]} for r in res["rows"]],
           "tune_seconds": round(time.perf_counter() - t0, 2)}
    if "warnings" in res:
        row["warnings"] = res["warnings"]
    if settings.final and best.get("same_as") == "uniform" and uniform_row and "test_ppl" in uniform_row:
        final_keys = ("heldout_ppl", "test_ppl", "test_windows", "test_seqlen", "prune_seconds", "achieved_sparsity")
        row.update({k: uniform_row[k] for k in final_keys}, settings=uniform_row.get("settings"),
                   final_same_as="uniform")
        log(f"  [{method}] tuned allocation is uniform sparsity: the uniform row's sequential prune and scores")
    elif settings.final:
        fin = final_prune(lm, ts, best, settings.test_seqlen, settings.test_windows, baseline=False,
                          log=lambda m: log(f"  [{method}] {m}"))["chosen"]
        row.update(heldout_ppl=fin["val_ppl"], test_ppl=fin["test_ppl"], test_windows=fin["test_windows"],
                   test_seqlen=fin["test_seqlen"], prune_seconds=fin["prune_seconds"],
                   achieved_sparsity=fin["achieved_sparsity"], settings=fin["settings"])
    return row, baseline


def compare(lm, settings: CompareSettings, out: Optional[str] = None, log: Callable[[str], None] = print,
            progress_cb: Optional[Callable[[dict], None]] = None) -> dict:
    """Tune (and with ``settings.final`` prune and score) every method of ``settings.allocations`` on ``lm``;
    returns (and writes to ``out`` after every method) ``{"key", "settings", "versions", "baseline", "rows"}``.
    ``progress_cb(row)`` after every finished method (the app's leaderboard)."""
    from pruning.report import package_versions, write_json_atomic

    settings.tune.validate()
    path = Path(out) if out else None
    key = settings.key()
    old = _load(path, key, log)
    result = {"key": key, "settings": {**key, "allocations": list(settings.allocations)},
              "versions": package_versions(), "mode": "tuned one-shot on held-out C4; final = sequential",
              "baseline": old.get("baseline"), "rows": list(old.get("rows", []))}
    finished = {r["method"] for r in result["rows"]}
    for method in settings.allocations:
        if method in finished:
            log(f"[{method}] done already, kept")
            continue
        log(f"[{method}] tuning {get_allocation(method).label} ({settings.tune.candidates} candidates)")
        uniform_row = next((r for r in result["rows"] if r["method"] == "uniform"), None)
        row, result["baseline"] = _method_row(lm, settings, method, result["baseline"], log, uniform_row)
        result["rows"].append(row)
        if path is not None:
            write_json_atomic(path, result)
        if progress_cb is not None:
            progress_cb(row)
        test = f", test ppl {row['test_ppl']:.3f}" if "test_ppl" in row else ""
        log(f"[{method}] tuned {row['param']}={row['tuned_value']}: held-out ppl (one-shot) "
            f"{row['heldout_ppl_one_shot']:.3f}{test}")
    return result


class CompareJob:
    """:func:`compare` in a background thread (the app's leaderboard): ``rows`` grows as methods finish,
    ``log`` holds the progress lines, ``error`` the one-line failure, ``done`` is set at the end. ``load`` returns
    the model to prune (a fresh copy: compare prunes and restores it in place)."""

    def __init__(self, load: Callable[[], object], settings: CompareSettings, out: Optional[str] = None):
        import threading

        self.settings, self.out = settings, out
        self.rows: list = []
        self.log: list = []
        self.error: Optional[str] = None
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(load,), daemon=True, name="compare")

    def start(self) -> CompareJob:
        self._thread.start()
        return self

    def _run(self, load) -> None:
        try:
            compare(load(), self.settings, self.out, log=self.log.append, progress_cb=self.rows.append)
        except Exception as exc:  # shown in the app as one line
            self.error = " ".join(str(exc).split()) or type(exc).__name__
        finally:
            self.done.set()

    def table(self):
        """The finished rows as a DataFrame (method, tuned value, held-out and test perplexity, ...)."""
        import pandas as pd

        cols = ["label", "param", "tuned_value", "heldout_ppl_one_shot", "heldout_ppl", "test_ppl", "prune_seconds",
                "tune_seconds"]
        return pd.DataFrame([{c: r.get(c) for c in cols} for r in self.rows], columns=cols)
