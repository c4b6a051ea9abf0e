"""Which blocks matter, measured: the held-out cost of pruning each block (or matrix), one candidate at a time.

``alone`` (default): for every block b, its matrices are pruned at S one-shot from the cached dense calibration
statistics (:mod:`pruning.calib_stats`), every other block stays dense; the row's ``delta_nll`` is the mean token
NLL of the held-out windows minus the dense model's. ``marginal``: every block is pruned at S, then block b alone
at S + δ (one-shot from the same dense statistics); ``delta_nll`` is that step's cost over the all-at-S model — the
quantity an allocation should equalise at its operating point. ``granularity="matrix"``: one row per block matrix.

The held-out windows are :mod:`pruning.tune`'s (C4 validation documents 1000–1999 by default; never WikiText-2
test). Cost: the hidden states entering block b are the reference model's (dense for ``alone``, all-at-S for
``marginal``) for every candidate that changes block b, so the scan walks the reference once, block by block,
holding only the current block's input (windows × seqlen × hidden floats: no store of all L states, nothing on
disk), and runs each candidate from its own block on (blocks b..L−1 and the head): about L/2 full passes of the
blocks plus L passes of the head. Every block gets the arguments the model itself passes it (per-layer masks and
rotary tables: Gemma-3 alternates local and global attention), recorded once by stand-ins.

The table is rewritten atomically after every candidate (:func:`spectra.files.atomic_path`); rerunning with the same
settings keeps the finished rows and scores the rest. The file's metadata hold the settings, versions, the
reference NLL and (once :func:`pruning.signals.verdict` ran) the verdict table.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import pandas as pd
import torch

from pruning.blocks import Linear, StandIn, block_linears, blocks_replaced, capture_block_inputs, first_output
from pruning.calib_stats import TUNE_CALIBRATION, DenseStats, dense_stats, stats_key
from pruning.pruners import get_pruner, one_shot_pruners
from pruning.sensitivity_table import read_table, table_metadata, write_table
from pruning.settings import AllocationSettings, CalibrationSettings
from pruning.tune import TuneSettings
from spectra.options import check_options, option, same_as

__all__ = ["MODES", "SensitivitySettings", "measure", "read_table", "write_table", "table_metadata",
           "candidate_units", "prune_linears"]

MODES = ("alone", "marginal")
ROW_COLUMNS = ["unit", "block", "longname", "role", "depth", "target", "nll", "delta_nll", "ppl", "seconds"]


@dataclass
class SensitivitySettings:
    """What is measured and how (module docstring); checked on construction. ``python -m pruning sensitivity`` and
    the app page are built from these fields, the calibration's and the held-out ones shared with
    :class:`pruning.tune.TuneSettings`."""

    pruner: str = same_as(TuneSettings, "pruner")
    sparsity: float = same_as(TuneSettings, "sparsity")
    mode: str = option("alone", "alone: one block pruned at S, the rest dense; marginal: every block at S, one at "
                       "S + δ", choices=MODES)
    delta: float = option(0.05, "marginal mode's step δ over S", lo=0.0, hi=1.0, hi_open=True)
    granularity: str = option("block", "one row per block or per block matrix", choices=("block", "matrix"),
                              flag="--granularity")
    calib: CalibrationSettings = field(default_factory=lambda: TUNE_CALIBRATION)
    eval_dataset: str = same_as(TuneSettings, "eval_dataset")
    eval_seqlen: Optional[int] = same_as(TuneSettings, "eval_seqlen")
    eval_windows: int = same_as(TuneSettings, "eval_windows")
    xmin_rule: str = same_as(AllocationSettings, "xmin_rule")
    owl_M: float = same_as(AllocationSettings, "owl_M")
    block_batch: int = option(4, "held-out windows per forward through the blocks", lo=1)
    permutations: int = option(10000, "permutations of the verdict's p-value", lo=100)
    perm_seed: int = option(0, "seed of the permutation test", lo=0, flag="--perm-seed")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> SensitivitySettings:
        if self.pruner not in one_shot_pruners():
            raise ValueError(f"sensitivity: pruner {self.pruner!r} (--pruner) cannot prune from cached statistics; "
                             f"choose one of: {', '.join(one_shot_pruners())}")
        if self.eval_dataset in ("wikitext2", "wikitext"):
            raise ValueError("sensitivity: never measure on the test set; score on held-out C4 (--tune-dataset c4) "
                             "or PTB validation (ptb-valid)")
        if not isinstance(self.calib, CalibrationSettings):
            raise TypeError(f"SensitivitySettings.calib must be a CalibrationSettings "
                            f"(got {type(self.calib).__name__})")
        check_options(self)
        if self.mode == "marginal" and self.sparsity + self.delta >= 1.0:
            raise ValueError(f"sensitivity: --sparsity {self.sparsity:g} + --delta {self.delta:g} must stay below 1")
        if self.eval_seqlen is None:
            self.eval_seqlen = self.calib.seqlen
        return self

    def key(self) -> dict:
        """The settings that change a row's number (the resume key)."""
        d = asdict(self)
        for k in ("permutations", "perm_seed", "block_batch"):
            d.pop(k)
        if self.mode == "alone":
            d.pop("delta")
        d["calib"] = stats_key(self.calib, "H" in get_pruner(self.pruner).needs)
        return d

    def candidate_sparsity(self) -> float:
        return float(self.sparsity + self.delta) if self.mode == "marginal" else float(self.sparsity)


