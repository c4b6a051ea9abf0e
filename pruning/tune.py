"""Tune an allocation's hyperparameter (AlphaPruning's λ, OWL's λ and M) on held-out text, in seconds per candidate.

The dense calibration statistics are collected once (and cached, :mod:`pruning.calib_stats`); every candidate is
then an allocation (milliseconds), a one-shot prune from those statistics ("dense statistics" mode, no forward
pass) and a perplexity on held-out windows. The held-out text is C4 validation documents 1000–1999 (the evaluation
split of :mod:`pruning.evaluation.data`): disjoint from the calibration documents (0–999) and from WikiText-2 test, on
which
final numbers are reported — the AlphaPruning and OWL codes tune on the test set; we never do.
:func:`final_prune` then runs the sequential (reference) prune at the chosen value and at uniform sparsity and scores
both on the same held-out windows (the one-shot/sequential gap) and on WikiText-2 test (reported apart).

Search: ``grid`` (every value given) or ``golden`` (golden-section search for the minimum over the range of the
values given, as many evaluations as values given; assumes one minimum). The JSON written after every candidate
(temporary name, then rename) holds the settings, versions, one row per candidate (``lam``, ``owl_M``, ``ppl``,
``seconds``, ...) and the chosen value; rerunning with the same settings skips the candidates already there.

``sensitivity`` (a measured cost table, :mod:`pruning.sensitivity`) is tuned like AlphaPruning's λ from the table
named by ``sensitivity_table`` (``--sensitivity-table``); the resume key holds the table's path and the hash of its
costs, a table measured on other weights is refused and one measured with another pruner or sparsity is warned about.
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

from pruning.allocation.registry import TUNABLE_METHODS, get_allocation
from pruning.calib_stats import TUNE_CALIBRATION, DenseWeights, dense_stats, prune_from_stats, stats_key
from pruning.pruners import DEFAULT_PRUNER, get_pruner, one_shot_pruners
from pruning.sensitivity_table import HOW_TO_MEASURE, check_table, table_costs, table_granularity, table_identity
from pruning.settings import AllocationSettings, CalibrationSettings
from spectra.options import check_options, option, same_as
from spectra.results import jsonable

__all__ = ["TuneSettings", "tune", "final_prune", "golden_points"]

TUNABLE = TUNABLE_METHODS  # every registered method with a tunable parameter
SEARCHES = ("grid", "golden")


@dataclass
class TuneSettings:
    """What is tuned and how it is scored (see the module docstring); checked on construction. The command line
    (``python -m pruning tune``) and the app's λ search are built from these fields and :attr:`calib`'s."""

    pruner: str = option(DEFAULT_PRUNER, "one-shot pruner (from the dense statistics)", choices=one_shot_pruners)
    allocation: str = option("alphapruning", "allocation to tune (its first tunable parameter, from the allocation "
                             "registry: λ for alphapruning/farms/stable_rank/sensitivity, OWL's λ (and M), DLP's α, "
                             "ATP's β)", choices=TUNABLE)
    sparsity: float = same_as(AllocationSettings, "sparsity", default=0.7)
    lams: Optional[list] = option(None, "candidates of the method's parameter (golden: their range and count); "
                                  "default: --candidates evenly spaced over the range its registry spec gives",
                                  kind=list, lo=0.0, hi=1.0, label="λ values")
    candidates: int = option(6, "candidates when --lams is not given (the same budget for every method)", lo=1,
                             flag="--candidates")
    owl_Ms: list = option(help="OWL's M candidates", kind=list, lo=0.0, flag="--owl-ms", default_factory=lambda: [5.0])
    search: str = option("grid", "grid: every value; golden: golden-section search over their range",
                         choices=SEARCHES)
    calib: CalibrationSettings = field(default_factory=lambda: TUNE_CALIBRATION)
    eval_dataset: str = option("c4", "held-out scoring text: c4 (validation documents 1000–1999) or ptb-valid; "
                               "never wikitext2 (test)", flag="--tune-dataset")
    eval_seqlen: Optional[int] = option(None, "held-out window length (default: the calibration's --seqlen)",
                                        kind=int, lo=1, flag="--tune-seqlen")
    eval_windows: int = option(8, "held-out windows per candidate", lo=1, flag="--max-windows",
                               label="held-out windows", ui={"lo": 1, "hi": 256})
    xmin_rule: str = same_as(AllocationSettings, "xmin_rule")
    max_sparsity: float = same_as(AllocationSettings, "max_sparsity")
    sensitivity_table: Optional[str] = option(None, "the measured table the sensitivity allocation reads (python -m "
                                              "pruning sensitivity MODEL --out sens.parquet)", kind=str,
                                              flag="--sensitivity-table", label="sensitivity table")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> TuneSettings:
        if self.allocation not in TUNABLE:
            raise ValueError(f"tune: allocation {self.allocation!r} (--allocation) has nothing to tune; choose one of: "
                             f"{', '.join(TUNABLE)}")
        if self.pruner not in one_shot_pruners():
            raise ValueError(f"tune: pruner {self.pruner!r} (--pruner) cannot prune from cached statistics; choose one "
                             f"of: {', '.join(one_shot_pruners())}")
        if self.eval_dataset in ("wikitext2", "wikitext"):
            raise ValueError("tune: never tune on the test set; score on held-out C4 (--tune-dataset c4) or PTB "
                             "validation (ptb-valid)")
        if not isinstance(self.calib, CalibrationSettings):
            raise TypeError(f"TuneSettings.calib must be a CalibrationSettings (got {type(self.calib).__name__})")
        check_options(self)
        if get_allocation(self.allocation).reads == "table" and not self.sensitivity_table:
            raise ValueError(f"tune: allocation {self.allocation!r} reads a measured table; pass --sensitivity-table "
                             f"sens.parquet (measure it with {HOW_TO_MEASURE})")
        if self.sensitivity_table:
            table_costs(self.sensitivity_table)  # exists, is a sensitivity table, finished (one line otherwise)
        if self.eval_seqlen is None:
            self.eval_seqlen = self.calib.seqlen
        if self.search == "golden" and len(self.lams or [0] * self.candidates) < 3:
            raise ValueError("tune: --search golden needs at least 3 λ values (their range and the budget)")
        return self

    def key(self) -> dict:
        """The settings that change a candidate's number (the resume key)."""
        d = asdict(self)
        for k in ("lams", "owl_Ms", "search", "candidates"):
            d.pop(k)
        d["calib"] = stats_key(self.calib, False)
        if self.sensitivity_table:  # which table: its path and the hash of its costs
            d["sensitivity_table"] = table_identity(self.sensitivity_table)
        else:  # absent, as in the keys written before the option existed
            d.pop("sensitivity_table")
        return d


