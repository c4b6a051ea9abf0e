"""One module per allocation method: its formula (docstring: formula and source), its function ``fn(ctx)`` and its
``SPEC`` (:class:`pruning.allocation.spec.AllocationSpec`). :mod:`pruning.allocation.registry` lists them."""
