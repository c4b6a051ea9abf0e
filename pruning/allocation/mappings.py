"""The allocation methods' formulas: AlphaPruning / stable-rank ratios, ERK factors, LAMP scores, OWL outlier
ratios, the bound-respecting re-solve of each family's free scalar, and the argument checks (see
:mod:`pruning.allocation` for the methods and their sources)."""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

GRANULARITIES = ("block", "matrix")
MAPPINGS = ("linear", "log")
DIRECTIONS = ("higher_more", "lower_more")
OUTPUT_COLUMNS = ["longname", "block", "role", "num_params", "metric", "sparsity"]

TOL = 1e-12


class AllocationError(ValueError):
    """The requested allocation cannot be produced (infeasible target, unusable metrics); one-line message."""


# ----------------------------------------------------------------------------------------------------- validation
def check_sparsity(sparsity: Any) -> float:
    try:
        s = float(sparsity)
    except (TypeError, ValueError):
        raise ValueError(f"sparsity must be a number in [0, 1), got {sparsity!r}") from None
    if not (0.0 <= s < 1.0):
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity!r}; e.g. 0.7 for 70% of the weights removed")
    return s


def check_direction(direction: Union[str, bool]) -> bool:
    """``"higher_more"``/True → True (higher metric ⇒ more sparsity); ``"lower_more"``/False → False."""
    if isinstance(direction, (bool, np.bool_)):
        return bool(direction)
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; choose one of: {', '.join(DIRECTIONS)} (or a bool, "
                         f"True = higher_more)")
    return direction == "higher_more"


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of: {', '.join(choices)}")
    return value


