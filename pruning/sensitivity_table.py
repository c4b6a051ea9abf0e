"""The sensitivity table on disk (:mod:`pruning.sensitivity`): parquet with the settings, versions, reference and
verdict as JSON in the file's schema metadata, written whole or not at all (:func:`spectra.files.atomic_path`)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

__all__ = ["META_KEY", "write_table", "table_metadata", "read_table"]

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
