"""Zero-shot accuracy through EleutherAI's lm-evaluation-harness, on the model already in memory.

``evaluate_tasks(model, tokenizer, ["lambada_openai", "piqa"], limit=N)`` wraps the (pruned) model in
``lm_eval.models.huggingface.HFLM(pretrained=model, tokenizer=tokenizer)`` and runs ``lm_eval.simple_evaluate`` on
the tasks named as lm-eval names them; ``limit`` is lm-eval's own: the first N documents of each task. The numbers
are lm-eval's (accuracy, its standard error, the task's version), so they sit beside a paper's or a user's lm-eval
numbers without doubt.

Offline (``spectra.config.offline()``: ``SPL_OFFLINE`` / ``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE``, or the Hub
unreachable) ``lambada_openai`` and ``piqa`` are the task YAMLs shipped in ``pruning/evaluation/tasks/``: lm-eval's
own names, prompts, metrics and versions over the local files of the data loader (:mod:`pruning.evaluation.data`,
``SPL_DATA_DIR``). Their data paths are filled in at run time into a scratch folder (the package folder is never
written). Any other lm-eval task is loaded by name from the Hub when it is reachable; offline it is a one-line
error naming the dataset it needs.

lm-eval is an optional dependency (``pip install 'spectral-pruning-lab[eval]'``) imported only inside these
functions, so neither the app nor ``python -m spectra`` loads it unless tasks are requested.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = [
    "LM_EVAL_REQUIREMENT",
    "OFFLINE_TASKS",
    "TaskResult",
    "ZeroShotResult",
    "check_in_memory",
    "check_tasks",
    "evaluate_tasks",
    "lm_eval_version",
    "offline_task_folder",
    "parse_tasks",
    "use_local_tasks",
]

#: tasks shipped as YAMLs over the local data: lm-eval task name -> data loader key
OFFLINE_TASKS = {"lambada_openai": "lambada", "piqa": "piqa"}
#: the tested lm-eval release (the ``eval`` extra of pyproject.toml)
LM_EVAL_REQUIREMENT = "lm-eval==0.4.13"
TASKS_DIR = Path(__file__).resolve().parent / "tasks"
#: bootstrap resamples for the stderr of lm-eval's bootstrapped metrics (LAMBADA's perplexity); accuracies have a
#: closed-form stderr. lm-eval's default, 100,000, takes minutes on LAMBADA.
BOOTSTRAP_ITERS = 1000


@dataclass
class TaskResult:
    """One task's lm-eval result: ``metrics`` (e.g. ``acc``, ``acc_norm``, ``perplexity``) and their ``stderr``."""

    task: str
    version: str | None
    n: int
    n_total: int | None
    metrics: dict
    stderr: dict
    source: str  # "local" (the shipped YAML over the local data) or "lm-eval" (lm-eval's own task, Hub data)

    @property
    def acc(self) -> float | None:
        return self.metrics.get("acc")


@dataclass
class ZeroShotResult:
    """lm-eval results of several tasks, with lm-eval's version and the run's settings."""

    tasks: dict
    lm_eval_version: str | None
    limit: int | None
    batch_size: int
    seconds: float
    bootstrap_iters: int = BOOTSTRAP_ITERS
    #: lm-eval's per-example records (``log_samples``), only when asked for; not written to reports
    samples: dict | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("samples")
        return out

    def flat(self) -> dict:
        """One column per task and metric for tables: ``piqa_acc``, ``piqa_acc_stderr``, ``piqa_n``, ...
        plus ``lm_eval_version``."""
        row: dict = {"lm_eval_version": self.lm_eval_version}
        for name, r in self.tasks.items():
            for m, v in r.metrics.items():
                row[f"{name}_{m}"] = v
                if m in r.stderr:
                    row[f"{name}_{m}_stderr"] = r.stderr[m]
            row[f"{name}_n"] = r.n
            row[f"{name}_version"] = r.version
        return row

    def summary(self) -> str:
        """One line per task, e.g. ``piqa: acc 0.6500 ± 0.0107, acc_norm ...  (n=1838, v1.0, local data)``."""
        lines = []
        for name, r in self.tasks.items():
            parts = [f"{m} {v:.4f}" + (f" ± {r.stderr[m]:.4f}" if r.stderr.get(m) is not None else "")
                     for m, v in r.metrics.items()]
            lines.append(f"{name}: {', '.join(parts)}  (n={r.n}, version {r.version}, "
                         f"{'local data' if r.source == 'local' else 'lm-eval task'}, lm-eval {self.lm_eval_version})")
        return "\n".join(lines)


