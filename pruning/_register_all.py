"""Import every pruner module so that it registers itself in :data:`pruning.base.PRUNERS`."""
import importlib

for _mod in ("magnitude", "wanda", "sparsegpt", "fista", "prox24"):
    try:
        importlib.import_module(f"pruning.{_mod}")
    except ModuleNotFoundError as exc:  # a pruner module not written yet must not break the others
        if exc.name != f"pruning.{_mod}":
            raise
