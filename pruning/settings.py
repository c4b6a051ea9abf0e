"""Every setting of a pruning run, in one place: nested dataclasses that check themselves on construction.

:class:`PruneSettings` = :class:`PrunerSettings` (which layer pruner, its options, the error-correction mode) +
:class:`AllocationSettings` (the target sparsity or N:M pattern and how it is spread over the matrices) +
:class:`CalibrationSettings` (the calibration windows) + :class:`GDSettings` (masked gradient steps after the
pruner). :class:`EvalSettings` and :class:`OutputSettings` hold what the ``prune`` command does around a run
(perplexity evaluation, where and how the model is written); they are not part of a run's identity.

Each field is declared once with :func:`spectra.options.option` — default, help, bounds, choices (read from the
registries: :data:`pruning.pruners.PRUNERS`, :data:`pruning.allocation.ALLOCATION_METHODS`, ...), command-line
flag and widget range — and the command line (:func:`spectra.options.add_options`) and the app's widgets
(``webapp/widgets.py``) are built from those fields. Every instance is immutable; change one with
:meth:`PruneSettings.replace`, which takes the flat names of :meth:`PruneSettings.flat` (``pruner``,
``allocation``, ``sparsity``, ``lam``, ``nsamples``, ``gd_steps``, ...): the names reports and sweep tables record.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Optional

from pruning.allocation import allocation_options
from pruning.allocation.mappings import GRANULARITIES, MAPPINGS
from pruning.allocation.registry import ALLOCATION_METHODS, CALIBRATION_METHODS
from pruning.block_loop import CORRECTIONS
from pruning.pruners import DEFAULT_PRUNER, NM, PRUNERS, get_pruner, parse_nm
from pruning.pruners.masks import nm_sparsity
from spectra.hill import XMIN_RULES
from spectra.options import check_options, option, options_of

__all__ = ["PrunerSettings", "AllocationSettings", "CalibrationSettings", "GDSettings", "PruneSettings",
           "EvalSettings", "OutputSettings", "LATER_FIELDS", "SECTIONS"]

#: xmin rules a pruning run may use (``fixed`` needs a value, which an allocation has no field for)
PRUNE_XMIN_RULES = tuple(r for r in XMIN_RULES if r != "fixed")


def _pruner_names() -> tuple:
    return tuple(PRUNERS)


@dataclass(frozen=True)
class PrunerSettings:
    """Which layer pruner runs and how (see :mod:`pruning.pruners` and :func:`pruning.block_loop.prune_blocks`)."""

    name: str = option(DEFAULT_PRUNER, "layer pruner", dest="pruner", flag="--pruner", choices=_pruner_names,
                       label="pruner")
    options: dict = option(help="the pruner's own options (--pruner-opt KEY=VALUE)", kind=dict, flag=None,
                           dest="pruner_options", default_factory=dict)
    correction: Optional[str] = option(None, "error-correction mode: sequential (Wanda/SparseGPT reference loop), "
                                       "none, intra, intra+inter (FISTAPruner's ablation) or intra-pruned; default: "
                                       "the pruner's own (intra for fista, sequential otherwise)", kind=str,
                                       choices=CORRECTIONS)
    # flat name ``sublayer_sequential`` (its name before "sequential" came to mean the correction mode only): sweep
    # keys and reports written before the rename keep resuming and reading
    sublayers_in_order: Optional[bool] = option(None, "prune the layers of a block one input group at a time, in "
                                                "call order (default: the pruner's own)", kind=bool, flag=None,
                                                dest="sublayer_sequential")

    def __post_init__(self) -> None:
        check_options(self)
        object.__setattr__(self, "options", dict(self.options or {}))
        spec = get_pruner(self.name)
        unknown = sorted(set(self.options) - set(spec.options))
        if unknown:
            known = ", ".join(spec.options) if spec.options else "none"
            raise ValueError(f"pruner {self.name!r} has no option(s) {', '.join(unknown)}; its options: {known}")

    def resolved_correction(self) -> str:
        """The error-correction mode this run uses (``correction``, or the pruner's default)."""
        return self.correction if self.correction is not None else get_pruner(self.name).correction


@dataclass(frozen=True)
class AllocationSettings:
    """The target (global sparsity S, or an N:M pattern) and how it is spread over the block matrices
    (:func:`pruning.allocation.allocate`). Under ``nm`` the allocation is uniform and ``sparsity`` is the pattern's."""

    method: str = option("uniform", "layer-wise allocation", dest="allocation", flag="--allocation",
                         choices=ALLOCATION_METHODS, label="allocation")
    sparsity: float = option(0.5, "target global sparsity (parameter-weighted over the block matrices)", lo=0.0,
                             hi=1.0, hi_open=True, ui={"lo": 0.05, "hi": 0.95, "step": 0.05})
    nm: Optional[str] = option(None, "N:M pattern, e.g. 2:4: N of every M consecutive weights of a row are kept "
                               "(needs --allocation uniform)", kind=str, label="pattern")
    lam: float = option(0.3, "AlphaPruning's λ (the reference's 'epsilon'): sparsities spread over [1−λ, 1+λ]·S",
                        lo=0.0, hi=1.0, label="λ (AlphaPruning)", ui={"step": 0.05})
    mapping: str = option("linear", "AlphaPruning's map from metric to sparsity (linear is the reference's)",
                          choices=MAPPINGS)
    granularity: str = option("block", "one sparsity per block (the reference's) or per matrix",
                              choices=GRANULARITIES)
    metric: str = option("alpha", "metric column AlphaPruning reads (stable_rank reads its own)")
    xmin_rule: str = option("peak", "Hill-fit xmin rule of the spectral metrics", choices=PRUNE_XMIN_RULES,
                            label="xmin rule")
    owl_lambda: float = option(0.08, "OWL's λ (largest deviation from S)", lo=0.0, hi=1.0, label="OWL λ")
    owl_M: float = option(5.0, "OWL's outlier multiplier M", lo=0.0, flag="--owl-m", label="OWL M")
    atp_beta: float = option(0.0, "ATP's β: block i gets S − β(L−1)/2 + β·i (0 = uniform; at most "
                             "min(2S, 2(1−S))/(L−1))", lo=0.0, hi=1.0, label="ATP β", ui={"step": 0.001})
    dlp_alpha: float = option(0.15, "DLP's α (largest deviation from S)", lo=0.0, hi=1.0, label="DLP α")
    min_sparsity: float = option(0.0, "floor of every matrix's sparsity", lo=0.0, hi=1.0, hi_open=True,
                                 label="min sparsity", ui={"lo": 0.0, "hi": 0.9, "step": 0.05})
    max_sparsity: float = option(0.99, "cap of every matrix's sparsity", lo=0.0, hi=1.0,
                                 label="max sparsity", ui={"lo": 0.5, "hi": 1.0, "step": 0.01})
    exclude_flagged: bool = option(False, "alphapruning: leave fits flagged as likely spurious (α > 8) out of "
                                   "their block's mean α (ours; off = the reference)")
    file: Optional[str] = option(None, "Contract 2 JSON/CSV allocation that replaces --allocation (with --allocation "
                                 "sensitivity: the measured table it reads)", kind=str,
                                 dest="allocation_file", label="allocation file")

    def __post_init__(self) -> None:
        if isinstance(self.nm, (tuple, list)):
            object.__setattr__(self, "nm", f"{self.nm[0]}:{self.nm[1]}")
        check_options(self)
        nm = self.nm_tuple()
        if nm is not None:
            if self.method != "uniform" or self.file:
                what = "an allocation file" if self.file else f"allocation {self.method!r}"
                raise ValueError(f"N:M sparsity ({self.nm}) gives every matrix the same pattern, so it needs "
                                 f"allocation 'uniform', not {what}; drop --nm or use --allocation uniform")
            object.__setattr__(self, "nm", f"{nm[0]}:{nm[1]}")
            object.__setattr__(self, "sparsity", nm_sparsity(nm))
        else:
            object.__setattr__(self, "nm", None)
        if self.min_sparsity > self.max_sparsity:
            raise ValueError(f"--min-sparsity {self.min_sparsity:g} is above --max-sparsity {self.max_sparsity:g}; "
                             f"lower the floor or raise the cap")
        if self.exclude_flagged and (self.method != "alphapruning" or self.file):
            what = "an allocation file" if self.file else f"allocation {self.method!r}"
            raise ValueError(f"exclude_flagged (--exclude-flagged) applies to allocation 'alphapruning' (its "
                             f"power-law fits), not {what}")
        if self.file is not None and not os.path.isfile(self.file):
            raise ValueError(f"allocation file {self.file} not found")

    def nm_tuple(self) -> Optional[NM]:
        """``(N, M)`` of the pattern, or None (unstructured)."""
        return parse_nm(self.nm)

    def allocate_kwargs(self, weights=None, outlier_ratios=None, signal=None) -> dict:
        """The keyword arguments of :func:`pruning.allocation.allocate` that this method reads
        (:func:`pruning.allocation.allocation_options`); ``weights`` / the calibration ``signal`` (OWL's
        ``outlier_ratios``, DLP's block scores) for the methods that need them."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                  if f.name not in ("method", "sparsity", "nm", "xmin_rule", "file", "min_sparsity", "max_sparsity")}
        return allocation_options(self.method, min_sparsity=self.min_sparsity, max_sparsity=self.max_sparsity,
                                  weights=weights, signal=signal if signal is not None else outlier_ratios, **fields)

    @property
    def is_uniform(self) -> bool:
        """Every matrix gets the same sparsity (no allocation to compute)."""
        return self.method == "uniform" and not self.file


@dataclass(frozen=True)
class CalibrationSettings:
    """The calibration windows: ``nsamples`` × ``seqlen`` tokens of C4 (random starts from ``seed``), forwarded
    ``batch_size`` windows at a time (:func:`pruning.evaluation.data.get_calibration`)."""

    dataset: str = option("c4", "calibration text (only C4 has documents held out from evaluation here)",
                          dest="calib_dataset", flag=None, choices=("c4",))
    nsamples: int = option(128, "calibration windows", lo=1, label="calibration samples", ui={"lo": 1, "hi": 256})
    seqlen: int = option(512, "calibration window length in tokens", lo=1, label="tokens per sample",
                         ui={"lo": 32, "hi": 2048, "step": 32})
    seed: int = option(0, "calibration seed")
    batch_size: int = option(8, "calibration windows per block forward", lo=1)
    data_path: Optional[str] = option(None, "folder with the data files (default $SPL_DATA_DIR, ../shared/data)",
                                      kind=str, flag="--data-dir", label="data folder")

    def __post_init__(self) -> None:
        check_options(self)


@dataclass(frozen=True)
class GDSettings:
    """Masked gradient descent after the pruner (:func:`pruning.pruners.gd.masked_gd`)."""

    steps: int = option(0, "masked gradient steps after the pruner on each layer's ½‖W*X* − WX‖F² over the "
                        "kept weights (the mask stays, the loss never increases; Kübler et al. 2025)", lo=0,
                        dest="gd_steps", label="masked GD steps", ui={"lo": 0, "hi": 1000, "step": 10})
    precondition: bool = option(True, "masked GD on diagonally rescaled weights (ours): monotone like plain GD, "
                                "much faster on LLM inputs", dest="gd_precondition", flag="--gd-precondition",
                                off_flag="--gd-plain", label="precondition GD",
                                off_help="masked GD with the paper's plain 1/λ_max(H) steps (near no-ops on LLM "
                                         "layers)")

    def __post_init__(self) -> None:
        check_options(self)


#: the sections of :class:`PruneSettings`, by attribute
SECTIONS = {"pruner": PrunerSettings, "allocation": AllocationSettings, "calibration": CalibrationSettings,
            "gd": GDSettings}
#: flat name (reports, sweep keys, CLI dests) → (section, field)
_FLAT = {o.dest: (sec, o.name) for sec, cls in SECTIONS.items() for o in options_of(cls)}
#: fields added after sweep tables existed, with the value tables written before them ran with
#: (see :meth:`PruneSettings.key_dict`)
LATER_FIELDS = {"gd_precondition": False, "exclude_flagged": False, "min_sparsity": 0.0, "atp_beta": 0.0,
                "dlp_alpha": 0.15}


@dataclass(frozen=True)
class PruneSettings:
    """Every setting of one pruning run (all recorded in reports and sweep keys), in four checked sections.

    Build one from the flat names with :meth:`from_flat` (``PruneSettings.from_flat(pruner="sparsegpt",
    allocation="alphapruning", sparsity=0.7, lam=0.3)``) or from the sections; the cross-section rules (a pruner
    that makes one N:M pattern only, N:M without an allocation, ...) are checked on construction.
    """

    pruner: PrunerSettings = field(default_factory=PrunerSettings)
    allocation: AllocationSettings = field(default_factory=AllocationSettings)
    calibration: CalibrationSettings = field(default_factory=CalibrationSettings)
    gd: GDSettings = field(default_factory=GDSettings)

    def __post_init__(self) -> None:
        for name, cls in SECTIONS.items():
            if not isinstance(getattr(self, name), cls):
                raise TypeError(f"PruneSettings.{name} must be a {cls.__name__} (got "
                                f"{type(getattr(self, name)).__name__}); use PruneSettings.from_flat(...) for flat "
                                f"names")
        self.validate()

    # ------------------------------------------------------------------ flat view
    @classmethod
    def from_flat(cls, **flat: Any) -> PruneSettings:
        """Settings from flat names (:meth:`flat`'s keys); the others keep their defaults."""
        return cls().replace(**flat)

    def replace(self, **flat: Any) -> PruneSettings:
        """A copy with the given flat-named settings changed (checked; one-line ValueError naming an unknown one)."""
        unknown = sorted(set(flat) - set(_FLAT))
        if unknown:
            raise ValueError(f"no pruning setting {', '.join(map(repr, unknown))}; settings: {', '.join(_FLAT)}")
        per: dict[str, dict] = {}
        for key, value in flat.items():
            sec, name = _FLAT[key]
            per.setdefault(sec, {})[name] = value
        sections = {}
        for sec, changes in per.items():
            current = getattr(self, sec)
            if sec == "allocation" and "nm" in changes and changes["nm"] is None and "sparsity" not in changes \
                    and current.nm is not None:
                changes["sparsity"] = AllocationSettings().sparsity  # leaving a pattern: the pattern's S was derived
            sections[sec] = dataclasses.replace(current, **changes)
        return dataclasses.replace(self, **sections)

    def flat(self) -> dict:
        """Every setting under its flat name (the ``settings`` record of reports and the sweep key); a copy, so
        that changing it never changes these (frozen) settings."""
        out = {key: getattr(getattr(self, sec), name) for key, (sec, name) in _FLAT.items()}
        out["pruner_options"] = dict(out["pruner_options"])
        return out

    as_dict = flat

    def key_dict(self) -> dict:
        """:meth:`flat` without the fields added after the first release (:data:`LATER_FIELDS`) that are at
        their defaults — the identity of a run in sweep tables, so that tables written earlier still resume."""
        d = self.flat()
        for name, default in LATER_FIELDS.items():
            if d.get(name) == default:
                d.pop(name, None)
        return d

    # ------------------------------------------------------------------ rules and derived values
    def validate(self) -> PruneSettings:
        """The rules between sections (each section checked itself); returns self."""
        spec = get_pruner(self.pruner.name)
        nm = self.allocation.nm_tuple()
        only = spec.only_nm
        if only is not None and nm != only:
            raise ValueError(f"pruner {self.pruner.name!r} produces {only[0]}:{only[1]} sparsity only; pass --nm "
                             f"{only[0]}:{only[1]}")
        if nm is not None and not spec.supports_nm:
            raise ValueError(f"pruner {self.pruner.name!r} does not support N:M patterns; drop --nm")
        return self

    def nm_tuple(self) -> Optional[NM]:
        return self.allocation.nm_tuple()

    def resolved_correction(self) -> str:
        return self.pruner.resolved_correction()

    def loop_needs_calibration(self) -> bool:
        """The pruning loop reads calibration statistics (the pruner is not calibration-free, or masked GD runs)."""
        return not get_pruner(self.pruner.name).calibration_free or self.gd.steps > 0

    def needs_calibration(self) -> bool:
        """The run needs calibration windows: for the loop, or for OWL's outlier ratios."""
        return self.loop_needs_calibration() or (self.allocation.method in CALIBRATION_METHODS and
                                                  not self.allocation.file)


@dataclass(frozen=True)
class EvalSettings:
    """Evaluation around a run: perplexity (:func:`pruning.evaluation.perplexity.perplexity`) and lm-eval zero-shot
    tasks (:func:`pruning.evaluation.lmeval.evaluate_tasks`)."""

    datasets: str = option("wikitext2", "perplexity dataset(s), comma-separated: wikitext2, c4, ptb, or none",
                           dest="eval", flag="--eval", label="eval dataset")
    seqlen: Optional[int] = option(None, "evaluation window length (default min(2048, the model's positions))",
                                   kind=int, lo=1, dest="eval_seqlen", flag="--eval-seqlen")
    max_windows: Optional[int] = option(None, "evaluate only the first N windows (default all)", kind=int, lo=1,
                                        label="eval windows", ui={"lo": 1, "hi": 512})
    tasks: Optional[str] = option(None, "lm-eval zero-shot tasks after the prune, comma-separated (e.g. "
                                  "lambada_openai,piqa: offline from the local data; needs the eval extra)", kind=str,
                                  dest="eval_tasks", flag="--eval-tasks", label="zero-shot tasks (lm-eval)")
    task_limit: Optional[int] = option(None, "lm-eval's first N documents of each --eval-tasks task (default all)",
                                       kind=int, lo=1, dest="eval_limit", flag="--eval-limit",
                                       label="documents per task", ui={"lo": 1, "hi": 5153})

    def __post_init__(self) -> None:
        check_options(self)

    def dataset_list(self) -> list[str]:
        """The canonical dataset names (empty for ``none``); one-line ValueError for an unknown one."""
        from pruning.evaluation.data import canonical_name

        text = (self.datasets or "none").strip()
        return [] if text.lower() == "none" else [canonical_name(t) for t in text.split(",") if t.strip()]

    def task_list(self) -> list[str]:
        """The lm-eval task names of ``tasks`` (empty when none); imports no lm-eval."""
        from pruning.evaluation.lmeval import parse_tasks

        return parse_tasks(self.tasks)


@dataclass(frozen=True)
class OutputSettings:
    """Where and how ``prune`` computes and writes the pruned model."""

    out: Optional[str] = option(None, "output directory for the pruned model and report.json", kind=str,
                                required=True)
    overwrite: bool = option(False, "replace an existing --out directory")
    device: str = option("cpu", "compute device: cpu or cuda")
    dtype: Optional[str] = option(None, "storage and block-compute precision: bfloat16, float16, float32 (default "
                                  "float32 on cpu, the checkpoint's dtype on cuda)", kind=str)
    stream: bool = option(False, "larger than RAM: read one decoder block at a time from the safetensors shards of "
                          "MODEL (a local HF folder) and write the pruned model shard by shard")
    shard_size: str = option("256MB", "largest output shard with --stream (the writer holds one shard in memory)")
    dense_eval: bool = option(True, "also evaluate the dense model", off_flag="--no-dense-eval",
                              off_help="skip the dense model's perplexity")

    def __post_init__(self) -> None:
        check_options(self)
