"""Crash drills: kill a writer process at a chosen moment and keep what it acknowledged.

A durable store promises that an acknowledged write survives a crash. To check it, run a writer
in a subprocess that prints one line per write only AFTER the write returned, kill it with SIGKILL
after ``kill_after`` lines, and compare what the reopened store holds with the lines read::

    acked = kill_after_acks([sys.executable, "-c", WRITER, str(path)], kill_after=500)
    # each item: the integers of one line, e.g. (seq, task, n)

Lines printed after the kill was sent but before it landed count too (they were acknowledged).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence

__all__ = ["kill_after_acks"]


def kill_after_acks(argv: Sequence[str], kill_after: int, *, timeout: float = 120.0) -> list[tuple[int, ...]]:
    """Run ``argv``, SIGKILL it once it has printed ``kill_after`` lines of integers, and return
    every line it printed as a tuple of ints. Raises ``AssertionError`` when the writer ends before
    the kill (nothing would be tested) or is slower than ``timeout`` seconds."""
    proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
    assert proc.stdout is not None
    acked: list[tuple[int, ...]] = []
    deadline = time.monotonic() + timeout
    try:
        for line in proc.stdout:
            acked.append(tuple(int(x) for x in line.split()))
            if len(acked) >= kill_after:
                os.kill(proc.pid, signal.SIGKILL)
                break
            assert time.monotonic() < deadline, f"the writer is far too slow: {len(acked)} lines in {timeout}s"
        acked += [tuple(int(x) for x in line.split()) for line in proc.stdout]  # acknowledged before the kill
    finally:
        proc.kill()
        _, stderr = proc.communicate(timeout=30)
    assert len(acked) >= kill_after, f"the writer ended before it was killed (exit {proc.returncode}): {stderr[-2000:]}"
    return acked
