"""``python -m pruning prune [MODEL]``: allocate, prune, evaluate and save a pruned model with a JSON report.

Example::

    python -m pruning prune --pruner wanda --allocation alphapruning --sparsity 0.7 --lam 0.3 \\
        --nsamples 128 --seqlen 512 --eval wikitext2 --out pruned/wanda-alpha-70

Writes DIR/ (``save_pretrained`` safetensors + tokenizer) and DIR/report.json (:func:`pruning.report.build_report`,
docs/METHODS.md): ``runs``, the run record of each evaluated dataset (the sweep's row of the same cell: every
setting, seed, perplexity, sparsity, prune time and memory, package versions), then per-matrix target and achieved
sparsity, the full dense and pruned evaluations, every phase's timing, model source and weight hash, compute device.
An existing DIR is never replaced without ``--overwrite``. Every user mistake ends with one ``error: ...`` line on
stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from pruning.cli.common import one_line_errors

__all__ = ["add_parser", "main", "parse_pruner_options", "run_prune", "settings_from_args"]


#: settings a sweep lists itself (``--pruners``, ``--sparsities``, ...) or does not offer
SWEEP_OWN = ("pruner", "allocation", "sparsity", "nm", "lam", "allocation_file", "exclude_flagged")


def add_common_arguments(p: argparse.ArgumentParser, sweep: bool = False) -> None:
    """Options shared by ``prune`` and ``sweep``, built from the fields of :mod:`pruning.settings` (their defaults,
    choices and help); numbers are checked when the settings are built, so that errors are one line."""
    from pruning.settings import SECTIONS, EvalSettings, OutputSettings
    from spectra.options import add_options

    p.add_argument("model", nargs="?", default=None, metavar="MODEL",
                   help="built-in alias, HF directory, .gguf file or hub id (default: built-in SmolLM2-135M)")
    groups = {}
    for name, cls in SECTIONS.items():
        groups[name] = g = p.add_argument_group(f"{name} settings ({cls.__name__})")
        add_options(g, cls, skip=SWEEP_OWN if sweep else ())
    groups["pruner"].add_argument("--pruner-opt", action="append", default=[], metavar="KEY=VALUE",
                                  help="pruner option, repeatable (e.g. fista: max_iter=30, search_steps=8, "
                                       "warm_start=sparsegpt; prox24: growth=1.25, dtype=float32; sparsegpt: "
                                       "percdamp=0.01)")
    add_options(p.add_argument_group("evaluation (EvalSettings)"), EvalSettings)
    add_options(p, OutputSettings, only=("device",))
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``prune`` sub-command; returns its parser."""
    from pruning.settings import OutputSettings
    from spectra.options import add_options

    p = subparsers.add_parser("prune", help="prune a model (allocation × pruner), evaluate it, save it with a report",
                              description=__doc__.splitlines()[0])
    add_common_arguments(p)
    add_options(p.add_argument_group("output (OutputSettings)"), OutputSettings, skip=("device",))
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
    """:class:`pruning.settings.PruneSettings` from parsed options (``override`` replaces settings by their flat
    names, e.g. in a sweep); checked on construction (one-line ValueError)."""
    from pruning.settings import SECTIONS, PruneSettings
    from spectra.options import options_of

    flat = {}
    for cls in SECTIONS.values():
        for o in options_of(cls):
            if o.dest in override:
                flat[o.dest] = override[o.dest]
            elif o.flag is not None and hasattr(args, o.dest):
                flat[o.dest] = getattr(args, o.dest)
    if "pruner_options" not in flat:
        flat["pruner_options"] = parse_pruner_options(getattr(args, "pruner_opt", []))
    return PruneSettings.from_flat(**flat)


def eval_options(args: argparse.Namespace) -> dict:
    """Parsed evaluation options (:class:`pruning.settings.EvalSettings`): datasets (list, maybe empty), seqlen,
    max_windows; data checked to exist."""
    from pruning.evaluation.data import resolve_data_file
    from pruning.settings import EvalSettings
    from spectra.options import options_from_namespace

    ev = options_from_namespace(EvalSettings, args)
    datasets = ev.dataset_list()
    for key in datasets:
        resolve_data_file(key, getattr(args, "data_path", None))
    out = {"datasets": datasets, "seqlen": ev.seqlen, "max_windows": ev.max_windows}
    tasks = ev.task_list()
    if tasks:  # lm-eval installed, offline data present, or the task's hub dataset reachable: checked now
        from pruning.evaluation.lmeval import check_tasks

        check_tasks(tasks, getattr(args, "data_path", None))
        out.update(tasks=tasks, limit=ev.task_limit)
    elif ev.task_limit is not None:
        raise ValueError("--eval-limit applies to --eval-tasks; pass --eval-tasks lambada_openai,piqa or drop it")
    return out


