"""``python -m pruning prune [MODEL]``: allocate, prune, evaluate and save a pruned model with a JSON report.

Example::

    python -m pruning prune --pruner wanda --allocation alphapruning --sparsity 0.7 --lam 0.3 \\
        --nsamples 128 --seqlen 512 --eval wikitext2 --out pruned/wanda-alpha-70

Writes DIR/ (``save_pretrained`` safetensors + tokenizer) and DIR/report.json (per-matrix target and achieved
sparsity, dense and pruned perplexities, timings, peak memory, every setting, seed, package versions, model source
and weight hash). An existing DIR is never replaced without ``--overwrite``. Every user mistake ends with one
``error: ...`` line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

from pruning.cli.common import parse_number

__all__ = ["add_parser", "main", "parse_pruner_options", "run_prune", "settings_from_args"]


def add_common_arguments(p: argparse.ArgumentParser, sweep: bool = False) -> None:
    """Options shared by ``prune`` and ``sweep`` (numbers are parsed later so that errors are one line)."""
    p.add_argument("model", nargs="?", default=None, metavar="MODEL",
                   help="built-in alias, HF directory, .gguf file or hub id (default: built-in SmolLM2-135M)")
    from pruning.allocation import ALLOCATION_METHODS, GRANULARITIES, MAPPINGS
    from pruning.pruners import PRUNERS
    from pruning.prune import PruneSettings
    from spectra.hill import XMIN_RULES

    d = PruneSettings()  # every default below is the settings dataclass's own
    if not sweep:
        p.add_argument("--pruner", default=d.pruner, help=f"{', '.join(PRUNERS)} (default {d.pruner})")
        p.add_argument("--allocation", default=d.allocation,
                       help=f"{', '.join(ALLOCATION_METHODS)} (default {d.allocation})")
        p.add_argument("--sparsity", default=str(d.sparsity),
                       help=f"target global sparsity in [0, 1) (default {d.sparsity})")
        p.add_argument("--nm", default=d.nm, help="N:M pattern, e.g. 2:4 (needs --allocation uniform)")
        p.add_argument("--lam", default=str(d.lam), help=f"AlphaPruning's λ (reference 'epsilon', default {d.lam})")
    p.add_argument("--mapping", default=d.mapping, help=f"AlphaPruning map: {' or '.join(MAPPINGS)} (default "
                                                         f"{d.mapping}, the reference's)")
    p.add_argument("--granularity", default=d.granularity,
                   help=f"{' or '.join(GRANULARITIES)} (default {d.granularity}, the reference's)")
    p.add_argument("--metric", default=d.metric, help=f"spectral metric column for alphapruning (default {d.metric})")
    p.add_argument("--xmin-rule", default=d.xmin_rule,
                   help=f"Hill-fit xmin rule: {', '.join(XMIN_RULES)} (default {d.xmin_rule})")
    p.add_argument("--owl-lambda", default=str(d.owl_lambda), help=f"OWL's λ (default {d.owl_lambda})")
    p.add_argument("--owl-m", default=str(d.owl_M), help=f"OWL's outlier multiplier M (default {d.owl_M:g})")
    p.add_argument("--max-sparsity", default=str(d.max_sparsity),
                   help=f"cap of every matrix's sparsity (default {d.max_sparsity})")
    p.add_argument("--nsamples", default=str(d.nsamples), help=f"calibration windows (default {d.nsamples})")
    p.add_argument("--seqlen", default=str(d.seqlen), help=f"calibration window length in tokens (default {d.seqlen})")
    p.add_argument("--seed", default=str(d.seed), help=f"calibration seed (default {d.seed})")
    p.add_argument("--gd-steps", default=str(d.gd_steps),
                   help=f"masked gradient steps after the pruner (default {d.gd_steps})")
    p.add_argument("--gd-precondition", dest="gd_rule", action="store_const", const="precond", default="precond",
                   help="masked GD on diagonally rescaled weights (the default; monotone like plain GD, much faster "
                        "on LLM inputs; ours)")
    p.add_argument("--gd-plain", dest="gd_rule", action="store_const", const="plain",
                   help="masked GD with the paper's plain 1/λ_max(H) steps (near no-ops on LLM layers)")
    p.add_argument("--pruner-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="pruner option, repeatable (e.g. fista: max_iter=30, search_steps=8, warm_start=sparsegpt; "
                        "prox24: growth=1.25, dtype=float32; sparsegpt: percdamp=0.01)")
    p.add_argument("--correction", default=None,
                   help="error-correction mode: sequential (Wanda/SparseGPT reference loop), none, intra, intra+inter "
                        "(FISTAPruner's ablation) or intra-pruned (default: the pruner's own — intra for fista, "
                        "sequential otherwise)")
    p.add_argument("--batch-size", default=str(d.batch_size),
                   help=f"calibration windows per block forward (default {d.batch_size})")
    p.add_argument("--eval", default="wikitext2", help="perplexity dataset(s), comma-separated: wikitext2, c4, ptb, "
                                                       "or none (default wikitext2)")
    p.add_argument("--eval-seqlen", default=None, help="evaluation window length (default min(2048, max positions))")
    p.add_argument("--max-windows", default=None, help="evaluate only the first N windows (default all)")
    p.add_argument("--data-dir", default=None, help="folder with the data files (default $SPL_DATA_DIR, ../shared/data)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``prune`` sub-command; returns its parser."""
    p = subparsers.add_parser("prune", help="prune a model (allocation × pruner), evaluate it, save it with a report",
                              description=__doc__.splitlines()[0])
    add_common_arguments(p)
    p.add_argument("--out", required=True, help="output directory for the pruned model and report.json")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out directory")
    p.add_argument("--dtype", default=None, help="storage and block-compute precision: bfloat16, float16, float32 "
                                                 "(default float32 on cpu, the checkpoint's dtype on cuda)")
    p.add_argument("--stream", action="store_true",
                   help="larger than RAM: read one decoder block at a time from the safetensors shards of MODEL "
                        "(a local HF folder) and write the pruned model shard by shard")
    p.add_argument("--shard-size", default="256MB", help="largest output shard with --stream (default 256MB; the "
                                                         "writer holds one shard in memory)")
    p.add_argument("--allocation-file", default=None, help="Contract 2 JSON/CSV allocation (replaces --allocation)")
    p.add_argument("--no-dense-eval", action="store_true", help="skip the dense model's perplexity")
    p.add_argument("--exclude-flagged", action="store_true",
                   help="alphapruning: leave fits flagged as likely spurious (α > 8) out of their block's mean α "
                        "(ours; off by default = the reference)")
    p.set_defaults(func=main)
    return p