def allocation_settings(settings: TuneSettings, value: float, M: Optional[float] = None) -> AllocationSettings:
    """The :class:`AllocationSettings` of one candidate: the method's first tunable parameter (its registry spec)
    at ``value`` (and OWL's M at ``M``), the tuning's target, bounds and xmin rule; for a method that reads a
    measured table, the table (``file``) and its granularity."""
    spec = get_allocation(settings.allocation)
    extra = {spec.params[0].name: float(value)}
    if M is not None:
        extra["owl_M"] = float(M)
    if spec.reads == "table":
        extra.update(file=settings.sensitivity_table, granularity=table_granularity(settings.sensitivity_table))
    return AllocationSettings(method=settings.allocation, sparsity=settings.sparsity, xmin_rule=settings.xmin_rule,
                              max_sparsity=settings.max_sparsity, **extra)


def candidate_values(settings: TuneSettings, base) -> list:
    """The values of the method's first tunable parameter to score: ``lams`` when given, else ``candidates`` values
    evenly spaced over the range of its registry spec (ATP's upper end depends on S and the number of blocks)."""
    if settings.lams:
        return [round(float(v), 6) for v in settings.lams]
    n_blocks = int(base["block"].nunique()) if "block" in base.columns else 1
    return get_allocation(settings.allocation).params[0].grid(settings.sparsity, n_blocks, settings.candidates)