def zeroshot(model, tokenizer, ev: dict, data_dir=None):
    """lm-eval results of ``ev["tasks"]`` (:class:`pruning.evaluation.lmeval.ZeroShotResult` of
    :func:`pruning.evaluation.lmeval.evaluate_tasks`); None when no task is asked for."""
    if not ev.get("tasks"):
        return None
    from pruning.evaluation.lmeval import evaluate_tasks

    return evaluate_tasks(model, tokenizer, ev["tasks"], limit=ev.get("limit"), data_dir=data_dir)


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
        raise ValueError(f"output directory {out} already exists; pass --overwrite to replace it or choose another "
                         f"--out")
    if not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory; remove it or choose another --out")
    if any(out.iterdir()) and not ((out / "report.json").is_file() or (out / "config.json").is_file()):
        raise ValueError(f"refusing to replace {out}: it is not empty and holds no report.json/config.json "
                         f"(not a pruned-model folder); choose another --out")


#: allocations that read every weight at once, refused under --stream (calibration signals stream: per block)
NOT_STREAMABLE = tuple(n for n, s in __import__("pruning.allocation", fromlist=["ALLOCATIONS"]).ALLOCATIONS.items()
                       if s.reads == "weights")


def _compute_setup(model: str, o, settings):
    """(compute device, storage dtype, safetensors folder or None) from the :class:`pruning.settings.OutputSettings`
    ``o`` (``--device --dtype --stream``): every check that needs no model (CUDA present, dtype runnable,
    streamable source, allocation streamable)."""
    from pruning.devices import parse_device, parse_dtype

    device = parse_device(o.device)
    directory = None
    ckpt = None
    a = settings.allocation
    if o.stream:
        from pruning.stream import checkpoint_dtype, stream_source_dir

        if a.method in NOT_STREAMABLE and not a.file:
            raise ValueError(f"--allocation {a.method} reads the whole dense model, which --stream avoids; "
                             f"use uniform, alphapruning, stable_rank, erk, owl or an --allocation-file")
        directory = stream_source_dir(model)
        ckpt = checkpoint_dtype(directory)
    elif device.type == "cuda":
        from spectra.models import resolve_source

        src = resolve_source(model)
        if src.kind == "local":
            from pruning.stream import checkpoint_dtype

            ckpt = checkpoint_dtype(src.path)
    return device, parse_dtype(o.dtype, device, ckpt), directory


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


def _prune_streamed(o, settings, directory: Path, tmp: Path, ev: dict, device, dtype, progress: bool):
    """The ``--stream`` run: dense eval, prune (blocks read from and written to shards into ``tmp``), pruned eval;
    returns (LoadedModel-like record, PruneResult, dense, pruned, seconds spent writing)."""
    from pruning.allocation import SPECTRAL_METHODS, get_allocation
    from pruning.prune import prune_model
    from pruning.stream import ShardWriter, StreamedModel, write_streamed_output
    from spectra.models import LoadedModel, ModelSource

    data_dir = settings.calibration.data_path
    dense = {}
    if o.dense_eval and ev["datasets"]:
        sm = StreamedModel(directory, dtype)
        dense = evaluate_on(sm.model, sm.tokenizer, ev, data_dir, progress, device, sm)
    sm = StreamedModel(directory, dtype, ShardWriter(tmp, parse_size(o.shard_size)), load_head=False)
    metrics = signal = calib = None
    a = settings.allocation
    if a.method in SPECTRAL_METHODS and not a.file and a.nm is None:
        from spectra.analyze import AnalysisSettings, analyze

        metrics = analyze(directory, AnalysisSettings(xmin_rule=a.xmin_rule, **get_allocation(a.method).analysis),
                          progress=progress)
    if get_allocation(a.method).needs_calibration and not a.file and a.nm is None:
        # the signal (OWL's ratios, DLP's scores) from a read-only walk over the shards
        from pruning.evaluation.data import get_calibration
        from pruning.prune import calibration_signal

        cal = settings.calibration
        calib = get_calibration(sm.tokenizer, cal.nsamples, cal.seqlen, cal.seed, dataset=cal.dataset,
                                path=cal.data_path)
        reader = StreamedModel(directory, dtype, tokenizer=False, load_head=False)  # no writer: blocks only freed
        signal = calibration_signal(reader.model, settings, calib, progress=progress, device=device, block_io=reader)
        del reader
    result = prune_model(sm.model, sm.tokenizer, settings, progress=progress, metrics=metrics, device=device,
                         block_io=sm, calib=calib, signal=signal)
    t = time.perf_counter()
    write_streamed_output(sm, tmp)
    save_s = time.perf_counter() - t
    pruned = {}
    if ev["datasets"]:
        out_sm = StreamedModel(tmp, dtype)
        pruned = evaluate_on(out_sm.model, out_sm.tokenizer, ev, data_dir, progress, device, out_sm)
    n_params = sum(p.numel() for p in sm.model.parameters())
    lm = LoadedModel(None, sm.tokenizer, ModelSource("local", str(directory), path=directory), directory,
                     {"source": str(directory), "kind": "local", "model_type": sm.config.model_type,
                      "num_parameters": n_params, "dtype": str(dtype).replace("torch.", ""), "stream": True})
    return lm, result, dense, pruned, save_s


