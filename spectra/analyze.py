"""analyze(model or source) → one DataFrame row per weight matrix (ARCHITECTURE.md, Contract 1); block aggregates.

Routes: a weights directory, a GGUF file, a hub id or the built-in model (``None``) are *streamed* one matrix at a
time from safetensors (``spectra.weights.iter_safetensors_weights``; GGUF is first converted once by the loader) —
the model is never instantiated; an in-memory ``torch.nn.Module`` (e.g. a pruned model) is read with
``spectra.weights.iter_model_weights``. Per matrix: ESD (``spectra.esd``) → metrics (``spectra.metrics``).
Results are cached by weight content (``spectra.results``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import pandas as pd
import torch

from .errors import SpectraError
from .esd import esd, esd_batch, resolve_device
from .farms import FARMS_COLUMNS, farms_esd, farms_metrics
from .hill import likely_spurious
from .metrics import METRIC_COLUMNS, failed_metrics, matrix_metrics, matrix_problem
from .results import package_versions
from .settings import AnalysisSettings

IDENTITY_COLUMNS = ["layer_id", "longname", "param", "block", "role", "rows", "cols", "N", "M", "num_params"]
ProgressCb = Callable[[int, int, str], None]


# ----------------------------------------------------------------------------------------------- sources
@dataclass
class _Source:
    label: str
    kind: str  # "stream", "convert" (a GGUF read while it is converted) or "memory"
    directory: Optional[Path] = None
    model: Optional[torch.nn.Module] = None
    conversion: Any = None  # "convert": (GGUF path, spectra.gguf_convert.Conversion)


def _resolve(source: Any, settings: Optional[AnalysisSettings] = None) -> _Source:
    """Where the matrices of ``source`` come from; with ``settings`` (an analysis) a GGUF not yet converted is read
    while its conversion runs, block 0's matrices dequantized first (``spectra.models.start_conversion``)."""
    if isinstance(source, torch.nn.Module):
        return _Source(f"in-memory {type(source).__name__}", "memory", model=source)
    model = getattr(source, "model", None)
    if isinstance(model, torch.nn.Module):  # spectra.models.LoadedModel: analyse its (possibly modified) weights
        src = getattr(source, "source", None)
        label = getattr(src, "label", None) or f"in-memory {type(model).__name__}"
        return _Source(f"{label} (in memory)", "memory", model=model)
    from .models import resolve_source, start_conversion, weights_dir
    from .weights import checkpoint_matrices

    src = resolve_source(source)
    if settings is not None:
        conv = start_conversion(src, lambda shapes, cfg: [k for _, k in checkpoint_matrices(
            shapes, cfg, settings.include_embeddings)])
        if conv is not None:
            return _Source(src.label, "convert", conversion=conv)
    return _Source(src.label, "stream", directory=Path(weights_dir(src)))


def _stream_count(directory: Path, include_embeddings: bool) -> Optional[int]:
    """Number of matrices ``iter_safetensors_weights`` will yield, from file headers only (None if unknown)."""
    try:
        from . import weights as W
        from .models import weight_files

        files = weight_files(directory)
        if not files or any(f.suffix != ".safetensors" for f in files):
            return None
        shapes = {key: shape for f in files for key, shape in W.safetensors_header(f).items()}
        return len(W.checkpoint_matrices(shapes, W.read_config(directory), include_embeddings))
    except Exception:
        return None


def _iterate(src: _Source, settings: AnalysisSettings) -> tuple[Iterator, Optional[int]]:
    from .weights import checkpoint_matrices, iter_checkpoint, iter_model_weights, iter_safetensors_weights

    if src.kind == "memory":
        infos = list(iter_model_weights(src.model, settings.include_embeddings))  # views, no copies
        return iter(infos), len(infos)
    if src.kind == "convert":
        conv = src.conversion[1]
        items = checkpoint_matrices(conv.shapes, conv.config, settings.include_embeddings)
        if not items:
            raise SpectraError(f"{src.label} holds no 2-D weight matrices inside transformer blocks")
        return iter_checkpoint(items, conv.tensor), len(items)
    return (iter_safetensors_weights(src.directory, settings.include_embeddings),
            _stream_count(src.directory, settings.include_embeddings))


def _fingerprint(src: _Source, settings: AnalysisSettings) -> Optional[str]:
    from .results import tensor_sha256_update
    from .weights import iter_model_weights

    if src.kind != "memory":  # a conversion's files are hashed once written (analyze)
        from .models import files_sha256, weight_files

        return files_sha256(weight_files(src.directory)) if src.kind == "stream" else None
    digest = hashlib.sha256()
    for info, w in iter_model_weights(src.model, settings.include_embeddings):
        tensor_sha256_update(digest, info.param, w)
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------- analysis
def _progress(total: Optional[int], enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="spectra", unit="matrix", leave=False)