def _allocation_inputs(model, settings: TuneSettings, stats, block_io=None) -> tuple:
    """(the table the method's allocation reads, {M or None: calibration signal}) — computed once before the search:
    spectral metrics for a metrics method; for a calibration method its signal from the dense statistics' input
    norms (once per OWL M), so that no candidate recomputes it and no second copy of the weights lives through the
    search; a streamed model (``block_io``) is read one block at a time (a block's signal reads only its own
    weights and norms)."""
    from pruning.blocks import block_linears, walk_blocks
    from spectra.weights import weight_table

    spec = get_allocation(settings.allocation)
    if spec.reads == "metrics":
        from spectra.analyze import AnalysisSettings, analyze

        source = model if block_io is None else block_io.directory  # streamed: spectra reads the shards
        metrics = analyze(source, AnalysisSettings(xmin_rule=settings.xmin_rule, **spec.analysis), progress=False)
        return metrics, {None: None}
    table = weight_table(model)
    table = table[table["block"] >= 0].reset_index(drop=True)
    if spec.reads == "table":  # the measured costs, read once
        return table, {None: table_costs(settings.sensitivity_table)}
    if not spec.needs_calibration:
        return table, {None: None}
    t0 = time.perf_counter()
    norms = {name: st.sq_norm for name, st in stats.layers.items()}
    Ms = [float(m) for m in settings.owl_Ms] if "owl_M" in {p.name for p in spec.params} else [None]
    per_M = {M: allocation_settings(settings, spec.params[0].default, M) for M in Ms}
    per_block = block_linears(model)
    if block_io is None:  # one call per M over every weight (the signal's own cost once per M, not per block)
        weights = {lin.longname: lin.get() for blk in per_block for lin in blk}  # (out, in)
        signals: dict = {M: spec.signal(weights, norms, per_M[M]) for M in Ms}
        del weights
    else:  # streamed: block by block as each is read (a block's signal reads only its own weights and norms)
        signals = {M: {} for M in Ms}
        for b, _ in walk_blocks(model, None, block_io):
            weights = {lin.longname: lin.get() for lin in per_block[b]}
            for M in Ms:
                signals[M].update(spec.signal(weights, {n: norms[n] for n in weights}, per_M[M]))
    signals["seconds"] = round(time.perf_counter() - t0, 3)
    return table, signals


def golden_points(lo: float, hi: float, f: Callable[[float], float], n: int) -> float:
    """Golden-section search for the minimiser of ``f`` on ``[lo, hi]`` with ``n`` evaluations (n ≥ 3; the two
    ends are not evaluated); returns the best point evaluated."""
    g = (math.sqrt(5) - 1) / 2
    a, b = lo, hi
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(c), f(d)
    best = (fc, c) if fc <= fd else (fd, d)
    for _ in range(max(0, n - 2)):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(d)
        best = min(best, (fc, c), (fd, d))
    return best[1]


def _write(path: Optional[Path], obj: dict) -> None:
    from pruning.report import write_json_atomic

    if path is not None:
        write_json_atomic(path, obj)


def _resume(path: Optional[Path], key: dict, log: Callable[[str], None]) -> dict:
    """{(λ, M): row} of the candidates already scored in ``path`` with the same settings (``key``)."""
    if path is None or not path.exists():
        return {}
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        raise ValueError(f"{path} exists but is not a tune JSON; choose another --out") from None
    if old.get("key") != jsonable(key):  # never replace the candidates of other settings
        raise ValueError(f"{path} holds a tune with other settings; choose another --out (or delete it)")
    done = {(r["lam"], r.get("owl_M")): r for r in old.get("rows", [])}
    log(f"resuming {path}: {len(done)} candidates already scored")
    return done