def run_prune(args: argparse.Namespace) -> dict:
    """Do the whole ``prune`` command; returns the report dict."""
    from pruning.devices import check_disk
    from pruning.evaluation.data import resolve_data_file
    from pruning.prune import prune_model
    from pruning.report import build_report, write_json_atomic
    from pruning.settings import OutputSettings
    from spectra.files import atomic_path
    from spectra.models import load_model
    from spectra.options import options_from_namespace

    settings = settings_from_args(args)
    o = options_from_namespace(OutputSettings, args)
    data_dir = settings.calibration.data_path
    out = Path(o.out).expanduser()
    check_out_dir(out, o.overwrite)
    device, dtype, directory = _compute_setup(args.model, o, settings)
    ev = eval_options(args)
    if ev.get("tasks") and directory is not None:
        raise ValueError("--eval-tasks need the whole model in memory (lm-eval runs the full forward) and --stream "
                         "reads one block at a time; drop --eval-tasks and run `python -m pruning eval OUT --tasks "
                         "...` where the pruned model fits")
    if settings.needs_calibration():
        resolve_data_file(settings.calibration.dataset, data_dir)
    progress = not args.quiet
    with atomic_path(out, directory=True) as tmp:  # the folder appears under --out only once complete
        if directory is not None:
            from pruning.stream import output_nbytes

            parse_size(o.shard_size)
            check_disk(out.parent, output_nbytes(directory, dtype))
            lm, result, dense, pruned, save_s = _prune_streamed(o, settings, directory, tmp, ev, device, dtype,
                                                                progress)
            zs = {}
        else:
            lm = load_model(args.model, dtype=dtype, device="cpu")
            check_disk(out.parent, sum(p.numel() * p.element_size() for p in lm.model.parameters()))
            dense = evaluate_on(lm.model, lm.tokenizer, ev, data_dir, progress, device) if o.dense_eval else {}
            zs = {"dense": zeroshot(lm.model, lm.tokenizer, ev, data_dir) if o.dense_eval else None}
            result = prune_model(lm, None, settings, progress=progress,
                                 device=None if device.type == "cpu" else device)
            pruned = evaluate_on(lm.model, lm.tokenizer, ev, data_dir, progress, device)
            zs["pruned"] = zeroshot(lm.model, lm.tokenizer, ev, data_dir)
            t = time.perf_counter()
            lm.model.save_pretrained(tmp, safe_serialization=True)
            lm.tokenizer.save_pretrained(tmp)
            save_s = time.perf_counter() - t
        report = build_report(result, lm, dense, pruned, evaluation={
            "datasets": ev["datasets"], "seqlen": ev["seqlen"], "max_windows": ev["max_windows"],
            "tasks": ev.get("tasks", []), "limit": ev.get("limit")}, zeroshot=zs, extra={
            "saved": {"dir": str(out), "seconds": round(save_s, 3)},
            "compute": {"device": str(device), "dtype": str(dtype).replace("torch.", ""),
                        "stream": directory is not None}})
        write_json_atomic(tmp / "report.json", report)
    print_summary(report, out)
    return report


def print_summary(report: dict, out: Path) -> None:
    """The lines ``prune`` prints at the end: perplexities, zero-shot results, collapse warnings, the prune."""
    dense = report["perplexity"]["dense"]
    for run in report["runs"]:
        if run["ppl"] is None:
            continue
        d = dense.get(run["eval_dataset"], {}).get("ppl")
        print(f"{run['eval_dataset']} perplexity: dense {d if d is None else f'{d:.4f}'} → pruned {run['ppl']:.4f} "
              f"({run['nwindows']} windows × {run['eval_seqlen']} tokens)")
    for which, z in report["zeroshot"].items():
        for task, r in z["tasks"].items():
            print(f"{task} ({which}, lm-eval {z['lm_eval_version']}, n={r['n']}): "
                  + ", ".join(f"{m} {v:.4f}" for m, v in r["metrics"].items()))
    for note in report["collapse"]["notes"]:
        print(f"warning: {note}")
    run = report["runs"][0]
    print(f"pruned {run['method']} / {run['nm'] or json.loads(run['settings_json'])['allocation']}: "
          f"target {run['target_sparsity']:.4f}, achieved {run['achieved_sparsity']:.4f}, "
          f"prune {run['prune_seconds']:.1f} s, peak RSS {run['peak_rss_mb']:.0f} MB → {out}")


def main(args: argparse.Namespace) -> int:
    """Entry point of ``python -m pruning prune``; 0 on success, 2 with one ``error:`` line on user mistakes."""
    return one_line_errors(lambda: run_prune(args))
