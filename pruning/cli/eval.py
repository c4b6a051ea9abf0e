"""``python -m pruning eval MODEL_OR_DIR``: perplexity (WikiText-2 / C4 / PTB) and lm-eval zero-shot tasks.

MODEL_OR_DIR is anything :func:`spectra.models.load_model` accepts (default: the built-in SmolLM2-135M).
``--tasks lambada_openai,piqa[,...]`` runs EleutherAI's lm-evaluation-harness on the loaded model
(:mod:`pruning.evaluation.lmeval`; ``--limit N`` = its first N documents per task); perplexity then runs only when
``--dataset`` is given. User mistakes (missing data, bad model, bad option) print one ``error: ...`` line on stderr
and exit with 2.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

from pruning.cli.common import one_line_errors
from pruning.evaluation.data import EVAL_DATASETS, canonical_name, resolve_data_file

__all__ = ["add_parser", "main", "run_eval"]


def _positive(text: str, alternatives: str = "") -> int:
    try:
        val = int(text)
    except ValueError:
        val = 0
    if val < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer{alternatives}, got {text!r}")
    return val


def _configure(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("model", nargs="?", default=None, metavar="MODEL_OR_DIR",
                   help="built-in alias (smollm2, gemma3), HF directory, .gguf file or hub id (default: built-in)")
    p.add_argument("--dataset", default=None, choices=[*EVAL_DATASETS, "none"],
                   help="perplexity text (default wikitext2 without --tasks, none with --tasks; 'none' skips it)")
    p.add_argument("--seqlen", type=_positive, default=None, help="window length (default min(2048, max positions))")
    p.add_argument("--max-windows", type=_positive, default=None,
                   help="evaluate only the first N windows (default all; C4: 256 like the references)")
    p.add_argument("--batch-size", type=_positive, default=1, help="windows per forward pass (default 1)")
    p.add_argument("--tasks", default=None, metavar="TASK,...",
                   help="lm-eval zero-shot tasks, comma-separated (lm-eval names: lambada_openai, piqa offline from "
                        "the local data; any other lm-eval task when the Hugging Face Hub is reachable)")
    p.add_argument("--limit", type=_positive, default=None, metavar="N",
                   help="lm-eval's first N documents of each task (default all)")
    p.add_argument("--task-batch-size", type=_positive, default=8, help="lm-eval requests per forward (default 8)")
    p.add_argument("--data-dir", default=None, help="folder holding the data files (default: $SPL_DATA_DIR, "
                                                   "../shared/data)")
    bos = p.add_mutually_exclusive_group()
    bos.add_argument("--bos", dest="add_bos", action="store_const", const=True, default=None,
                     help="start every window / example with BOS (default: as the tokenizer does)")
    bos.add_argument("--no-bos", dest="add_bos", action="store_const", const=False, help="never add BOS")
    p.add_argument("--device", default="cpu", help="compute device: cpu or cuda (default cpu); on cuda the blocks are "
                                                   "moved there one at a time, the weights stay on the CPU")
    p.add_argument("--dtype", default=None, help="bfloat16, float16, float32 (default float32 on cpu, the "
                                                 "checkpoint's dtype on cuda)")
    p.add_argument("--stream", action="store_true", help="read one decoder block at a time from the safetensors "
                                                         "shards of a local folder (larger than RAM)")
    p.add_argument("--json", default=None, metavar="OUT", help="write the results as JSON to OUT (an existing "
                   "file is kept unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``eval`` sub-command on an ``argparse`` subparsers object; returns the sub-parser."""
    p = subparsers.add_parser("eval", help="perplexity / lm-eval zero-shot tasks of a (pruned) model",
                              description="Perplexity (WikiText-2 / C4 / PTB, literature protocol) and optional "
                                          "lm-evaluation-harness zero-shot accuracy (--tasks lambada_openai,piqa) of "
                                          "a model or pruned-model folder.")
    _configure(p)
    p.set_defaults(func=main)
    return p