class _Scorer:
    """The dense statistics of a model and one-shot candidates scored on the held-out windows.

    In memory the model is pruned in place from the statistics and restored from a copy of its dense weights
    between candidates; a streamed model (``block_io``, read-only) is pruned block by block as the evaluation reads
    it (:class:`pruning.calib_stats.PruneOnLoad`), so it is never held whole.
    """

    def __init__(self, lm, settings: TuneSettings, block_io=None, phase_cb: Optional[Callable[[str], None]] = None):
        self.model, self.tokenizer, self.s, self.io = lm.model, lm.tokenizer, settings, block_io
        self.phase_cb = phase_cb
        t = time.perf_counter()
        self.stats = dense_stats(self.model, self.tokenizer, settings.calib,
                                 hessians="H" in get_pruner(settings.pruner).needs, block_io=block_io,
                                 progress_cb=None if phase_cb is None else
                                 (lambda i, n: phase_cb(f"dense calibration statistics: block {i}/{n}")))
        self.stats_seconds = time.perf_counter() - t
        self.dense_w = DenseWeights(self.model) if block_io is None else None

    def evaluate(self, io=None) -> tuple[float, float]:
        """(held-out perplexity, seconds) of the model as it is (in memory) or as ``io`` reads it (streamed)."""
        from pruning.evaluation.perplexity import perplexity
        from pruning.stream import blockwise_perplexity

        s, t = self.s, time.perf_counter()
        if self.io is None:
            cb = None if self.phase_cb is None else (lambda i, n: self.phase_cb(f"held-out evaluation: window {i}/{n}"))
            r = perplexity(self.model, self.tokenizer, s.eval_dataset, seqlen=s.eval_seqlen,
                           max_windows=s.eval_windows, progress=False, path=s.calib.data_path, progress_cb=cb)
        else:
            r = blockwise_perplexity(self.model, self.tokenizer, s.eval_dataset, seqlen=s.eval_seqlen,
                                     max_windows=s.eval_windows, block_io=io or self.io, path=s.calib.data_path)
        return float(r.ppl), time.perf_counter() - t

    def score(self, sparsity, label: dict) -> dict:
        """The row of one candidate: prune one-shot at ``sparsity`` (float or {longname: s}) and score it."""
        from pruning.calib_stats import PruneOnLoad

        t0 = time.perf_counter()
        io = None
        if self.io is None:
            self.dense_w.restore()
            prune_from_stats(self.model, self.stats, sparsity, self.s.pruner)
        else:
            io = PruneOnLoad(self.model, self.io, self.stats, sparsity, self.s.pruner)
        t1 = time.perf_counter()
        p, es = self.evaluate(io)
        return {**label, "ppl": p, "prune_seconds": t1 - t0, "eval_seconds": es, "seconds": time.perf_counter() - t0}

    def score_allocation(self, alloc, label: dict, uniform: dict) -> dict:
        """The row of a candidate allocation (``longname``, ``sparsity`` columns); one that is uniform sparsity to
        the bit (λ = 0 for most methods) has uniform's masks, so it takes ``uniform``'s score (no evaluation)."""
        sp = alloc["sparsity"].to_numpy(float)
        if (sp == float(self.s.sparsity)).all():
            return {**uniform, **label, "same_as": "uniform"}
        return self.score(dict(zip(alloc["longname"], sp)), label)

    def dense(self, baseline: Optional[dict], done: dict) -> tuple[float, float]:
        """(held-out perplexity, seconds) of the dense model, or ``baseline``'s (its uniform row then goes in
        ``done``)."""
        if baseline is None:
            return self.evaluate()
        done[("uniform", None)] = baseline["uniform"]
        return baseline["dense"]["ppl"], baseline["dense"]["seconds"]

    def restore(self) -> None:
        """Leave an in-memory model dense (a streamed one never changed)."""
        if self.dense_w is not None:
            self.dense_w.restore()


