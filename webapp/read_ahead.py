"""Work the app reads ahead in a background thread (``webapp.cache.warm_model``: the model, the calibration windows,
OWL's input norms), scheduled so that it does not slow down a λ step and is done before a page asks for it.

* :func:`start` runs the work in one thread of lower priority (:func:`background_priority`): page visits go on
  beside it (it is mostly torch, which releases the GIL, and the pages' threads take the cores first);
* the λ fragment calls :func:`page_started`; the read-ahead calls :func:`yield_to_pages` between its phases and
  between two decoder blocks of its forward pass and of OWL's outlier ratios (:func:`pause_points`), and waits
  there while λ steps keep coming (a burst of steps has the cores to itself: a step is the latency a user feels,
  bench/bench_app_views.py measures it);
* a page that needs a result the read-ahead may be computing wraps the call in :func:`waiting` (the read-ahead then
  stops pausing: the page waits for it through the cache's lock);
* at exit the read-ahead stops at its next block (:func:`stop`).

None of this changes a number: it only decides when the work runs.
"""
from __future__ import annotations

import atexit
import contextlib
import os
import threading
import time
from typing import Callable, Iterator, Optional

#: the read-ahead thread's name
THREAD_NAME = "spl-warm-model"
#: seconds without a λ step starting before the read-ahead goes on with its next block (:func:`yield_to_pages`)
QUIET_S = 1.0
#: the longest the read-ahead waits at one pause point during an unbroken burst of λ steps before it computes its next
#: block anyway (~0.3 s of both cores for the built-in model's forward): with 5 s it took a block in the middle of
#: the benchmark's 12 steps (the slowest step 0.27 s, 0.21 s of it server CPU; bench/RESULTS_app_views.md)
BURST_LIMIT_S = 30.0
#: how much lower than the pages the read-ahead thread runs (:func:`background_priority`): at nice +10 the pages
#: get about 10× its CPU share when both want a core
BACKGROUND_NICE = 10

_last_page_run = [0.0]  # time.monotonic() when the λ fragment last started running
_waiting = [0]  # pages now waiting for a result the read-ahead may be computing
_lock = threading.Lock()
_local = threading.local()  # .active: the calling thread is the read-ahead's
_STOP = threading.Event()


class ReadAheadStopped(Exception):
    """The read-ahead gave up at a block boundary because the process is exiting (nothing is cached)."""


def start(work: Callable[[], None]) -> threading.Thread:
    """Run ``work()`` in the read-ahead thread (a daemon, :data:`THREAD_NAME`) at lower priority; an exception ends
    it silently (the page that needs the result computes it and reports what failed)."""

    def run() -> None:
        background_priority()
        _local.active = True
        try:
            work()
        except Exception:  # noqa: BLE001 - the page that needs the result reports it
            pass

    thread = threading.Thread(target=run, name=THREAD_NAME, daemon=True)
    thread.start()
    return thread


def in_read_ahead() -> bool:
    """Whether the calling thread is the read-ahead's."""
    return bool(getattr(_local, "active", False))


def background_priority() -> None:
    """Lower the calling thread's scheduling priority by :data:`BACKGROUND_NICE` (at most to 19; Linux:
    ``setpriority`` on a thread id changes that thread only, and the OpenMP threads torch starts from it inherit it);
    a no-op where the system does not support it."""
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + BACKGROUND_NICE))
    except (AttributeError, OSError):
        pass


def page_started() -> None:
    """Note that the Allocation lab's λ fragment starts running: the read-ahead pauses at its next phase or block
    until none has started for :data:`QUIET_S` (:func:`yield_to_pages`)."""
    _last_page_run[0] = time.monotonic()


def yield_to_pages(limit_s: Optional[float] = None) -> None:
    """Called by the read-ahead between two decoder blocks: wait until no page has started running for
    :data:`QUIET_S` seconds (at most ``limit_s``, default :data:`BURST_LIMIT_S`, and not while a page waits for the
    read-ahead, :func:`waiting`).
    Raises :class:`ReadAheadStopped` once the process is exiting (:func:`stop`)."""
    limit_s = BURST_LIMIT_S if limit_s is None else limit_s
    t0 = time.monotonic()
    while (time.monotonic() - _last_page_run[0] < QUIET_S and time.monotonic() - t0 < limit_s
           and not _waiting[0] and not _STOP.is_set()):
        time.sleep(0.05)
    if _STOP.is_set():
        raise ReadAheadStopped("the app is exiting")


def pause_points() -> Optional[Callable[[int, int], None]]:
    """A ``progress_cb(done, total)`` for a library loop run by the read-ahead: it pauses there for the pages
    (:func:`yield_to_pages`); None when the caller is a page (it then runs straight through)."""
    return (lambda done, total: yield_to_pages()) if in_read_ahead() else None


@contextlib.contextmanager
def waiting() -> Iterator[None]:
    """Around a page's call whose result the read-ahead may be computing (the cache's lock then makes the page wait
    for it): the read-ahead stops pausing for pages until the call returns."""
    with _lock:
        _waiting[0] += 1
    try:
        yield
    finally:
        with _lock:
            _waiting[0] -= 1


@atexit.register
def stop(timeout_s: float = 30.0) -> None:
    """At exit: make the read-ahead stop at its next block and wait for it (a daemon thread still inside torch when
    the interpreter finalises aborts the process)."""
    _STOP.set()
    for t in threading.enumerate():
        if t.name == THREAD_NAME and t is not threading.current_thread():
            t.join(timeout_s)