def parse_pruner_options(items) -> dict:
    """``["max_iter=30", "dtype=float32", ...]`` → ``{"max_iter": 30, "dtype": torch.float32}`` (ints, floats,
    true/false, float32/float64 and strings); one-line ValueError for an item without ``=``."""
    out: dict = {}
    for item in items or []:
        key, sep, text = str(item).partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ValueError(f"--pruner-opt takes KEY=VALUE (got {item!r}), e.g. --pruner-opt max_iter=30")
        text = text.strip()
        val: object = text
        for conv in (int, float):
            try:
                val = conv(text)
                break
            except ValueError:
                continue
        if text.lower() in ("true", "false"):
            val = text.lower() == "true"
        elif text in ("float32", "float64"):
            import torch

            val = getattr(torch, text)
        out[key] = val
    return out


def settings_from_args(args: argparse.Namespace, **override):
    """PruneSettings from parsed options (``override`` replaces fields, e.g. in a sweep); validated."""
    from pruning.prune import PruneSettings

    d = PruneSettings()
    get = lambda k, default=None: override.get(k, getattr(args, k, default))  # noqa: E731
    sparsity = get("sparsity", d.sparsity)
    try:
        sparsity = float(sparsity)
    except (TypeError, ValueError):
        raise ValueError(f"--sparsity must be a number in [0, 1) (got {sparsity!r})") from None
    s = PruneSettings(
        pruner=str(get("pruner", d.pruner)), allocation=str(get("allocation", d.allocation)), sparsity=sparsity,
        nm=get("nm"), lam=parse_number("lam", get("lam", d.lam)), mapping=args.mapping, granularity=args.granularity,
        metric=args.metric, xmin_rule=args.xmin_rule, owl_lambda=parse_number("owl-lambda", args.owl_lambda, lo=0.0),
        owl_M=parse_number("owl-m", args.owl_m, lo=0.0), max_sparsity=parse_number("max-sparsity", args.max_sparsity, lo=0.0, hi=1.0),
        nsamples=parse_number("nsamples", args.nsamples, int, lo=1), seqlen=parse_number("seqlen", args.seqlen, int, lo=1),
        seed=parse_number("seed", args.seed, int), data_path=args.data_dir, gd_steps=parse_number("gd-steps", args.gd_steps, int, lo=0),
        correction=args.correction, batch_size=parse_number("batch-size", args.batch_size, int, lo=1),
        allocation_file=get("allocation_file"), exclude_flagged=bool(get("exclude_flagged", False)),
        gd_precondition=getattr(args, "gd_rule", "precond") != "plain",
        pruner_options=override["pruner_options"] if "pruner_options" in override
        else parse_pruner_options(getattr(args, "pruner_opt", [])))
    from pruning.allocation import GRANULARITIES, MAPPINGS

    for name, choices in (("mapping", MAPPINGS), ("granularity", GRANULARITIES)):
        if getattr(s, name) not in choices:
            raise ValueError(f"unknown --{name} {getattr(s, name)!r}; choose one of: {', '.join(choices)}")
    from spectra.hill import XMIN_RULES

    if s.xmin_rule not in XMIN_RULES:
        raise ValueError(f"unknown --xmin-rule {s.xmin_rule!r}; choose one of: {', '.join(XMIN_RULES)}")
    return s.validate()