def analyze(source: Any = None, settings: Optional[AnalysisSettings] = None, progress: bool = True,
            cache: bool = True, progress_cb: Optional[ProgressCb] = None,
            on_row: Optional[Callable[[dict], None]] = None, **overrides: Any) -> pd.DataFrame:
    """Analyse every block weight matrix of ``source``; one row per matrix (Contract 1), ``attrs['metadata']``.

    ``source``: ``None`` (built-in model), a path / GGUF / hub id (anything ``spectra.models`` accepts), a
    ``LoadedModel`` or an in-memory ``torch.nn.Module``. ``settings`` (or keyword overrides of its fields, e.g.
    ``xmin_rule="ks"``) choose the fit. ``progress`` shows a tqdm bar; ``progress_cb(i, n, longname)`` is called
    after each matrix (n may be None when unknown); ``on_row(row)`` with each finished row (a dict of Contract 1's
    columns), in enumeration order, so that a caller can draw the table as it grows. With ``cache`` the result is
    read from / written to the
    content-keyed cache. Bad matrices (NaN/Inf, all-zero, too small) give ``status='failed'`` rows with the reason.
    """
    fields = {f.name for f in dataclasses.fields(AnalysisSettings)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise SpectraError(f"unknown analysis setting(s) {', '.join(unknown)}; valid: {', '.join(sorted(fields))}")
    if settings is None:
        settings = AnalysisSettings(**overrides)
    elif overrides:
        settings = dataclasses.replace(settings, **overrides)
    device = resolve_device(settings.device)  # a device this machine lacks is an error, cached result or not
    src = _resolve(source, settings)
    t0 = time.perf_counter()
    key = settings.numbers_key()
    fingerprint = _fingerprint(src, settings) if (cache or src.kind == "stream") else None
    if cache:
        hit = _from_cache(fingerprint, key, settings, progress_cb, src)
        if hit is not None:
            return hit
    it, total = _iterate(src, settings)
    runner = _Runner(settings, device, total, _progress(total, progress), progress_cb,
                     src.kind == "memory" and fingerprint is None, on_row)
    try:
        with one_blas_thread() if device.type == "cpu" else contextlib.nullcontext():
            runner.run(it)
    except BaseException:
        if src.kind == "convert":
            src.conversion[1].cancel()
        raise
    if src.kind == "convert":  # the tensors analysed are those written now (the cache key: the files' sha256)
        from .models import files_sha256, gguf_to_safetensors, weight_files

        src.directory = gguf_to_safetensors(src.conversion[0], conversion=src.conversion[1])
        fingerprint = files_sha256(weight_files(src.directory))
    df = pd.DataFrame(runner.rows, columns=IDENTITY_COLUMNS + METRIC_COLUMNS
                      + (FARMS_COLUMNS if settings.farms else []) + ["evals"])
    df["warning"] = df["warning"].fillna("")
    if runner.digest is not None:
        fingerprint = runner.digest.hexdigest()
    df.attrs["metadata"] = {
        "model": src.label,
        "route": "in-memory" if src.kind == "memory" else "safetensors-stream",
        "weights_dir": str(src.directory) if src.directory else None,
        "weights_sha256": fingerprint,
        "dtype": ",".join(sorted(runner.dtypes)),
        "xmin_rule": settings.xmin_rule,
        "settings": settings.as_dict(),
        "versions": package_versions(),  # spectra.results.package_versions
        "num_matrices": len(df),
        "elapsed_s": round(time.perf_counter() - t0, 3),
        "timings": {k: round(v, 3) for k, v in runner.clock.items()} if runner.pool is None and runner.batch == 1
        else {},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "from_cache": False,
    }
    if cache:
        from .results import cache_store

        cache_store(df, fingerprint, key)
    if not settings.keep_eigs:
        df = df.drop(columns="evals")
    return df


def _from_cache(fingerprint: str, key: dict, settings: AnalysisSettings, progress_cb: Optional[ProgressCb],
                src: _Source) -> Optional[pd.DataFrame]:
    """The cached analysis of these weights and settings, or None; labelled with this call's source (the entry may
    have been written for the same weights under another name: the built-in model by its cache folder, say)."""
    from .results import cache_load

    hit = cache_load(fingerprint, key)
    if hit is None:
        return None
    if not settings.keep_eigs and "evals" in hit.columns:
        hit = hit.drop(columns="evals")
    hit.attrs["metadata"] = {**hit.attrs.get("metadata", {}), "model": src.label,
                             "weights_dir": str(src.directory) if src.directory else None, "from_cache": True,
                             "settings": settings.as_dict()}
    if progress_cb is not None:
        progress_cb(len(hit), len(hit), "")
    return hit


class _Runner:
    """The matrices of one analysis, in enumeration order: one thread, a thread pool (``workers``) or batched
    eigenvalues of same-shape matrices (``eig_batch``, CUDA); progress is reported in enumeration order."""

    def __init__(self, settings: AnalysisSettings, device, total, bar, progress_cb: Optional[ProgressCb],
                 hash_weights: bool, on_row: Optional[Callable[[dict], None]] = None):
        self.settings, self.device, self.total, self.bar, self.progress_cb = settings, device, total, bar, progress_cb
        self.on_row = on_row
        self.batch = settings.eig_batch or (8 if self.device.type == "cuda" else 1)
        self.rows: list = []
        self.dtypes: set = set()
        self.digest = hashlib.sha256() if hash_weights else None
        self.pending: list = []  # (row, W, longname) waiting for one batched eigvalsh
        self.running: list = []  # (row, future) in enumeration order
        self.pool = None
        if int(settings.workers) > 1 and self.device.type == "cpu" and self.batch == 1:
            from concurrent.futures import ThreadPoolExecutor

            self.pool = ThreadPoolExecutor(int(settings.workers), thread_name_prefix="spectra")
        self.clock = {"read_s": 0.0, "eig_s": 0.0, "fit_s": 0.0}  # phases of the one-thread path ("timings")

    def run(self, it) -> None:
        """Every ``(info, W)`` of ``it`` analysed into :attr:`rows`."""
        try:
            t_read = time.perf_counter()
            for i, (info, W) in enumerate(it):
                self.clock["read_s"] += time.perf_counter() - t_read
                self.add(i, info, W)
                t_read = time.perf_counter()
            while self.running:
                self.done(*self.running.pop(0))
            if self.pending:
                self.flush()
        finally:
            if self.pool is not None:
                self.pool.shutdown(cancel_futures=True)
            if self.bar is not None:
                self.bar.close()

    def add(self, i: int, info, W: torch.Tensor) -> None:
        settings = self.settings
        self.dtypes.add(str(W.dtype).replace("torch.", ""))
        if self.digest is not None:
            from .results import tensor_sha256_update

            tensor_sha256_update(self.digest, info.param, W)
        row = {"layer_id": i, "longname": info.longname, "param": info.param, "block": info.block,
               "role": info.role, "rows": info.rows, "cols": info.cols, "N": max(info.rows, info.cols),
               "M": min(info.rows, info.cols), "num_params": info.num_params}
        problem = matrix_problem(W, settings.min_evals)
        self.rows.append(row)
        if problem is None and self.batch > 1:
            if self.pending and tuple(self.pending[0][1].shape) != tuple(W.shape):
                self.flush()
            self.pending.append((row, W, info.longname))
            if len(self.pending) >= self.batch:
                self.flush()
            return
        if problem is not None:
            row.update(failed_metrics(problem, settings, row["M"]))
            if settings.farms:
                row.update({c: float("nan") for c in FARMS_COLUMNS})
            row["evals"] = None
        elif self.pool is not None:
            self.running.append((row, self.pool.submit(_matrix_numbers, W, info.rows, info.cols, settings,
                                                       self.device)))
            if len(self.running) >= 2 * int(settings.workers):
                self.done(*self.running.pop(0))
            return
        else:
            self.done(row, None, _matrix_numbers(W, info.rows, info.cols, settings, self.device, self.clock))
            return
        if self.running:  # a failed matrix waits for the ones before it, so that progress stays in order
            self.running.append((row, None))
        else:
            self.done(row, None)

    def flush(self) -> None:
        """The pending same-shape matrices' eigenvalues in one batched call, then their metrics."""
        evs = esd_batch([w for _, w, _ in self.pending], normalize=self.settings.normalize, device=self.device)
        for (row, w, _), ev in zip(self.pending, evs):
            row.update(matrix_metrics(ev, row["rows"], row["cols"], self.settings))
            if self.settings.farms:
                row.update(farms_metrics(w, self.settings))
            row["evals"] = ev
            self._report(row)
        self.pending.clear()

    def done(self, row: dict, future, numbers: Optional[tuple] = None) -> None:
        """Finish ``row`` (with the numbers, or the future's) and report progress, in enumeration order."""
        if future is not None or numbers is not None:
            ev, metrics = numbers if numbers is not None else future.result()
            row.update(metrics)
            row["evals"] = ev
        self._report(row)

    def _report(self, row: dict) -> None:
        """A finished row, in enumeration order: the bar, ``on_row(row)`` and ``progress_cb(i, n, longname)``."""
        if self.bar is not None:
            self.bar.update(1)
        if self.on_row is not None:
            self.on_row(row)
        if self.progress_cb is not None:
            self.progress_cb(row["layer_id"] + 1, self.total, row["longname"])


def one_blas_thread():
    """A context in which BLAS, LAPACK and OpenMP (numpy, scipy, torch) use one thread each (``threadpoolctl``; a
    no-op without it).

    Each matrix is one ``dsyrk`` + ``syevd``; parallelism comes from ``AnalysisSettings.workers`` (whole matrices
    at once). OpenBLAS's own threads busy-wait: on two cores that other processes also use, the built-in model's
    analysis took 104 s with 2 BLAS threads × 2 workers and 8.1 s with 1 × 2 (load average 7–9). The limit is
    process-wide while the analysis runs (other threads of the process, e.g. another app session, share it)."""
    try:
        import scipy.linalg  # noqa: F401 - loads scipy's own OpenBLAS now, so that the limit reaches it too
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1)