def parse_tasks(text) -> list[str]:
    """``"lambada_openai, piqa"`` (or a list) → ``["lambada_openai", "piqa"]``; empty / ``none`` → ``[]``."""
    items = text if isinstance(text, (list, tuple)) else str(text or "").split(",")
    names = [str(t).strip() for t in items if str(t).strip()]
    if [n.lower() for n in names] == ["none"]:
        return []
    bad = [n for n in names if not re.fullmatch(r"[A-Za-z0-9_.\-]+", n)]
    if bad:
        raise ValueError(f"bad task name {bad[0]!r}; pass lm-eval task names, e.g. --tasks lambada_openai,piqa")
    return list(dict.fromkeys(names))


def lm_eval_version() -> str | None:
    """The installed lm-eval's version (without importing it), or None."""
    try:
        return importlib.metadata.version("lm_eval")
    except importlib.metadata.PackageNotFoundError:
        return None


def _require_lm_eval() -> None:
    if lm_eval_version() is None:
        raise ValueError(f"zero-shot tasks need lm-evaluation-harness, which is not installed; "
                         f"pip install 'spectral-pruning-lab[eval]' (or pip install {LM_EVAL_REQUIREMENT})")


def use_local_tasks() -> bool:
    """True when the shipped offline YAMLs are used: offline by ``spectra.config.offline()`` or the Hub unreachable."""
    from spectra.models import hub_reachable  # checks spectra.config.offline() first

    return not hub_reachable()


def check_tasks(tasks: Sequence[str], data_dir=None, local: bool | None = None) -> bool:
    """Fail early (one-line ValueError) when ``tasks`` cannot run: lm-eval missing, a local data file missing, or,
    offline, a task that is not shipped (the message names the dataset it needs). Returns whether the local YAMLs
    are used."""
    from pruning.evaluation.data import resolve_data_file

    _require_lm_eval()
    local = use_local_tasks() if local is None else local
    if not local:
        return False
    for name in tasks:
        if name not in OFFLINE_TASKS:
            raise ValueError(_offline_error(name))
        resolve_data_file(OFFLINE_TASKS[name], data_dir)
    return True


def _offline_error(name: str) -> str:
    dataset = _hub_dataset(name)
    need = f"its dataset {dataset!r}" if dataset else "its dataset"
    return (f"lm-eval task {name!r} needs {need} from the Hugging Face Hub, which is unreachable (offline); "
            f"offline tasks: {', '.join(OFFLINE_TASKS)}")


def _hub_dataset(name: str) -> str | None:
    """The ``dataset_path`` of lm-eval's own task ``name`` (read from its YAML), or None when unknown."""
    import lm_eval

    root = Path(lm_eval.__file__).resolve().parent / "tasks"
    for path in root.rglob("*.yaml"):
        text = path.read_text(encoding="utf-8", errors="replace")
        if re.search(rf"^task:\s*['\"]?{re.escape(name)}['\"]?\s*$", text, re.MULTILINE):
            m = re.search(r"^dataset_path:\s*(\S+)", text, re.MULTILINE)
            if m:
                return m.group(1).strip("'\"")
            inc = re.search(r"^include:\s*(\S+)", text, re.MULTILINE)
            if inc and (path.parent / inc.group(1)).is_file():
                m = re.search(r"^dataset_path:\s*(\S+)", (path.parent / inc.group(1)).read_text(), re.MULTILINE)
                return m.group(1).strip("'\"") if m else None
    return None


# ----------------------------------------------------------------------------------------------- offline YAMLs
def _piqa_jsonl(data_dir) -> Path:
    """PIQA validation with its labels as one JSON-lines file (``goal, sol1, sol2, label``), written once per source
    file version into ``<cache>/lmeval`` (content-keyed: the Hugging Face datasets cache reuses its build)."""
    from pruning.evaluation.data import PIQA_LABELS, load_piqa, resolve_data_file
    from spectra.config import cache_dir
    from spectra.files import atomic_path

    src = resolve_data_file("piqa", data_dir)
    stamp = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in (src, src.parent / PIQA_LABELS)]
    key = hashlib.sha256(json.dumps(stamp).encode()).hexdigest()[:16]
    target = cache_dir("lmeval") / f"piqa-validation-{key}.jsonl"
    if not target.is_file():
        with atomic_path(target) as tmp:
            tmp.write_text("".join(json.dumps(d) + "\n" for d in load_piqa(src)), encoding="utf-8")
    return target