def eval_options(args: argparse.Namespace) -> dict:
    """Parsed evaluation options: datasets (list, maybe empty), seqlen, max_windows; data checked to exist."""
    from pruning.evaluation.data import canonical_name, resolve_data_file

    text = (args.eval or "none").strip()
    datasets = [] if text.lower() == "none" else [canonical_name(t) for t in text.split(",") if t.strip()]
    for key in datasets:
        resolve_data_file(key, args.data_dir)
    return {"datasets": datasets, "seqlen": parse_number("eval-seqlen", args.eval_seqlen, int, lo=1, allow_none=True),
            "max_windows": parse_number("max-windows", args.max_windows, int, lo=1, allow_none=True)}


def evaluate(model, tokenizer, ev: dict, data_dir=None, progress: bool = True) -> dict:
    """{dataset: PerplexityResult dict} for every dataset in ``ev`` (see :func:`eval_options`)."""
    from pruning.evaluation.perplexity import perplexity

    out = {}
    for ds in ev["datasets"]:
        t = time.perf_counter()
        r = perplexity(model, tokenizer, ds, seqlen=ev["seqlen"], max_windows=ev["max_windows"], progress=progress,
                       path=data_dir)
        out[ds] = {**r.to_dict(), "seconds": round(time.perf_counter() - t, 3)}
    return out


def check_out_dir(out: Path, overwrite: bool) -> None:
    """Refuse an existing output without ``overwrite``; with it, refuse to delete what is not a prune output."""
    if not out.exists():
        if not out.parent.exists():
            raise ValueError(f"the parent folder of --out ({out.parent}) does not exist; create it first")
        return
    if not overwrite:
        raise ValueError(f"output directory {out} already exists; pass --overwrite to replace it or choose another --out")
    if not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory; remove it or choose another --out")
    if any(out.iterdir()) and not ((out / "report.json").is_file() or (out / "config.json").is_file()):
        raise ValueError(f"refusing to replace {out}: it is not empty and holds no report.json/config.json "
                         f"(not a pruned-model folder); choose another --out")