def _matrix_numbers(W: torch.Tensor, rows: int, cols: int, settings: AnalysisSettings, device,
                    clock: Optional[dict] = None) -> tuple:
    """One matrix's eigenvalues and metrics (its finiteness is checked by the caller); adds the seconds spent to
    ``clock["eig_s"]`` / ``clock["fit_s"]``."""
    t = time.perf_counter()
    ev = esd(W, normalize=settings.normalize, device=device, check_finite=False)
    t1 = time.perf_counter()
    out = matrix_metrics(ev, rows, cols, settings)
    if settings.farms:
        out.update(farms_metrics(W, settings))
    if clock is not None:
        clock["eig_s"] += t1 - t
        clock["fit_s"] += time.perf_counter() - t1
    return ev, out


def matrix_esd(source: Any, longname: str, normalize: bool = False, device: Optional[str] = None,
               include_embeddings: bool = True) -> np.ndarray:
    """Ascending eigenvalues of one matrix (by ``longname`` or ``param``) of ``source``, for the ESD explorer.

    Served from the analysis cache when an analysis of the same weight files is cached; otherwise streams the
    source's matrices until the one asked for (earlier matrices are read but not decomposed).
    """
    src = _resolve(source)
    settings = AnalysisSettings(include_embeddings=include_embeddings)
    if src.kind == "stream" and device in (None, "cpu"):
        from .results import cached_evals

        hit = cached_evals(_fingerprint(src, settings), longname, normalize)
        if hit is not None:
            return hit
    it, _ = _iterate(src, settings)
    names = []
    for info, W in it:
        if longname in (info.longname, info.param):
            problem = matrix_problem(W, 1)
            if problem is not None:
                raise SpectraError(f"{longname}: {problem}")
            with one_blas_thread():  # the analysis' own BLAS setting: the same eigenvalues to the bit
                return esd(W, normalize=normalize, device=device)
        names.append(info.longname)
    hint = ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")
    raise SpectraError(f"no weight matrix named {longname!r} in {src.label}; names look like: {hint}")