def tune(lm, settings: TuneSettings, out: Optional[str] = None, log: Callable[[str], None] = print,
         progress_cb: Optional[Callable[[dict], None]] = None, block_io=None, baseline: Optional[dict] = None,
         phase_cb: Optional[Callable[[str], None]] = None) -> dict:
    """Score every candidate of ``settings`` on held-out text; returns (and writes to ``out``) the result dict.

    Parameters
    ----------
    lm : LoadedModel or StreamedModel
        The dense model (``.model``, ``.tokenizer``); left dense afterwards.
    settings : TuneSettings
        What is tuned and how it is scored.
    out : str, optional
        The tune JSON, rewritten after every candidate and resumed when its settings match.
    log, progress_cb, phase_cb : callable, optional
        A line per step; ``progress_cb(row)`` after every candidate (the app's live curve); ``phase_cb(text)``
        while the dense statistics (block by block) and every held-out evaluation (window by window) run.
    block_io : BlockIO, optional
        A streamed model's read-only block loader (``StreamedModel`` without writer, also passed as ``lm``): the
        statistics, the calibration signal and every candidate's evaluation then read one block at a time.
    baseline : dict, optional
        ``{"dense": ..., "uniform": ...}`` of an earlier tune with the same settings but the allocation (``compare``):
        skips those two evaluations.

    Returns
    -------
    dict
        ``settings``, ``versions``, ``dense`` (held-out perplexity and seconds of the dense model), ``uniform`` (the
        same sparsity everywhere), ``rows`` (one per candidate) and ``best`` (``lam`` holds the value of the
        method's first tunable parameter, named in ``param``).
    """
    from pruning.allocation import allocate
    from pruning.report import package_versions

    settings.validate()
    path = Path(out) if out else None
    key = settings.key()
    done = _resume(path, key, log)
    result = {"key": key, "settings": {**key, "lams": settings.lams, "owl_Ms": list(settings.owl_Ms),
                                       "search": settings.search, "candidates": settings.candidates},
              "versions": package_versions(), "mode": "one-shot (dense statistics)", "rows": []}
    scorer = _Scorer(lm, settings, block_io, phase_cb)
    result["stats_seconds"] = scorer.stats_seconds
    _check_table(lm, settings, scorer, block_io, result)
    ppl, secs = scorer.dense(baseline, done)
    result["dense"] = {"ppl": ppl, "seconds": secs}
    log(f"dense held-out ppl {ppl:.3f} ({settings.eval_windows} × {settings.eval_seqlen} {settings.eval_dataset} "
        f"windows, {secs:.1f} s); statistics {result['stats_seconds']:.1f} s")
    base, signals = _allocation_inputs(lm.model, settings, scorer.stats, block_io)
    result["signal_seconds"] = signals.pop("seconds", 0.0)
    values = candidate_values(settings, base)
    param = get_allocation(settings.allocation).params[0]
    result["settings"].update(param=param.name, values=values)

    def candidate(lam: float, M: Optional[float] = None) -> float:
        lam = round(float(lam), 6)
        if (lam, M) not in done:
            t0 = time.perf_counter()
            a = allocation_settings(settings, lam, M)
            alloc = allocate(base, a.method, a.sparsity, **a.allocate_kwargs(signal=signals.get(M)))
            alloc_s = time.perf_counter() - t0
            row = scorer.score_allocation(alloc, {"lam": lam, "owl_M": M}, result["uniform"])
            row["alloc_seconds"] = alloc_s
            row["seconds"] += alloc_s
            done[(lam, M)] = row
        row = done[(lam, M)]
        if row not in result["rows"]:
            result["rows"].append(row)
            log(f"{param.label}={lam:g}{'' if M is None else f' M={M:g}'}: held-out ppl {row['ppl']:.3f} "
                f"({row['seconds']:.1f} s = {row['seconds'] / result['dense']['seconds']:.2f}× one dense evaluation)")
            _write(path, result)
            if progress_cb is not None:
                progress_cb(row)
        return row["ppl"]

    result["uniform"] = done.get(("uniform", None)) or scorer.score(float(settings.sparsity), {"lam": "uniform"})
    done[("uniform", None)] = result["uniform"]
    log(f"uniform {settings.sparsity:.0%}: held-out ppl {result['uniform']['ppl']:.3f}")
    _search(settings, values, list(signals), candidate)
    _finish(result, scorer, path, param.label, log)
    return result


def _check_table(lm, settings: TuneSettings, scorer: _Scorer, block_io, result: dict) -> None:
    """For a method that reads a measured table: refuse a table of another model (:func:`check_table`: by the
    weights' sha256 in memory, by the model's name when streamed) and print its warnings on stderr (kept in
    ``result["warnings"]``)."""
    if get_allocation(settings.allocation).reads != "table":
        return
    label = getattr(getattr(lm, "source", None), "label", None)
    if label is None and block_io is not None:
        label = str(block_io.directory)
    result["warnings"] = check_table(settings.sensitivity_table, settings.pruner, settings.sparsity, label,
                                     scorer.stats.fingerprint if block_io is None else None)
    for w in result["warnings"]:
        print(f"warning: {w}", file=sys.stderr)


