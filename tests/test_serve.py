"""webapp.serve.StreamlitServer: the one launcher of the browser tests and the app benchmarks."""
from __future__ import annotations

import urllib.request

import pytest

from webapp.serve import StreamlitServer


def test_server_answers_then_stops_with_its_process_group(tmp_path):
    page = tmp_path / "page.py"
    page.write_text("import streamlit as st\nst.header('served')\n")
    with open(tmp_path / "log.txt", "w+") as log, StreamlitServer(page, log=log, timeout_s=90) as srv:
        assert urllib.request.urlopen(srv.url + "/_stcore/health", timeout=5).read().strip() == b"ok"
        assert srv.cpu() > 0
        proc = srv.proc
    assert proc.poll() is not None  # stopped on leaving the block


def test_a_server_that_exits_is_reported_with_its_log(tmp_path):
    with open(tmp_path / "log.txt", "w+") as log, pytest.raises(RuntimeError, match="streamlit did not start"):
        StreamlitServer(tmp_path / "page.py", env={"PATH": "/usr/bin", "PYTHONPATH": "", "PYTHONHOME": "/nonexistent"},
                        log=log, timeout_s=30)


def test_a_checkout_that_is_no_directory_is_refused_before_starting(tmp_path):
    with pytest.raises(NotADirectoryError, match="is not a directory; pass the repository root"):
        StreamlitServer(tmp_path / "app.py", checkout=tmp_path / "missing")