def offline_task_folder(tasks: Sequence[str], data_dir=None) -> Path:
    """A scratch folder holding the shipped YAMLs of ``tasks`` with their data paths filled in (``${lambada}``,
    ``${piqa}``); removed when the process exits (:func:`spectra.files.scratch_file`)."""
    from pruning.evaluation.data import resolve_data_file
    from spectra.files import scratch_file

    paths = {}
    for name in tasks:
        key = OFFLINE_TASKS[name]
        paths[key] = _piqa_jsonl(data_dir) if key == "piqa" else resolve_data_file(key, data_dir)
    folder = scratch_file("lmeval-tasks", keep=8, directory=True)
    for name in tasks:
        text = (TASKS_DIR / f"{name}.yaml").read_text(encoding="utf-8")
        for key, p in paths.items():
            text = text.replace("${" + key + "}", json.dumps(str(p)))
        (folder / f"{name}.yaml").write_text(text, encoding="utf-8")
    return folder


# ----------------------------------------------------------------------------------------------- running
def check_in_memory(model) -> None:
    """lm-eval runs the whole model forward: a streamed model (blocks on the meta device) is refused in one line."""
    if any(p.device.type == "meta" for p in model.parameters()):
        raise ValueError("lm-eval tasks need the whole model in memory, and this model is streamed (--stream: its "
                         "blocks are read one at a time); evaluate the pruned folder without --stream for --tasks")


@contextlib.contextmanager
def _quiet_lm_eval(quiet: bool):
    logger = logging.getLogger("lm_eval")
    level = logger.level
    if quiet:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _load_tasks(tasks: Sequence[str], local: bool, data_dir):
    """(TaskManager, {name: lm-eval Task}) of ``tasks`` (the local YAMLs or lm-eval's own); one-line ValueError when a
    task is unknown or its data cannot be loaded."""
    from lm_eval.tasks import TaskManager

    if local:
        tm = TaskManager(include_path=str(offline_task_folder(tasks, data_dir)), include_defaults=False)
    else:
        tm = TaskManager()
    unknown = [t for t in tasks if t not in tm.all_tasks]
    if unknown:
        raise ValueError(f"unknown lm-eval task {unknown[0]!r}; list them with `lm-eval ls tasks` "
                         f"(offline tasks: {', '.join(OFFLINE_TASKS)})")
    try:
        return tm, tm.load(list(tasks))["tasks"]
    except Exception as exc:
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
        if local:
            raise ValueError(f"cannot read the local task data ({reason}); check the data folder (SPL_DATA_DIR)") \
                from None
        need = ", ".join(f"{t} ← {_hub_dataset(t) or '?'}" for t in tasks)
        raise ValueError(f"cannot load the lm-eval task datasets ({need}) from the Hugging Face Hub ({reason})") \
            from None


def evaluate_tasks(model, tokenizer, tasks: Sequence[str], limit: int | None = None, batch_size: int = 8,
                   data_dir=None, log_samples: bool = False, quiet: bool = True,
                   local: bool | None = None) -> ZeroShotResult:
    """lm-eval zero-shot results of the in-memory ``model`` on ``tasks`` (lm-eval names).

    ``limit``: lm-eval's first N documents per task (None = all). ``local``: use the shipped offline YAMLs (default:
    when offline or the Hub is unreachable, :func:`use_local_tasks`). Accuracy = lm-eval's ``acc`` (mean of the
    per-document 0/1 scores), stderr = its closed form √(p(1−p)/(n−1)) (lm-eval ``mean_stderr``).
    """
    tasks = parse_tasks(tasks)
    if not tasks:
        raise ValueError("no lm-eval task given; pass e.g. --tasks lambada_openai,piqa")
    if limit is not None and int(limit) < 1:
        raise ValueError(f"--limit must be a positive number of documents (got {limit})")
    check_in_memory(model)
    local = check_tasks(tasks, data_dir, local)
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    t0 = time.perf_counter()
    with _quiet_lm_eval(quiet):
        tm, loaded = _load_tasks(tasks, local, data_dir)
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=int(batch_size))
        out = simple_evaluate(lm, tasks=list(loaded.values()), limit=None if limit is None else int(limit),
                              bootstrap_iters=BOOTSTRAP_ITERS, log_samples=log_samples, task_manager=tm)
    results = {}
    for name in loaded:
        res = out["results"][name]
        metrics = {k.split(",")[0]: float(v) for k, v in res.items()
                   if "," in k and "_stderr" not in k and isinstance(v, (int, float))}
        stderr = {k.split(",")[0].replace("_stderr", ""): (float(v) if isinstance(v, (int, float)) else None)
                  for k, v in res.items() if "_stderr," in k}
        ns = out.get("n-samples", {}).get(name, {})
        version = out.get("versions", {}).get(name)
        results[name] = TaskResult(name, None if version is None else str(version), int(ns.get("effective", 0)),
                                   ns.get("original"), metrics, stderr, "local" if local else "lm-eval")
    return ZeroShotResult(results, lm_eval_version(), None if limit is None else int(limit), int(batch_size),
                          round(time.perf_counter() - t0, 3), samples=out.get("samples") if log_samples else None)