def _search(settings: TuneSettings, values: list, Ms: list, candidate: Callable) -> None:
    """Score the candidates: every value (grid) or a golden-section search over their range, for every M."""
    for M in Ms:
        if settings.search == "grid":
            for lam in values:
                candidate(lam, M)
        else:
            golden_points(min(values), max(values), lambda x, M=M: candidate(x, M), len(values))


def _finish(result: dict, scorer: _Scorer, path: Optional[Path], plabel: str, log: Callable[[str], None]) -> None:
    best = min(result["rows"], key=lambda r: r["ppl"])
    result["best"] = {"lam": best["lam"], "owl_M": best["owl_M"], "ppl": best["ppl"],
                      "param": result["settings"]["param"], **({"same_as": "uniform"} if "same_as" in best else {})}
    later = result["rows"][1:]
    if later:
        result["cost_per_extra_candidate"] = sum(r["seconds"] for r in later) / len(later) / result["dense"]["seconds"]
    scorer.restore()
    _write(path, result)
    m_txt = "" if best["owl_M"] is None else f" M={best['owl_M']:g}"
    log(f"best: {plabel}={best['lam']:g}{m_txt} (held-out ppl {best['ppl']:.3f}; "
        f"uniform {result['uniform']['ppl']:.3f})")


def final_prune(lm, settings: TuneSettings, best: dict, test_seqlen: int = 512, test_windows: Optional[int] = None,
                baseline: bool = True, log: Callable[[str], None] = print) -> dict:
    """Sequential (reference) prunes at the chosen value ``best`` and, with ``baseline``, at uniform sparsity (λ = 0):
    each scored on the tuning's held-out windows (``val_ppl``: compare with the one-shot ``ppl`` of the same
    candidate for the one-shot/sequential gap) and on WikiText-2 test (``test_ppl``, ``test_seqlen`` windows, the
    first ``test_windows`` or all). The model is restored to its dense weights after each prune.

    Returns ``{"chosen": row, "uniform": row}`` with ``settings`` (the PruneSettings), ``achieved_sparsity`` and
    ``prune_seconds`` in each row.
    """
    from pruning.evaluation.perplexity import perplexity
    from pruning.prune import prune_model
    from pruning.settings import PruneSettings

    data_path = settings.calib.data_path
    dense = DenseWeights(lm.model)
    runs = {"chosen": best} if not baseline else {"chosen": best, "uniform": {"lam": "uniform"}}
    out: dict = {}
    for name, cand in runs.items():
        if cand["lam"] == "uniform":
            alloc = dataclasses.replace(allocation_settings(settings, 0.0, None), method="uniform")
        else:
            alloc = allocation_settings(settings, float(cand["lam"]), cand.get("owl_M"))
        ps = dataclasses.replace(PruneSettings(calibration=settings.calib).replace(pruner=settings.pruner),
                                 allocation=alloc).validate()
        res = prune_model(lm, None, ps, progress=False)
        val = perplexity(lm.model, lm.tokenizer, settings.eval_dataset, seqlen=settings.eval_seqlen,
                         max_windows=settings.eval_windows, progress=False, path=data_path)
        test = perplexity(lm.model, lm.tokenizer, "wikitext2", seqlen=int(test_seqlen), max_windows=test_windows,
                          progress=False, path=data_path)
        out[name] = {"mode": "sequential", "lam": cand["lam"], "owl_M": cand.get("owl_M"), "settings": ps.flat(),
                     "val_ppl": val.ppl, "test_ppl": test.ppl, "test_windows": test.nwindows,
                     "test_seqlen": test.seqlen, "prune_seconds": res.timings["total"],
                     "achieved_sparsity": res.achieved_sparsity}
        lam_txt = "" if cand["lam"] == "uniform" else f" {cand['lam']}"
        log(f"sequential {name} ({ps.allocation.method}{lam_txt}): "
            f"held-out ppl {val.ppl:.3f}, WikiText-2 test ppl {test.ppl:.3f} ({test.nwindows} × {test.seqlen})")
        dense.restore()
    return out