#: allocations that read every weight or run the dense model, refused under --stream
NOT_STREAMABLE = ("owl", "global", "lamp")


def _compute_setup(args: argparse.Namespace, settings):
    """(compute device, storage dtype, safetensors folder or None) from ``--device --dtype --stream``: every check
    that needs no model (CUDA present, dtype runnable, streamable source, allocation streamable)."""
    from pruning.devices import parse_device, parse_dtype

    device = parse_device(getattr(args, "device", "cpu"))
    directory = None
    ckpt = None
    if getattr(args, "stream", False):
        from pruning.stream import checkpoint_dtype, stream_source_dir

        if settings.allocation in NOT_STREAMABLE and not settings.allocation_file:
            raise ValueError(f"--allocation {settings.allocation} reads the whole dense model, which --stream avoids; "
                             f"use uniform, alphapruning, stable_rank, erk or an --allocation-file")
        directory = stream_source_dir(args.model)
        ckpt = checkpoint_dtype(directory)
    elif device.type == "cuda":
        from spectra.models import resolve_source

        src = resolve_source(args.model)
        if src.kind == "local":
            from pruning.stream import checkpoint_dtype

            ckpt = checkpoint_dtype(src.path)
    return device, parse_dtype(getattr(args, "dtype", None), device, ckpt), directory


def evaluate_on(model, tokenizer, ev: dict, data_dir, progress: bool, device, block_io=None) -> dict:
    """:func:`evaluate` when the model runs where it is stored (CPU), else block by block on ``device`` (each block
    moved there once; read from the shards when ``block_io`` streams them)."""
    if block_io is None and (device is None or device.type == "cpu"):
        return evaluate(model, tokenizer, ev, data_dir, progress)
    from pruning.stream import blockwise_perplexity

    out = {}
    for ds in ev["datasets"]:
        t = time.perf_counter()
        r = blockwise_perplexity(model, tokenizer, ds, seqlen=ev["seqlen"], max_windows=ev["max_windows"],
                                 device=device, block_io=block_io, path=data_dir, progress=progress)
        out[ds] = {**r.to_dict(), "seconds": round(time.perf_counter() - t, 3)}
    return out


def parse_size(text: str) -> int:
    """``512MB`` / ``2GB`` / ``1.5GiB`` / ``1000000`` → bytes; one-line ValueError otherwise."""
    import re

    m = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]?I?B?)\s*", str(text).upper())
    units = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20,
             "GIB": 2**30, "TIB": 2**40, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    try:
        value = float(m.group(1)) * units[m.group(2)] if m else None
    except (ValueError, KeyError):
        value = None
    if not value or value < 1:
        raise ValueError(f"--shard-size must be a size such as 512MB or 2GB (got {text!r})")
    return int(value)


def _prune_streamed(args, settings, directory: Path, tmp: Path, ev: dict, device, dtype, progress: bool):
    """The ``--stream`` run: dense eval, prune (blocks read from and written to shards into ``tmp``), pruned eval;
    returns (LoadedModel-like record, PruneResult, dense, pruned, seconds spent writing)."""
    from spectra.models import LoadedModel, ModelSource

    from pruning.allocation import SPECTRAL_METHODS
    from pruning.prune import prune_model
    from pruning.stream import ShardWriter, StreamedModel, write_streamed_output

    dense = {}
    if not args.no_dense_eval and ev["datasets"]:
        sm = StreamedModel(directory, dtype)
        dense = evaluate_on(sm.model, sm.tokenizer, ev, args.data_dir, progress, device, sm)
    sm = StreamedModel(directory, dtype, ShardWriter(tmp, parse_size(getattr(args, "shard_size", "256MB"))),
                       load_head=False)
    metrics = None
    if settings.allocation in SPECTRAL_METHODS and not settings.allocation_file and settings.nm is None:
        from spectra.analyze import AnalysisSettings, analyze

        metrics = analyze(directory, AnalysisSettings(xmin_rule=settings.xmin_rule), progress=progress)
    result = prune_model(sm.model, sm.tokenizer, settings, progress=progress, metrics=metrics, device=device,
                         block_io=sm)
    t = time.perf_counter()
    write_streamed_output(sm, tmp)
    save_s = time.perf_counter() - t
    pruned = {}
    if ev["datasets"]:
        out_sm = StreamedModel(tmp, dtype)
        pruned = evaluate_on(out_sm.model, out_sm.tokenizer, ev, args.data_dir, progress, device, out_sm)
    n_params = sum(p.numel() for p in sm.model.parameters())
    lm = LoadedModel(None, sm.tokenizer, ModelSource("local", str(directory), path=directory), directory,
                     {"source": str(directory), "kind": "local", "model_type": sm.config.model_type,
                      "num_parameters": n_params, "dtype": str(dtype).replace("torch.", ""), "stream": True})
    return lm, result, dense, pruned, save_s


