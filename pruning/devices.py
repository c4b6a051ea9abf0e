"""Compute device, storage dtype and disk-space checks of the command line (one-line errors before anything slow).

The weights are *stored* on the CPU (or streamed from disk); ``--device`` is where each decoder block is computed.
``--dtype`` is the storage and block-compute precision: default float32 on the CPU, the checkpoint's own dtype on
CUDA. Statistics accumulate in float64 whatever the dtype (:class:`pruning.block_loop._Acc`).
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

import torch

#: dtypes the model may be stored and computed in
DTYPE_NAMES = ("bfloat16", "float16", "float32")


def parse_device(text: Optional[str]) -> torch.device:
    """``cpu`` / ``cuda`` / ``cuda:N`` → torch.device; ValueError (one line) for anything else or CUDA without a GPU."""
    name = (text or "cpu").strip().lower()
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown --device {text!r}; use cpu or cuda (cuda:N for one of several GPUs)") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported --device {text!r}; use cpu or cuda")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda requested but no CUDA GPU is available here (torch.cuda.is_available() "
                             "is False); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev


def parse_dtype(text: Optional[str], device: torch.device, checkpoint: Optional[torch.dtype] = None) -> torch.dtype:
    """The storage / compute dtype: ``text`` (bfloat16, float16, float32), else float32 on the CPU and the
    checkpoint's dtype on CUDA. ValueError (one line) for an unknown name or a dtype the device cannot run."""
    if text is None:
        return (checkpoint or torch.float32) if device.type == "cuda" else torch.float32
    name = str(text).strip().lower().replace("torch.", "")
    name = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32"}.get(name, name)
    if name not in DTYPE_NAMES:
        raise ValueError(f"unknown --dtype {text!r}; choose one of: {', '.join(DTYPE_NAMES)}")
    dtype = getattr(torch, name)
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise ValueError(f"--dtype bfloat16 is not supported by {torch.cuda.get_device_name(device)}; "
                         f"use --dtype float16 or float32")
    if device.type == "cpu" and not _cpu_runs(dtype):
        raise ValueError(f"--dtype {name} cannot run on this CPU build of torch; use --dtype float32")
    return dtype


def _cpu_runs(dtype: torch.dtype) -> bool:
    """Whether a matmul and a softmax run on the CPU in ``dtype`` (the ops a decoder block needs)."""
    try:
        x = torch.ones(2, 2, dtype=dtype)
        torch.softmax(x @ x, dim=-1)
        return True
    except (RuntimeError, TypeError):
        return False


def check_disk(target: Path, need_bytes: int, margin: float = 1.05) -> None:
    """ValueError (one line) when the file system of ``target`` (or its nearest existing parent) has less free space
    than ``need_bytes`` × ``margin``."""
    p = Path(target).expanduser().resolve()
    while not p.exists() and p != p.parent:
        p = p.parent
    free = shutil.disk_usage(p).free
    if free < need_bytes * margin:
        raise ValueError(f"not enough disk space for the output: it needs about {need_bytes / 1e9:.2f} GB, "
                         f"{p} has {free / 1e9:.2f} GB free; free some space or choose another --out")
