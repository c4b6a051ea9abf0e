"""Allocations on disk: JSON with the settings that produced them, written atomically, read back with validation."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import pandas as pd

from pruning.allocation.mappings import OUTPUT_COLUMNS
from spectra.files import atomic_path
from spectra.results import jsonable


def allocation_to_json(df: pd.DataFrame) -> dict:
    """Contract 2 JSON: ``{"method", "sparsity", "settings": {...}, "layers": {longname: sparsity}}``."""
    info = dict(df.attrs.get("allocation", {}))
    if "longname" not in df.columns or "sparsity" not in df.columns:
        raise ValueError("not an allocation table: need 'longname' and 'sparsity' columns (use allocate())")
    method = info.pop("method", None)
    sparsity = info.pop("sparsity", None)
    return jsonable({
        "method": method,
        "sparsity": sparsity,
        "settings": info,
        "layers": {str(n): float(s) for n, s in zip(df["longname"], df["sparsity"])},
    })


def save_allocation(df: pd.DataFrame, path: Union[str, Path], overwrite: bool = False) -> Path:
    """Write an allocation as JSON (``.json``, Contract 2) or CSV (``.csv``: a ``# {json header}`` line, then the
    table). An existing file is never replaced unless ``overwrite``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".json", ".csv"):
        raise ValueError(f"unknown allocation file type {path.suffix!r} for {path}; use .json or .csv")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True (--overwrite) or choose another path")
    doc = allocation_to_json(df)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        if suffix == ".json":
            tmp.write_text(json.dumps(doc, indent=1) + "\n")
        else:
            header = {k: doc[k] for k in ("method", "sparsity", "settings")}
            with open(tmp, "w", newline="") as fh:
                fh.write("# " + json.dumps(header) + "\n")
                df[[c for c in OUTPUT_COLUMNS if c in df.columns]].to_csv(fh, index=False)
    return path


class LoadedAllocation(dict):
    """``{longname: sparsity}`` read from an allocation file, with ``method``, ``sparsity`` and ``settings``."""

    def __init__(self, layers: Mapping[str, float], method: Optional[str], sparsity: Optional[float],
                 settings: Mapping[str, Any]):
        super().__init__(layers)
        self.method = method
        self.sparsity = sparsity
        self.settings = dict(settings)


def load_allocation(path: Union[str, Path]) -> LoadedAllocation:
    """Read a JSON or CSV allocation written by :func:`save_allocation` (or by hand in the Contract 2 format).

    Returns a dict ``{longname: sparsity}`` (a :class:`LoadedAllocation` with ``.method``, ``.sparsity`` and
    ``.settings``). Every value must be a number in [0, 1].
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"allocation file {path} not found; create it with `python -m pruning allocate`")
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            doc = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("layers"), dict):
            raise ValueError(f"{path} has no 'layers' mapping {{longname: sparsity}} (Contract 2 format)")
        layers = doc["layers"]
        header = doc
    elif suffix == ".csv":
        with open(path) as fh:
            first = fh.readline()
            header = {}
            if first.startswith("#"):
                try:
                    header = json.loads(first[1:])
                except json.JSONDecodeError:
                    raise ValueError(f"{path}: unreadable '# {{...}}' header line") from None
            else:
                fh.seek(0)
            table = pd.read_csv(fh)
        if not {"longname", "sparsity"} <= set(table.columns):
            raise ValueError(f"{path} needs 'longname' and 'sparsity' columns")
        layers = dict(zip(table["longname"].astype(str), table["sparsity"]))
    else:
        raise ValueError(f"unknown allocation file type {path.suffix!r} for {path}; use .json or .csv")
    clean: dict[str, float] = {}
    for name, s in layers.items():
        try:
            v = float(s)
        except (TypeError, ValueError):
            raise ValueError(f"{path}: sparsity of {name!r} is not a number ({s!r})") from None
        if not (0.0 <= v <= 1.0):
            raise ValueError(f"{path}: sparsity of {name!r} is {v}, outside [0, 1]; re-run allocate with clipping "
                             f"(the default)")
        clean[str(name)] = v
    if not clean:
        raise ValueError(f"{path} lists no layers")
    return LoadedAllocation(clean, header.get("method"), header.get("sparsity"), header.get("settings", {}) or {})