def matrix_farms_esd(source: Any, longname: str, window: int = 2000, ops: int = 10, q: float = 1.0,
                     device: Optional[str] = None) -> np.ndarray:
    """The pooled FARMS ESD (:func:`spectra.farms.farms_esd`) of one matrix (by ``longname`` or ``param``) of
    ``source``, for the ESD explorer (fit it with :func:`spectra.hill.fit_power_law`)."""
    src = _resolve(source)
    it, _ = _iterate(src, AnalysisSettings(include_embeddings=True))
    for info, W in it:
        if longname in (info.longname, info.param):
            problem = matrix_problem(W, 1)
            if problem is not None:
                raise SpectraError(f"{longname}: {problem}")
            return farms_esd(W, window, ops, q, device)
    raise SpectraError(f"no weight matrix named {longname!r} in {src.label}")


# ----------------------------------------------------------------------------------------------- aggregation
def _check_metric(df: pd.DataFrame, metric: str) -> None:
    if metric not in df.columns:
        raise SpectraError(f"metric {metric!r} is not a column of the results; available: "
                           f"{', '.join(c for c in METRIC_COLUMNS if c in df.columns)}")
    if not pd.api.types.is_numeric_dtype(df[metric]):
        raise SpectraError(f"metric {metric!r} is not numeric")


