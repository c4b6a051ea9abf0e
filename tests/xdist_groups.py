"""pytest plugin (tests/conftest.py loads it): ``--dist loadgroup`` keeps each ``xdist_group`` on one worker."""
from __future__ import annotations

import pytest


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Make ``--dist loadgroup`` keep an ``xdist_group`` together under pytest ≥ 9.2: pytest-xdist 3.8 tags a grouped
    test by appending ``@group`` to ``item._nodeid``, which pytest 9.2 no longer reads (a node's id is ``item._id``),
    so the groups were silently split over the workers and their module fixtures (minutes of weightwatcher and
    notebook runs) computed once per worker. This tags the id pytest reads; a no-op where xdist's own tag took."""
    if not getattr(config.option, "loadgroup", False) or not items or not hasattr(items[0], "_id"):
        return  # not an xdist worker of --dist loadgroup, or a pytest that reads ``_nodeid``
    for item in items:
        names = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                        for m in item.iter_markers("xdist_group")})
        if names and not item.nodeid.endswith("@" + "_".join(names)):
            item._id = type(item._id).parse(f"{item.nodeid}@{'_'.join(names)}")