def run_eval(args: argparse.Namespace) -> dict:
    """Do the evaluation described by parsed ``args``; returns the JSON-able result dict."""
    from pruning.evaluation.perplexity import perplexity
    from spectra.models import load_model

    tasks = _tasks_of(args)
    dataset = args.dataset or ("none" if tasks else "wikitext2")
    if dataset == "none" and not tasks:
        raise ValueError("nothing to evaluate: --dataset none and no --tasks; pick one")
    if dataset != "none":  # fail on missing data and on a bad --json before the (slow) model load
        resolve_data_file(canonical_name(dataset), args.data_dir)
    if tasks and getattr(args, "stream", False):
        raise ValueError("--tasks need the whole model in memory (lm-eval runs the full forward) and --stream reads "
                         "one block at a time; drop --stream for --tasks")
    if tasks:
        from pruning.evaluation.lmeval import check_tasks

        check_tasks(tasks, args.data_dir)
    _check_json_out(args)
    device, dtype, directory = _compute_setup(args)
    progress = not args.quiet
    if not tasks and (directory is not None or device.type != "cpu"):
        return _run_blockwise(args, dataset, device, dtype, directory, progress)
    lm = load_model(args.model, dtype=dtype, device=str(device))  # lm-eval: the whole model on the device
    out: dict = {"model": lm.source.label, "info": lm.info, "settings": {
        **{k: getattr(args, k) for k in ("seqlen", "max_windows", "batch_size", "limit", "task_batch_size",
                                         "add_bos", "device", "data_dir")}, "dataset": dataset, "tasks": tasks}}
    t0 = time.perf_counter()
    if dataset != "none":
        res = perplexity(lm.model, lm.tokenizer, dataset, seqlen=args.seqlen, max_windows=args.max_windows,
                         batch_size=args.batch_size, add_bos=args.add_bos, progress=progress, path=args.data_dir)
        out["perplexity"] = res.to_dict()
        print(f"{res.dataset} perplexity {res.ppl:.4f}  (nll {res.nll:.5f}, {res.nwindows} windows × {res.seqlen} "
              f"tokens, {res.ntokens} predicted tokens, bos={res.bos})")
    if tasks:
        from pruning.evaluation.lmeval import evaluate_tasks

        zs = evaluate_tasks(lm.model, lm.tokenizer, tasks, limit=args.limit, batch_size=args.task_batch_size,
                            data_dir=args.data_dir)
        out["zeroshot"] = zs.to_dict()
        print(zs.summary())
    out["seconds"] = round(time.perf_counter() - t0, 3)
    out["python"] = platform.python_version()
    _write_json(args, out)
    return out


def _tasks_of(args: argparse.Namespace) -> list:
    if args.tasks is None:
        if args.limit is not None:
            raise ValueError("--limit applies to --tasks; pass --tasks lambada_openai,piqa (or drop --limit)")
        return []
    from pruning.evaluation.lmeval import parse_tasks

    tasks = parse_tasks(args.tasks)
    if not tasks:
        raise ValueError("--tasks is empty; pass lm-eval task names, e.g. --tasks lambada_openai,piqa")
    return tasks


def _check_json_out(args: argparse.Namespace) -> None:
    """A ``--json`` path must be in an existing folder and, without ``--overwrite``, not exist yet."""
    if not args.json:
        return
    target = Path(args.json).expanduser()
    if not target.parent.is_dir():
        raise ValueError(f"--json folder {target.parent} does not exist; create it or pick another path")
    if target.exists() and not getattr(args, "overwrite", False):
        raise ValueError(f"--json {target} already exists; pass --overwrite to replace it or pick another path")


def _write_json(args: argparse.Namespace, out: dict) -> None:
    if args.json:
        from spectra.files import atomic_path

        with atomic_path(Path(args.json).expanduser()) as tmp:
            tmp.write_text(json.dumps(out, indent=2, default=str))


def _compute_setup(args: argparse.Namespace):
    """(compute device, dtype, safetensors folder when ``--stream``), checked before anything slow."""
    from pruning.devices import parse_device, parse_dtype

    device = parse_device(getattr(args, "device", "cpu"))
    directory, ckpt = None, None
    if getattr(args, "stream", False):
        from pruning.stream import checkpoint_dtype, stream_source_dir

        directory = stream_source_dir(args.model)
        ckpt = checkpoint_dtype(directory)
    return device, parse_dtype(getattr(args, "dtype", None), device, ckpt), directory


def _run_blockwise(args: argparse.Namespace, dataset: str, device, dtype, directory, progress: bool) -> dict:
    """Perplexity block by block on ``device`` (streamed from ``directory`` when given, else the model in memory)."""
    from pruning.stream import StreamedModel, blockwise_perplexity
    from spectra.models import load_model

    if directory is not None:
        sm = StreamedModel(directory, dtype)
        model, tok, io, label = sm.model, sm.tokenizer, sm, str(directory)
    else:
        lm = load_model(args.model, dtype=dtype, device="cpu")
        model, tok, io, label = lm.model, lm.tokenizer, None, lm.source.label
    t0 = time.perf_counter()
    res = blockwise_perplexity(model, tok, dataset, seqlen=args.seqlen, max_windows=args.max_windows,
                               batch_size=args.batch_size, add_bos=args.add_bos, device=device, block_io=io,
                               path=args.data_dir, progress=progress)
    print(f"{res.dataset} perplexity {res.ppl:.4f}  (nll {res.nll:.5f}, {res.nwindows} windows × {res.seqlen} "
          f"tokens, {res.ntokens} predicted tokens, bos={res.bos}, {device}, {str(dtype).replace('torch.', '')}"
          f"{', streamed' if io is not None else ''})")
    out = {"model": label, "perplexity": res.to_dict(), "seconds": round(time.perf_counter() - t0, 3),
           "settings": {"device": str(device), "dtype": str(dtype).replace("torch.", ""), "stream": io is not None},
           "python": platform.python_version()}
    _write_json(args, out)
    return out


def main(args: argparse.Namespace) -> int:
    """Entry point of ``python -m pruning eval``; returns the exit status (2 with one error line on mistakes)."""
    return one_line_errors(lambda: run_eval(args))


if __name__ == "__main__":  # python -m pruning.cli.eval ... (same options as `python -m pruning eval`)
    _parser = _configure(argparse.ArgumentParser(prog="python -m pruning.cli.eval", description=__doc__))
    sys.exit(main(_parser.parse_args()))