def fit_mean(base: np.ndarray, p: np.ndarray, target: float, lo: float, hi: float, kind: str,
              what: str = "sparsity") -> tuple[np.ndarray, float]:
    """Solve for c with Σ p_i·f_i(c) = target·Σ p_i, f_i(c) = clip(c·b_i, lo, hi) ("scale", b_i ≥ 0, c ≥ 0)
    or clip(b_i + c, lo, hi) ("shift"). g(c) is piecewise linear and non-decreasing: found exactly from its
    breakpoints. Returns (values, c). Raises AllocationError when target is outside g's range."""
    b = np.asarray(base, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    P = p.sum()
    T = target * P
    if kind == "scale":
        if (b < 0).any():
            raise AllocationError("internal: negative base value in a multiplicative allocation")
        pos = b > 0
        cs = np.concatenate([[0.0], lo / b[pos], hi / b[pos]])

        def f(c):
            return np.clip(np.multiply.outer(np.atleast_1d(c), b), lo, hi)
    elif kind == "shift":
        cs = np.concatenate([lo - b, hi - b])

        def f(c):
            return np.clip(np.add.outer(np.atleast_1d(c), b), lo, hi)
    else:  # pragma: no cover - internal
        raise ValueError(kind)
    cs = np.unique(cs)
    gs = f(cs) @ p
    if T < gs[0] - 1e-9 * P or T > gs[-1] + 1e-9 * P:
        raise AllocationError(
            f"target {what} {target:g} cannot be met: within [{lo:g}, {hi:g}] this allocation reaches mean "
            f"{what} only in [{gs[0] / P:.6g}, {gs[-1] / P:.6g}]; change the target, max_sparsity/min_sparsity "
            f"or the method's range (lam)")
    j = int(np.searchsorted(gs, T, side="left"))
    if j <= 0:
        c = cs[0]
    elif j >= len(cs):
        c = cs[-1]
    else:
        g0, g1 = gs[j - 1], gs[j]
        c = cs[j] if g1 == g0 else cs[j - 1] + (T - g0) * (cs[j] - cs[j - 1]) / (g1 - g0)
    values = f(c)[0]
    # polish the last rounding error on the free entries (those strictly inside the bounds)
    free = (values > lo + TOL) & (values < hi - TOL)
    resid = T - values @ p
    if free.any() and abs(resid) > 0:
        values[free] = np.clip(values[free] + resid / p[free].sum(), lo, hi)
    return values, float(c)


def bound_note(raw: np.ndarray, lo: float, hi: float, names: Sequence[str], what: str = "sparsity") -> Optional[str]:
    """Describe the entries of an unbounded solution that fall outside [lo, hi] (None if none)."""
    above = raw > hi + TOL
    below = raw < lo - TOL
    parts = []
    if above.any():
        parts.append(f"{int(above.sum())} matrices above max {what} {hi:g} (raw up to {raw.max():.4g}, "
                     f"e.g. {names[int(np.argmax(raw))]})")
    if below.any():
        parts.append(f"{int(below.sum())} matrices below min {what} {lo:g} (raw down to {raw.min():.4g}, "
                     f"e.g. {names[int(np.argmin(raw))]})")
    return "; ".join(parts) or None


# ---------------------------------------------------------------------------------- metric → ratio mappings
def alphapruning_ratios(metric: np.ndarray, lam: float = 0.3, mapping: str = "linear",
                        higher_more: bool = True) -> np.ndarray:
    """AlphaPruning's un-normalised ratios r_i = (x_i − min x)/(max x − min x)·(s2 − s1) + s1, s1 = 1 − λ, s2 = 1 + λ.

    x = m (``linear``, the reference formula) or log m (``log``, tried in the paper's rebuttal); x = −x when
    ``higher_more`` is False (lower metric ⇒ more sparsity). A constant metric gives r_i = 1 for all (uniform; the
    reference code would divide by zero).
    """
    m = np.asarray(metric, dtype=np.float64)
    if mapping == "log":
        if (m <= 0).any():
            raise AllocationError(f"mapping='log' needs positive metric values, the smallest is {m.min():g}; "
                                  f"use mapping='linear'")
        x = np.log(m)
    else:
        x = m.copy()
    if not higher_more:
        x = -x
    span = x.max() - x.min()
    u = np.full_like(x, 0.5) if span <= 0 else (x - x.min()) / span
    s1, s2 = 1.0 - lam, 1.0 + lam
    return u * (s2 - s1) + s1


def erk_factors(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Erdős–Rényi-Kernel raw density factor (n_in + n_out)/(n_in·n_out) of each (out, in) matrix (Evci et al.)."""
    r = np.asarray(rows, dtype=np.float64)
    c = np.asarray(cols, dtype=np.float64)
    return (r + c) / (r * c)


def as_numpy_abs(w: Any) -> np.ndarray:
    """|w| flattened as a float32/float64 numpy array (torch tensors of any float dtype or arrays)."""
    if hasattr(w, "detach"):  # a torch tensor (torch is imported lazily: the CLI does not need it)
        import torch

        t = w.detach().cpu()
        if t.dtype not in (torch.float32, torch.float64):
            t = t.to(torch.float32)
        return np.abs(t.numpy().ravel())
    a = np.asarray(w)
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float32)
    return np.abs(a.ravel())


def lamp_scores_sorted(w: Any) -> np.ndarray:
    """LAMP scores of one matrix in ascending-|w| order: score(u) = w_u² / Σ_{v≥u} w_v² (float64; 0/0 → 0).

    (Lee et al., ICLR 2021.) The sequence is non-decreasing, the last score is 1.
    """
    a = as_numpy_abs(w)  # a new array: sorted in place
    a.sort()
    sq = a.astype(np.float64)  # sorted in the input precision (faster), squared in fp64
    np.square(sq, out=sq)
    suffix = np.cumsum(sq[::-1])[::-1]  # Σ_{v≥u} w_v²: non-increasing, so sq/suffix stays non-decreasing
    return _lamp_ratio(sq, suffix, out=sq)


def _lamp_ratio(sq: np.ndarray, suffix: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
    """LAMP's score w_u² / Σ_{v≥u} w_v² from the squares and their suffix sums (float64), 0/0 → 0 (only an all-zero
    matrix has it)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.divide(sq, suffix, out=out)
    out[np.isnan(out)] = 0.0
    return out


#: entries per stored suffix sum in :class:`LampScores` (a count recomputes one such run of scores)
LAMP_RUN = 2048


class LampScores:
    """The LAMP scores of one matrix (:func:`lamp_scores_sorted`'s array, the same float64 values bit for bit) kept
    as its |w| sorted in their own precision plus every :data:`LAMP_RUN`-th suffix sum Σ_{v≥u} w_v² and score: about
    half the memory of the float64 scores (4 bytes a weight for float32 weights instead of 8). ``searchsorted`` and
    indexing recompute one run of scores from the stored suffix sum above it in the reference's summation order
    (``np.cumsum`` of the reversed squares is sequential), so every count equals ``np.searchsorted`` on the full
    array. What :func:`threshold_fit` reads: ``size``, ``dtype``, ``[0]``, ``[-1]``, ``searchsorted``.
    """

    dtype = np.dtype(np.float64)

    def __init__(self, w: Any, run: Optional[int] = None):
        run = LAMP_RUN if run is None else int(run)
        if run < 1:
            raise ValueError(f"LampScores: run must be a positive number of entries (default {LAMP_RUN}), got {run}")
        a = as_numpy_abs(w)  # a new array: sorted in place and kept
        a.sort()
        self.a, self.run, self.size = a, run, int(a.size)
        sq = a.astype(np.float64)
        np.square(sq, out=sq)
        suffix = np.cumsum(sq[::-1])[::-1]
        # suffix sum and score at every run start, and 0.0 past the end (the reference's first sum is 0 + x)
        self.suffix = np.append(suffix[::self.run], 0.0)
        self.starts = _lamp_ratio(sq[::self.run], suffix[::self.run])
        self._last: tuple = (-1, None)

    def __len__(self) -> int:
        return self.size

    def _scores(self, lo: int, hi: int) -> np.ndarray:
        """The exact scores of entries lo … hi−1 (hi a run end or the size), from the suffix sum at hi."""
        sq = np.square(self.a[lo:hi].astype(np.float64))
        top = self.suffix[-1] if hi >= self.size else self.suffix[hi // self.run]
        return _lamp_ratio(sq, np.cumsum(np.concatenate(([top], sq[::-1])))[:0:-1])

    def _run_scores(self, r: int) -> np.ndarray:
        """The scores of run ``r`` (the last run asked is kept: a threshold search asks the same one repeatedly)."""
        last = self._last
        if last[0] != r:
            last = self._last = (r, self._scores(r * self.run, min((r + 1) * self.run, self.size)))
        return last[1]

    def __getitem__(self, i: int) -> float:
        i = int(i) + (self.size if int(i) < 0 else 0)
        if not 0 <= i < self.size:
            raise IndexError(f"index {i} out of range for {self.size} scores")
        return self._run_scores(i // self.run)[i % self.run]

    def searchsorted(self, t: float, side: str = "left") -> int:
        """``np.searchsorted(scores, t, side)`` of the full score array."""
        j = int(np.searchsorted(self.starts, t, side=side))  # run starts counted
        if j == 0:
            return 0
        return (j - 1) * self.run + int(np.searchsorted(self._run_scores(j - 1), t, side=side))


def _float_key(x: np.ndarray) -> np.ndarray:
    """Monotone integer key of non-negative floats (their IEEE bit pattern)."""
    return x.view(np.int32 if x.dtype == np.float32 else np.int64)


def threshold_fit(sorted_scores: Sequence[Union[np.ndarray, LampScores]], S: float, lo: float, hi: float,
                  names: Sequence[str], presorted: bool = True) -> tuple[np.ndarray, float, Optional[str]]:
    """One global threshold t over per-matrix ascending score arrays, honouring per-matrix bounds.

    Matrix i prunes clip(#{scores_i < t}, lo·n_i, hi·n_i) entries; t is the smallest data value with enough
    pruned entries; the remainder up to S·Σn is taken from the entries equal to t, matrix by matrix in input order
    (= a stable sort of the concatenated scores), fractionally for the last one. Equivalent to greedily pruning
    the globally lowest scores one at a time and skipping matrices that reached their cap, after first pruning
    the lo·n_i lowest of each matrix. Returns (sparsities, t, note). ``presorted=False``: the arrays are in any
    order; t is then found from a histogram of their IEEE keys (:func:`_smallest_key`) and every count is a
    comparison — the same t and sparsities without sorting anything (global magnitude's |w|). A sorted entry may
    also be a :class:`LampScores` (read through ``size``, ``[0]``, ``[-1]`` and ``searchsorted``).
    """
    n = np.array([len(s) for s in sorted_scores], dtype=np.float64)
    N = n.sum()
    T = S * N
    lo_n, hi_n = lo * n, hi * n
    if T < lo_n.sum() - 1e-9 * N or T > hi_n.sum() + 1e-9 * N:
        raise AllocationError(f"target sparsity {S:g} cannot be met within [{lo:g}, {hi:g}]; "
                              f"change the target or max_sparsity/min_sparsity")
    dtype = np.result_type(*[s.dtype for s in sorted_scores])
    arrays = [s.astype(dtype, copy=False) if isinstance(s, np.ndarray) else s for s in sorted_scores]
    if any(a.size and ((isinstance(a, np.ndarray) and np.isnan(a).any()) or (a[0] if presorted else a.min()) < 0)
           for a in arrays):
        raise AllocationError("scores must be finite and non-negative (NaN weights?)")
    ikey = np.int32 if dtype == np.float32 else np.int64

    def counts(t, side):
        if presorted:
            return np.array([a.searchsorted(t, side=side) for a in arrays], dtype=np.float64)
        return np.array([np.count_nonzero(a <= t if side == "right" else a < t) for a in arrays], dtype=np.float64)

    def g_le(t):
        return np.clip(counts(t, "right"), lo_n, hi_n).sum()

    top = max((a[-1] if presorted else a.max()) for a in arrays if a.size)
    if g_le(dtype.type(0.0)) >= T - 1e-9:
        t = dtype.type(0.0)
    elif not presorted:
        t = _smallest_key(arrays, lo_n, hi_n, T, top)
    else:  # smallest key k with g_le(value(k)) >= T; g_le(top) = Σ hi_n >= T
        a_k, b_k = int(_float_key(np.array([0.0], dtype=dtype))[0]), int(_float_key(np.array([top], dtype=dtype))[0])
        while b_k - a_k > 1:
            mid = (a_k + b_k) // 2
            if g_le(np.array([mid], dtype=ikey).view(dtype)[0]) >= T - 1e-9:
                b_k = mid
            else:
                a_k = mid
        t = np.array([b_k], dtype=ikey).view(dtype)[0]
    c_lt, c_le = counts(t, "left"), counts(t, "right")
    base = np.clip(c_lt, lo_n, hi_n)
    room = np.clip(c_le, lo_n, hi_n) - base
    rest = T - base.sum()
    extra = np.zeros_like(base)
    for i in range(len(arrays)):
        if rest <= 0:
            break
        take = min(rest, room[i])
        extra[i] = take
        rest -= take
    pruned = base + extra
    note_parts = []
    capped = c_lt > hi_n + TOL
    raised = c_le < lo_n - TOL
    if capped.any():
        note_parts.append(f"{int(capped.sum())} matrices capped at max sparsity {hi:g} (e.g. "
                          f"{names[int(np.argmax(capped))]}); threshold recomputed over the others")
    if raised.any():
        note_parts.append(f"{int(raised.sum())} matrices raised to min sparsity {lo:g}")
    return pruned / n, float(t), ("; ".join(note_parts) or None)


def _smallest_key(arrays: Sequence[np.ndarray], lo_n: np.ndarray, hi_n: np.ndarray, T: float, top):
    """The value :func:`threshold_fit`'s bisection finds, from unsorted non-negative arrays: the smallest float t
    (> 0) with Σ_i clip(#{a_i ≤ t}, lo_n_i, hi_n_i) ≥ T − 1e-9 (``top`` when there is none). The count only changes
    at data values, so t is one: the IEEE keys (monotone in the value) are binned by their top 16 bits, the first
    bin whose end passes gives the counts below it, and its own entries (a small share) are searched exactly."""
    keys = [_float_key(a) for a in arrays]
    shift = 8 * keys[0].dtype.itemsize - 16
    passed = np.zeros(1 << 15, dtype=np.float64)  # Σ_i clip(#{a_i ≤ end of bin j}, lo_n_i, hi_n_i) per bin j
    for k, lo_i, hi_i in zip(keys, lo_n, hi_n):
        passed += np.clip(np.cumsum(np.bincount(k >> shift, minlength=1 << 15)), lo_i, hi_i)
    ok = passed >= T - 1e-9
    if not ok.any():
        return top
    j = int(np.argmax(ok))
    below = np.array([np.count_nonzero((k >> shift) < j) for k in keys], dtype=np.float64)
    inside = [np.sort(k[(k >> shift) == j]) for k in keys]
    cand = np.unique(np.concatenate(inside))
    a_i, b_i = -1, len(cand) - 1  # the last candidate (the bin's largest key) passes
    while b_i - a_i > 1:
        mid = (a_i + b_i) // 2
        c = below + np.array([np.searchsorted(s, cand[mid], side="right") for s in inside], dtype=np.float64)
        if np.clip(c, lo_n, hi_n).sum() >= T - 1e-9:
            b_i = mid
        else:
            a_i = mid
    return cand[b_i:b_i + 1].view(arrays[0].dtype)[0]


# ------------------------------------------------------------------------------------------------------- OWL
def block_of(longname: str) -> int:
    """Transformer block index of a module path (same rule as spectra.weights.classify), -1 if none."""
    from spectra.weights import classify

    return classify(longname)[1]


def wanda_score(name: str, W, input_sq_norms: dict):
    """|W_ij|·‖X_j‖₂ of one matrix (Wanda's score, Sun et al. 2024; OWL's and DLP's statistic), float64;
    ``input_sq_norms[name]`` holds Σ x² per input feature (one-line ValueError when missing or mis-shaped)."""
    import torch

    if name not in input_sq_norms:
        raise ValueError(f"input_sq_norms has no entry for {name!r}; collect Σ x² per input feature for it")
    W = torch.as_tensor(W).detach().to(torch.float64)
    x = torch.as_tensor(input_sq_norms[name]).detach().to(torch.float64).reshape(-1)
    if W.ndim != 2 or x.numel() != W.shape[1]:
        raise ValueError(f"{name}: input_sq_norms has {x.numel()} entries but W has shape {tuple(W.shape)} "
                         f"(need one per input column)")
    return W.abs() * x.clamp_min(0).sqrt()[None, :]


def names_by_block(names: Iterable[str], blocks: Optional[Mapping[str, int]] = None) -> dict[int, list[str]]:
    """{block index: its names in input order}, blocks ascending; the block from ``blocks`` or from the name
    (``block_of``); a one-line ValueError for a name with neither."""
    groups: dict[int, list[str]] = {}
    for name in names:
        b = int(blocks[name]) if blocks is not None and name in blocks else block_of(name)
        if b < 0:
            raise ValueError(f"cannot tell the transformer block of {name!r}; pass blocks={{longname: index}}")
        groups.setdefault(b, []).append(name)
    return dict(sorted(groups.items()))


def owl_outlier_ratios(weights: Mapping[str, Any], input_sq_norms: Mapping[str, Any], M: float = 5.0, *,
                       granularity: str = "block", blocks: Optional[Mapping[str, int]] = None,
                       progress_cb: Optional[Callable[[int, int], None]] = None) -> dict[Union[int, str], float]:
    """OWL's layer-wise outlier ratio D: the share of Wanda scores |W_ij|·‖X_j‖₂ above M × their mean.

    ``input_sq_norms[name]`` is Σ_t x_tj² per input feature (‖X_j‖₂²). ``granularity="block"`` (default, what OWL's
    code does: ``check_outlier_mean`` on the concatenated scores of all linear layers of a decoder block) returns
    ``{block: D}``; ``"matrix"`` returns ``{longname: D}`` with each matrix's own mean. D is a fraction (OWL's code
    reports percent; the min-max normalisation in :func:`allocate` removes the scale). OWL's ``scaler_row`` is the
    per-token mean Σ_t x²/T instead of the sum: a common factor within a block, so D is the same.
    The float64 scores of one block (or matrix) exist at a time; ``progress_cb(done, total)`` after each.
    (Yin et al., "Outlier Weighed Layerwise Sparsity", ICML 2024.)
    """
    check_choice("granularity", granularity, GRANULARITIES)
    if M <= 0:
        raise ValueError(f"M must be positive (OWL's default 5), got {M}")
    if not weights:
        raise ValueError("weights is empty; pass {longname: W (out, in)} for the prunable matrices")
    groups = {name: [name] for name in weights} if granularity == "matrix" else names_by_block(weights, blocks)
    out: dict[Union[int, str], float] = {}
    for i, g in enumerate(groups):
        scores = [wanda_score(nm, weights[nm], input_sq_norms) for nm in groups[g]]
        count = sum(s.numel() for s in scores)
        thr = M * scores[0].mean() if granularity == "matrix" else M * sum(s.sum().item() for s in scores) / count
        out[g] = float(sum((s > thr).sum().item() for s in scores) / count)
        del scores
        if progress_cb is not None:
            progress_cb(i + 1, len(groups))
    return out