# ------------------------------------------------------------------------------------------------ candidates
@dataclass
class Unit:
    """One candidate: a block, or one matrix of it."""

    name: str
    block: int
    linears: list


def candidate_units(per_block: list[list[Linear]], granularity: str) -> list[Unit]:
    """The candidates in walk order: one per block (``block``) or one per block matrix (``matrix``)."""
    if granularity == "block":
        return [Unit(f"block {b}", b, lins) for b, lins in enumerate(per_block)]
    return [Unit(lin.longname, b, [lin]) for b, lins in enumerate(per_block) for lin in lins]


@torch.no_grad()
def prune_linears(linears: list[Linear], stats: DenseStats, sparsity: float, pruner: str,
                  source: Optional[dict] = None) -> None:
    """Prune only ``linears`` at ``sparsity`` one-shot from the dense ``stats`` (the weights are taken from
    ``source`` {longname: W (out, in)} when given, e.g. the dense copy, else from the layers themselves)."""
    from pruning.pruners import get_pruner

    fn = get_pruner(pruner).fn
    for lin in linears:
        W = source[lin.longname].clone() if source is not None else lin.get()
        lin.set(fn(W, stats.layers[lin.longname], float(sparsity), None))


# ------------------------------------------------------------------------------------------------ the walk
class _Walk:
    """The held-out windows, each batch's current hidden state and every block's arguments, and the head."""

    def __init__(self, model, windows: torch.Tensor, batch: int):
        from spectra.weights import decoder_layers

        self.model, self.windows, self.batch = model, windows, batch
        self.blocks = list(decoder_layers(model))
        chunks = capture_block_inputs(model, windows, batch)
        self.hidden = [c.hidden for c in chunks]
        self.args = [c.per_block for c in chunks]  # [chunk][block] = (args, kwargs)
        out = self.blocks[0](chunks[0].hidden, *chunks[0].args, **chunks[0].kwargs)
        as_tuple = isinstance(out, (tuple, list))
        self.stand_in = [StandIn(i, as_tuple=as_tuple, like=m) for i, m in enumerate(self.blocks)]

    def run(self, b: int, c: int, h: torch.Tensor) -> torch.Tensor:
        args, kwargs = self.args[c][b]
        return first_output(self.blocks[b](h, *args, **kwargs))

    def nll_sum(self, c: int, h: torch.Tensor) -> tuple[float, int]:
        """Summed NLL of batch ``c`` given the last block's output ``h`` (final norm and head of the model itself,
        one window at a time)."""
        from pruning.evaluation.perplexity import batch_nll

        wins = self.windows[c * self.batch:(c + 1) * self.batch]
        tot, n = 0.0, 0
        with blocks_replaced(self.model, self.stand_in) as view:
            for i in range(wins.shape[0]):
                self.stand_in[0].replay = h[i:i + 1]
                s, k = batch_nll(view, wins[i:i + 1])
                tot, n = tot + s, n + k
        return tot, n

    def from_block(self, b: int) -> float:
        """Mean token NLL of the current weights, run from block ``b`` on the stored inputs of block ``b``."""
        tot, n = 0.0, 0
        for c, h in enumerate(self.hidden):
            for j in range(b, len(self.blocks)):
                h = self.run(j, c, h)
            s, k = self.nll_sum(c, h)
            tot, n = tot + s, n + k
        return tot / n

    def advance(self, b: int) -> None:
        """Move the stored inputs from block ``b`` to block ``b + 1`` (the reference weights)."""
        self.hidden = [self.run(b, c, h) for c, h in enumerate(self.hidden)]

    def finish(self) -> float:
        """Mean token NLL of the reference, once :meth:`advance` has passed the last block."""
        tot, n = 0.0, 0
        for c, h in enumerate(self.hidden):
            s, k = self.nll_sum(c, h)
            tot, n = tot + s, n + k
        return tot / n