def run_prune(args: argparse.Namespace) -> dict:
    """Do the whole ``prune`` command; returns the report dict."""
    from spectra.models import load_model

    from pruning.evaluation.data import resolve_data_file
    from pruning.devices import check_disk
    from pruning.prune import prune_model
    from pruning.report import build_report, write_json_atomic

    settings = settings_from_args(args)
    out = Path(args.out).expanduser()
    check_out_dir(out, args.overwrite)
    device, dtype, directory = _compute_setup(args, settings)
    ev = eval_options(args)
    if settings.needs_calibration():
        resolve_data_file(settings.calib_dataset, args.data_dir)
    progress = not args.quiet
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    if directory is not None:
        from pruning.stream import output_nbytes

        parse_size(getattr(args, "shard_size", "256MB"))
        check_disk(out.parent, output_nbytes(directory, dtype))
        try:
            lm, result, dense, pruned, save_s = _prune_streamed(args, settings, directory, tmp, ev, device, dtype,
                                                                progress)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    else:
        lm = load_model(args.model, dtype=dtype, device="cpu")
        check_disk(out.parent, sum(p.numel() * p.element_size() for p in lm.model.parameters()))
        dense = {} if args.no_dense_eval else evaluate_on(lm.model, lm.tokenizer, ev, args.data_dir, progress, device)
        result = prune_model(lm, None, settings, progress=progress, device=None if device.type == "cpu" else device)
        pruned = evaluate_on(lm.model, lm.tokenizer, ev, args.data_dir, progress, device)
        t = time.perf_counter()
        lm.model.save_pretrained(tmp, safe_serialization=True)
        lm.tokenizer.save_pretrained(tmp)
        save_s = time.perf_counter() - t
    report = build_report(result, lm, dense, pruned, extra={
        "eval": {"datasets": ev["datasets"], "seqlen": ev["seqlen"], "max_windows": ev["max_windows"]},
        "saved": {"dir": str(out), "seconds": round(save_s, 3)},
        "compute": {"device": str(device), "dtype": str(dtype).replace("torch.", ""), "stream": directory is not None}})
    write_json_atomic(tmp / "report.json", report)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    for ds in ev["datasets"]:
        d = dense.get(ds, {}).get("ppl")
        p = pruned.get(ds)
        if p is None:
            continue
        print(f"{ds} perplexity: dense {d if d is None else f'{d:.4f}'} → pruned {p['ppl']:.4f} "
              f"({p['nwindows']} windows × {p['seqlen']} tokens)")
    from pruning.prune import settings_label

    print(f"pruned {settings_label(settings)} / {settings.nm or settings.allocation}: target {result.target_sparsity:.4f}, "
          f"achieved {result.achieved_sparsity:.4f}, prune {result.timings['total']:.1f} s, "
          f"peak RSS {result.peak_rss_mb:.0f} MB → {out}")
    return report


def main(args: argparse.Namespace) -> int:
    """Entry point of ``python -m pruning prune``; 0 on success, 2 with one ``error:`` line on user mistakes."""
    try:
        run_prune(args)
    except (ValueError, OSError) as exc:  # SpectraError, DataNotFoundError, AllocationError are ValueErrors
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"error: {msg}", file=sys.stderr)
        return 2
    return 0
