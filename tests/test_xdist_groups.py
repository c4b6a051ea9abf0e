"""``make test`` runs the suite with ``-n 2 --dist loadgroup``: a module marked ``xdist_group`` must run on one
worker (its module fixtures are minutes of work), which pytest-xdist 3.8 no longer ensures under pytest 9.2 on its
own (tests/xdist_groups.py)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("xdist")
HERE = Path(__file__).resolve().parent

GROUPED = '''
import pytest
pytestmark = pytest.mark.xdist_group("g")

@pytest.mark.parametrize("i", range(4))
def test_grouped(i):
    pass
'''
LOOSE = '''
import pytest

@pytest.mark.parametrize("i", range(4))
def test_loose(i):
    pass
'''


def test_a_group_runs_on_one_worker(tmp_path):
    (tmp_path / "test_grouped.py").write_text(GROUPED)
    (tmp_path / "test_loose.py").write_text(LOOSE)
    env = {**os.environ, "PYTHONPATH": str(HERE), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "pytest", "-p", "xdist_groups", "-n", "2", "--dist", "loadgroup", "-v",
                        "-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(tmp_path)],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    ran = re.findall(r"\[(gw\d)\].*PASSED (\S+)", r.stdout)
    grouped = [(w, n) for w, n in ran if "test_grouped" in n]
    assert len(grouped) == 4 and len(ran) == 8, r.stdout[-3000:]
    assert all(n.endswith("@g") for _, n in grouped), grouped  # scheduled as one unit (the group is in the id)
    assert len({w for w, _ in grouped}) == 1, grouped  # on one worker
    assert not any("@" in n for _, n in ran if "test_loose" in n)