def _held_out_windows(lm, s: SensitivitySettings) -> torch.Tensor:
    from pruning.evaluation.perplexity import prepare_windows

    return prepare_windows(lm.model, lm.tokenizer, s.eval_dataset, s.eval_seqlen, s.eval_windows,
                           path=s.calib.data_path)[2]


def _resume(path: Optional[Path], key: dict) -> tuple[dict, dict]:
    if path is None or not path.exists():
        return {}, {}
    try:
        meta = table_metadata(path)
        old = pd.read_parquet(path)
    except (OSError, ValueError):
        raise ValueError(f"{path} exists but is not a sensitivity table; choose another --out") from None
    if meta.get("key") != json.loads(json.dumps(key, default=str)):
        raise ValueError(f"{path} holds a sensitivity scan with other settings; choose another --out (or delete it)")
    return {r["unit"]: r for r in old.to_dict("records")}, meta


@torch.no_grad()
def measure(lm, settings: SensitivitySettings, out=None, signals: Optional[pd.DataFrame] = None,
            log: Callable[[str], None] = print, progress_cb: Optional[Callable[[int, int, str], None]] = None,
            progress: bool = True, with_signals: bool = True, metrics: Optional[pd.DataFrame] = None) -> pd.DataFrame:
    """Measure every candidate of ``settings`` (module docstring); returns (and writes to ``out``) one row per block
    (or matrix) with ``unit block longname role depth target nll delta_nll ppl seconds`` plus the columns of
    ``signals`` (merged on ``block``, or on ``longname`` at matrix granularity; with ``with_signals`` the dense
    model's :func:`pruning.signals.block_signals` are computed first — from ``metrics``, a spectra table of this
    model, when given — and ``signals`` adds to them). The model ends
    with its dense weights. ``attrs["sensitivity"]``: settings, versions, ``reference_nll``, ``stats_seconds``,
    ``scan_seconds`` and the ``verdict`` (:func:`pruning.signals.verdict`, records)."""
    from pruning.calib_stats import DenseWeights
    from pruning.report import package_versions

    settings.validate()
    model, tok = lm.model, lm.tokenizer
    path = Path(out) if out else None
    t = time.perf_counter()
    stats = dense_stats(model, tok, settings.calib, hessians="H" in get_pruner(settings.pruner).needs)
    stats_seconds = round(time.perf_counter() - t, 3)
    key = {**settings.key(), "weights_sha256": stats.fingerprint}
    done, old_meta = _resume(path, key)
    meta = {"key": json.loads(json.dumps(key, default=str)), "versions": package_versions(),
            "mode": settings.mode, "label": f"{settings.pruner} one-shot (dense statistics), {settings.mode}",
            "model": getattr(getattr(lm, "source", None), "label", None), "stats_seconds": stats_seconds,
            "permutations": settings.permutations, "seed": settings.perm_seed}
    if with_signals:
        from pruning.signals import block_signals

        t = time.perf_counter()
        signals = block_signals(model, stats.layers, settings.granularity, settings.xmin_rule, settings.owl_M,
                                metrics=metrics, extra=signals)
        meta["signal_seconds"] = round(time.perf_counter() - t, 3)
    dense = DenseWeights(model)
    units = candidate_units(block_linears(model), settings.granularity)
    rows = [done[u.name] for u in units if u.name in done]
    if done:
        log(f"resuming {path}: {len(rows)} of {len(units)} candidates already measured")
    try:
        if settings.mode == "marginal":
            prune_linears(dense.linears, stats, settings.sparsity, settings.pruner, dense.saved)
        reference = {lin.longname: lin.get() for lin in dense.linears}
        if len(rows) == len(units) and "reference_nll" in old_meta:
            ref_nll = float(old_meta["reference_nll"])
            meta["scan_seconds"] = old_meta.get("scan_seconds")
        else:
            ref_nll, meta["scan_seconds"] = _scan(lm, settings, units, stats, dense.saved, reference, done, rows,
                                                  lambda r: _save(path, r, signals, meta, settings), log,
                                                  progress_cb, progress)
    finally:
        dense.restore()
    meta["reference_nll"] = ref_nll
    meta["reference_ppl"] = math.exp(ref_nll)
    df = _finish(rows, ref_nll, signals, settings)
    from pruning.signals import verdict

    v = verdict(df, permutations=settings.permutations, seed=settings.perm_seed)
    meta["verdict"] = v.to_dict("records")
    df.attrs["sensitivity"] = meta
    if path is not None:
        write_table(df, path, meta)
    return df


