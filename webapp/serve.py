"""Start a Streamlit script as a local server and wait until it answers: the one launcher of the browser tests
(``tests/conftest.py``) and the app benchmarks (``bench/bench_app_views.py``, ``bench/bench_app_load.py``), and the
headless Chromium they drive (:data:`CHROMIUM`, :data:`CHROMIUM_FLAGS`).

The server runs in its own process group (``streamlit run SCRIPT --server.headless true`` on a free port of
127.0.0.1, no file watcher, no usage statistics), so that :meth:`StreamlitServer.stop` ends it with everything it
started; its output goes to ``log`` (a file object) or is discarded.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import IO, Optional

ROOT = Path(__file__).resolve().parent.parent
#: Debian's Chromium and the flags it needs to run headless here (../shared/BROWSER.md), for Playwright's
#: ``chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)``
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--run-all-compositor-stages-before-draw"]


def free_port() -> int:
    """A TCP port of 127.0.0.1 that is free now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StreamlitServer:
    """``streamlit run script`` on a free local port; :attr:`url` answers ``/_stcore/health`` once constructed.

    Raises ``RuntimeError`` (with the end of ``log`` when it is a readable file) when the server exits or does not
    answer within ``timeout_s``. Use as a context manager, or call :meth:`stop`. ``checkout``: the repository
    whose code the server runs (default this one; another checkout's ``app.py`` with its own packages first on
    ``sys.path``, e.g. to compare two versions, bench/ab_lambda_step.py).
    """

    def __init__(self, script: Path, env: Optional[dict] = None, log: Optional[IO] = None, timeout_s: float = 120.0,
                 checkout: Optional[Path] = None):
        checkout = Path(checkout).resolve() if checkout is not None else ROOT
        if not checkout.is_dir():
            raise NotADirectoryError(f"checkout {checkout} is not a directory; pass the repository root to serve")
        self.port = free_port()
        self.log = log
        out = log if log is not None else subprocess.DEVNULL
        # the app as make app starts it (its imports begun with the server, webapp.launch); other scripts plainly
        runner = "webapp.launch" if Path(script).resolve() == checkout / "app.py" else "streamlit"
        self.proc = subprocess.Popen([sys.executable, "-m", runner, "run", str(script), "--server.headless",
                                      "true", "--server.address", "127.0.0.1", "--server.port", str(self.port),
                                      "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
                                     cwd=checkout, env=env if env is not None else dict(os.environ), stdout=out,
                                     stderr=subprocess.STDOUT if log is not None else subprocess.DEVNULL,
                                     start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}"
        try:
            self._wait(timeout_s)
        except BaseException:
            self.stop()
            raise

    def _wait(self, timeout_s: float) -> None:
        deadline = time.time() + timeout_s
        while True:
            try:
                if urllib.request.urlopen(self.url + "/_stcore/health", timeout=2).read().strip() == b"ok":
                    return
            except OSError:
                pass
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"streamlit did not start (exit {self.proc.poll()}){self._log_tail()}")
            time.sleep(0.3)

    def _log_tail(self) -> str:
        try:
            self.log.flush()
            self.log.seek(0)
            return ": " + self.log.read()[-2000:]
        except (AttributeError, OSError, ValueError):
            return ""

    def cpu(self) -> float:
        """CPU seconds (user + system) the server process has used so far."""
        import psutil

        t = psutil.Process(self.proc.pid).cpu_times()
        return t.user + t.system

    def stop(self, timeout_s: float = 20.0) -> None:
        """End the server's process group (SIGTERM, then SIGKILL after ``timeout_s``)."""
        if self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def __enter__(self) -> StreamlitServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
