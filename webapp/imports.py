"""transformers' names, imported once per process and one thread at a time (:func:`import_transformers`).

transformers resolves its names lazily and not thread-safely: the app's sessions and its read-ahead thread must not
import them at the same moment (three of four sessions opened together failed with "cannot import name
'AutoModelForCausalLM' from 'transformers'" before this, ``bench/bench_app_load.py``).
"""
from __future__ import annotations

import threading

_IMPORTED = threading.Event()
_IMPORT_LOCK = threading.Lock()


def import_transformers() -> None:
    """Resolve the transformers names the app uses (the module's docstring says why one thread at a time). app.py
    calls this before any page work; :mod:`webapp.preload` as the server starts."""
    if _IMPORTED.is_set():
        return
    with _IMPORT_LOCK:
        if _IMPORTED.is_set():
            return
        import transformers
        from transformers.models.auto.tokenization_auto import tokenizer_class_from_name  # noqa: F401
        from transformers.pytorch_utils import Conv1D  # noqa: F401

        from spectra.gguf_convert import TOKENIZER_CLASSES

        for name in ("AutoConfig", "AutoModelForCausalLM", "AutoTokenizer", *TOKENIZER_CLASSES.values()):
            getattr(transformers, name)
        _IMPORTED.set()
