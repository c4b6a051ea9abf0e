"""What a benchmark's header says about the machine beside the load average: how fast fresh memory faults in.

On this project's VM (Firecracker with virtio-balloon free-page reporting) memory a process frees goes back to the
host within seconds, and the next first touch of it runs at ~90 MB/s instead of several GB/s: a cold app start that
touches a few GB then takes tens of seconds longer, depending on what ran just before. The app benchmarks print
this rate at their start so that two runs can be compared.
"""
from __future__ import annotations

import subprocess
import sys

#: the probe: a new process allocates and fills ``MiB`` of float32 (its first touch of every page) and prints MB/s
_PROBE = ("import sys, time, numpy as np; n = int(sys.argv[1]) * 2**18; t = time.perf_counter(); "
          "a = np.empty(n, np.float32); a.fill(1.0); print(n * 4 / 1e6 / (time.perf_counter() - t))")


def first_touch_mb_s(mib: int = 256) -> float:
    """MB/s at which a fresh process first touches ``mib`` MiB of newly allocated memory (page faults included)."""
    out = subprocess.run([sys.executable, "-c", _PROBE, str(mib)], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def describe() -> str:
    """One header line: the first-touch rate of fresh memory (:func:`first_touch_mb_s`)."""
    return f"first touch of fresh memory: {first_touch_mb_s():.0f} MB/s (256 MiB in a new process)"