def block_aggregate(df: pd.DataFrame, metric: str = "alpha", weighted: bool = False) -> pd.DataFrame:
    """Per-block mean of ``metric`` over the block's matrices with a finite value (failed rows are left out;
    matrices outside the transformer blocks, ``block == -1``, are not aggregated).

    ``weighted=False``: plain mean (AlphaPruning's block-wise mode); ``weighted=True``: num_params-weighted mean
    Σ p_i m_i / Σ p_i. Columns: ``block``, ``metric`` (the mean), ``n_matrices`` (used), ``n_failed`` (left out),
    ``num_params`` (all matrices of the block). Blocks whose matrices all failed get NaN.
    """
    _check_metric(df, metric)
    out = []
    for block, g in df[df["block"] >= 0].groupby("block", sort=True):
        vals = g[metric].to_numpy(dtype=np.float64)
        ok = np.isfinite(vals)
        p = g["num_params"].to_numpy(dtype=np.float64)
        if not ok.any():
            mean = float("nan")
        elif weighted:
            mean = float(np.sum(vals[ok] * p[ok]) / np.sum(p[ok]))
        else:
            mean = float(np.mean(vals[ok]))
        out.append({"block": int(block), metric: mean, "n_matrices": int(ok.sum()), "n_failed": int((~ok).sum()),
                    "num_params": int(p.sum())})
    return pd.DataFrame(out, columns=["block", metric, "n_matrices", "n_failed", "num_params"])


def block_values(df: pd.DataFrame, metric: str = "alpha", weighted: bool = False) -> pd.Series:
    """Each matrix's block mean of ``metric`` (see :func:`block_aggregate`), aligned with ``df``'s index."""
    agg = block_aggregate(df, metric, weighted).set_index("block")[metric]
    return df["block"].map(agg).rename(f"{metric}_block")


def flagged_fits(df: pd.DataFrame) -> pd.Series:
    """Boolean per row of a results table: its power-law fit is flagged as likely spurious (α above
    :data:`spectra.hill.SPURIOUS_ALPHA`, :func:`spectra.hill.likely_spurious` — the ESD explorer's "α > 8" warning)."""
    _check_metric(df, "alpha")
    return pd.Series(likely_spurious(df["alpha"].to_numpy(dtype=np.float64)), index=df.index, name="flagged")


def spurious_blocks(df: pd.DataFrame) -> pd.DataFrame:
    """The transformer blocks whose mean α includes flagged fits (:func:`flagged_fits`), one row each: ``block``,
    ``flagged`` (the flagged matrices, e.g. ``v_proj α=18.3``), ``alpha_mean`` (the block mean of every finite α, as
    AlphaPruning averages) and ``alpha_mean_unflagged`` (without the flagged ones; NaN when all are flagged)."""
    flags = flagged_fits(df)
    rows = []
    for block, g in df[(df["block"] >= 0)].groupby("block", sort=True):
        f = flags.loc[g.index]
        if not f.any():
            continue
        a = g["alpha"].to_numpy(dtype=np.float64)
        ok = np.isfinite(a)
        keep = ok & ~f.to_numpy()
        names = [f"{str(n).rsplit('.', 1)[-1]} α={v:.1f}" for n, v in zip(g.loc[f, "longname"], g.loc[f, "alpha"])]
        rows.append({"block": int(block), "flagged": ", ".join(names), "n_flagged": int(f.sum()),
                     "alpha_mean": float(a[ok].mean()),
                     "alpha_mean_unflagged": float(a[keep].mean()) if keep.any() else float("nan")})
    return pd.DataFrame(rows, columns=["block", "flagged", "n_flagged", "alpha_mean", "alpha_mean_unflagged"])


def role_summary(df: pd.DataFrame, metric: str = "alpha") -> pd.DataFrame:
    """Per role: number of matrices, median / mean / min / max of ``metric`` over finite values, and status counts."""
    _check_metric(df, metric)
    rows = []
    for role, g in df.groupby("role", sort=False):
        v = g[metric].to_numpy(dtype=np.float64)
        v = v[np.isfinite(v)]
        st = g["status"].value_counts()
        rows.append({"role": role, "n": len(g), f"median_{metric}": float(np.median(v)) if v.size else float("nan"),
                     f"mean_{metric}": float(np.mean(v)) if v.size else float("nan"),
                     f"min_{metric}": float(np.min(v)) if v.size else float("nan"),
                     f"max_{metric}": float(np.max(v)) if v.size else float("nan"),
                     **{s: int(st.get(s, 0)) for s in ("ok", "over-trained", "under-trained", "failed")}})
    return pd.DataFrame(rows)