def _scan(lm, settings, units, stats, dense_w, reference, done, rows, save, log, progress_cb, progress):
    """The walk over the blocks (module docstring); appends the new rows to ``rows``; returns (reference NLL, s)."""
    t_scan = time.perf_counter()
    walk = _Walk(lm.model, _held_out_windows(lm, settings), settings.block_batch)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(units), initial=len(rows), desc=f"sensitivity ({settings.mode})", unit="candidate")
    by_block: dict[int, list] = {}
    for u in units:
        by_block.setdefault(u.block, []).append(u)
    try:
        for b in range(len(walk.blocks)):
            for u in by_block.get(b, []):
                if u.name in done:
                    continue
                t = time.perf_counter()
                prune_linears(u.linears, stats, settings.candidate_sparsity(), settings.pruner, dense_w)
                nll = walk.from_block(b)
                for lin in u.linears:
                    lin.set(reference[lin.longname])
                rows.append(_row(u, nll, settings, time.perf_counter() - t))
                save(rows)
                if bar is not None:
                    bar.update(1)
                if progress_cb is not None:
                    progress_cb(len(rows), len(units), u.name)
            walk.advance(b)
        ref_nll = walk.finish()
    finally:
        if bar is not None:
            bar.close()
    log(f"reference held-out NLL {ref_nll:.4f} (ppl {math.exp(ref_nll):.3f}); "
        f"scan {time.perf_counter() - t_scan:.1f} s")
    return ref_nll, round(time.perf_counter() - t_scan, 3)


def _row(u: Unit, nll: float, s: SensitivitySettings, seconds: float) -> dict:
    lin = u.linears[0]
    return {"unit": u.name, "block": u.block, "longname": lin.longname if len(u.linears) == 1 else "",
            "role": lin.role if len(u.linears) == 1 else "block", "depth": u.block, "target": s.candidate_sparsity(),
            "nll": float(nll), "seconds": float(seconds)}


def _finish(rows: list, ref_nll: Optional[float], signals: Optional[pd.DataFrame],
            s: SensitivitySettings) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=ROW_COLUMNS)
    df = df.sort_values(["block", "unit"] if s.granularity == "matrix" else ["block"]).reset_index(drop=True)
    df["delta_nll"] = df["nll"] - ref_nll if ref_nll is not None else float("nan")
    df["ppl"] = [math.exp(x) for x in df["nll"]]
    df = df[ROW_COLUMNS + [c for c in df.columns if c not in ROW_COLUMNS]]
    if signals is not None and not signals.empty:
        on = "longname" if s.granularity == "matrix" else "block"
        extra = signals[[c for c in signals.columns if c not in df.columns or c == on]]
        df = df.merge(extra, on=on, how="left")
    return df


def _save(path: Optional[Path], rows: list, signals, meta: dict, s: SensitivitySettings) -> None:
    if path is not None:  # delta_nll is NaN until the walk has reached the reference's end
        write_table(_finish(rows, None, signals, s)[ROW_COLUMNS].drop(columns=["delta_nll"]).assign(
            delta_nll=float("nan")), path, meta)
