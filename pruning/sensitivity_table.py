"""The sensitivity table on disk (:mod:`pruning.sensitivity`): parquet with the settings, versions, reference and
verdict as JSON in the file's schema metadata, written whole or not at all (:func:`spectra.files.atomic_path`); and
the table as the input of the ``sensitivity`` allocation in ``tune`` / ``compare`` (its costs, its identity in a
resume key, the check that it was measured on the model at hand)."""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Optional

import pandas as pd

__all__ = ["META_KEY", "HOW_TO_MEASURE", "write_table", "table_metadata", "read_table", "table_costs",
           "table_granularity", "table_identity", "models_differ", "check_table"]

META_KEY = b"spectral_pruning_lab.sensitivity"


def write_table(df: pd.DataFrame, path, meta: dict) -> Path:
    """``df`` to parquet with ``meta`` (JSON) in the file's schema metadata, whole or not at all."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from spectra.files import atomic_path

    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                           META_KEY: json.dumps(meta, default=str).encode()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return Path(path)


def table_metadata(path) -> dict:
    """The metadata dict :func:`write_table` stored in ``path`` (settings, versions, reference, verdict)."""
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata or {}
    if META_KEY not in meta:
        raise ValueError(f"{path} is not a sensitivity table (no {META_KEY.decode()} metadata); choose another file")
    return json.loads(meta[META_KEY])


def read_table(path) -> pd.DataFrame:
    """A sensitivity table with its metadata in ``attrs["sensitivity"]``."""
    meta = table_metadata(path)
    df = pd.read_parquet(path)
    df.attrs["sensitivity"] = meta
    return df


# ------------------------------------------------------------------------------- a table as an allocation's input
#: how a missing table is made (the one-line errors of tune / compare / the app name it)
HOW_TO_MEASURE = "python -m pruning sensitivity MODEL --out sens.parquet"


def _stamp(path) -> tuple:
    p = Path(path).expanduser().resolve()
    st = p.stat()
    return str(p), st.st_mtime_ns, st.st_size


@functools.lru_cache(maxsize=8)
def _costs(stamp: tuple) -> tuple:
    from pruning.signals import measured_costs

    return tuple(measured_costs(read_table(stamp[0])).items())


def table_costs(path, flag: str = "--sensitivity-table") -> dict:
    """The measured costs ``{block: Δ}`` (or ``{longname: Δ}``) the ``sensitivity`` allocation reads from the
    finished table at ``path`` (read once per version of the file); one-line ValueError naming ``flag`` when the file
    is missing, is not a sensitivity table or is unfinished."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ValueError(f"{flag} {path} not found; measure the table with {HOW_TO_MEASURE}")
    try:
        return dict(_costs(_stamp(p)))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{flag} {path}: {str(exc).splitlines()[0]}") from None


def table_granularity(path) -> str:
    """``block`` (one cost per block) or ``matrix`` (one per block matrix) of the table at ``path``."""
    return "matrix" if isinstance(next(iter(table_costs(path))), str) else "block"


def table_identity(path) -> dict:
    """What a resume key records of a table: its resolved path and the sha256 of the costs it holds (JSON of the
    sorted ``(unit, Δ)`` pairs), so that another table, or the same file measured again, does not resume old rows."""
    costs = sorted((str(k), float(v)) for k, v in table_costs(path).items())
    digest = hashlib.sha256(json.dumps(costs).encode()).hexdigest()
    return {"path": _stamp(path)[0], "costs_sha256": digest}


def _model_name(label) -> Optional[tuple]:
    """(kind, name) of a model label: a built-in alias, a local folder or file (resolved), else a hub id."""
    if not label:
        return None
    text = str(label)
    if text.startswith("builtin:"):
        return "builtin", text
    p = Path(text).expanduser()
    return ("path", str(p.resolve())) if p.exists() else ("hub", text)


def models_differ(a, b) -> Optional[bool]:
    """Whether model labels ``a`` and ``b`` name different models: True / False when the labels decide it, None when
    they cannot (one unknown, a folder against a name, or two folders that may hold copies)."""
    na, nb = _model_name(a), _model_name(b)
    if na is None or nb is None:
        return None
    if na == nb:
        return False
    return True if na[0] == nb[0] and na[0] != "path" else None


def check_table(path, pruner: str, sparsity: float, model=None, fingerprint: Optional[str] = None) -> list:
    """Refuse (one-line ValueError) a table whose stored settings name another model: another weights sha256 than
    ``fingerprint`` (:func:`pruning.calib_stats.weights_fingerprint` of the model at hand) when both are known, else
    another model label than ``model``. Returns the warnings (another pruner or sparsity than ``pruner`` /
    ``sparsity``; a model the labels cannot tell apart)."""
    meta = table_metadata(Path(path).expanduser())
    key = meta.get("key") or {}
    stored_fp, stored_model = key.get("weights_sha256"), meta.get("model")
    fix = f"measure it on this model: python -m pruning sensitivity {model or 'MODEL'} --out sens.parquet"
    warnings = []
    if fingerprint and stored_fp:
        if stored_fp != fingerprint:
            raise ValueError(f"--sensitivity-table {path} was measured on another model ({stored_model or 'unnamed'}, "
                             f"weights sha256 {stored_fp[:12]}…, this model's {fingerprint[:12]}…); {fix}")
    else:
        differ = models_differ(stored_model, model)
        if differ:
            raise ValueError(f"--sensitivity-table {path} was measured on {stored_model}, not on {model}; {fix}")
        if differ is None and stored_model:
            warnings.append(f"--sensitivity-table {path} was measured on {stored_model}; make sure it is this model "
                            f"({model or 'unnamed'})")
    s_pruner, s_sparsity = key.get("pruner"), key.get("sparsity")
    if (s_pruner is not None and s_pruner != pruner) or \
            (s_sparsity is not None and abs(float(s_sparsity) - float(sparsity)) > 1e-9):
        warnings.append(f"--sensitivity-table {path} was measured with {s_pruner} at S = {s_sparsity}; this search "
                        f"prunes with {pruner} at S = {sparsity:g} (the same pruner and sparsity are advisable)")
    return warnings
