"""Holding an environment from the command line: ``keel env start NAME --hold`` and ``keel env stop``.

The holder writes its pid to ``.keel/env/<name>.pid`` (in the current folder) and keeps its runtime,
which supervises the environment, until SIGTERM or Ctrl-C; ``keel env stop NAME`` (another process)
checks that the pid is really that holder, sends it SIGTERM and waits until it has gone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import anyio

from keel.errors import KeelError

__all__ = ["hold_until_signalled", "pidfile", "stop_held"]


def pidfile(name: str) -> Path:
    """Where `keel env start NAME --hold` says which process holds an environment."""
    return Path(".keel") / "env" / f"{name}.pid"


async def hold_until_signalled(name: str) -> None:
    """Record this process as ``name``'s holder, then wait for SIGTERM (`keel env stop`) or Ctrl-C.
    The caller then leaves its runtime, which stops the environment cleanly."""
    path = pidfile(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(str(os.getpid()))
    try:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                break
    finally:
        path.unlink(missing_ok=True)


def stop_held(name: str, timeout: float) -> None:
    """Ask the holder of ``name`` to stop and wait (up to ``timeout`` seconds) until it has exited.

    :raises KeelError: nothing holds it here (no file, a dead or foreign pid), or the holder did not
        exit in time.
    """
    path = pidfile(name)
    try:
        pid = int(path.read_text())
        if not _holds(pid, name):  # a stale file whose pid now belongs to another process
            raise ProcessLookupError(pid)
        os.kill(pid, signal.SIGTERM)  # the holder leaves its runtime, which stops the environment
    except (OSError, ValueError):
        path.unlink(missing_ok=True)
        raise KeelError(
            f"environment {name!r} is not held by a running `keel env start {name} --hold` here "
            f"(no live process in {path})"
        ) from None
    deadline = time.monotonic() + timeout
    while _alive(pid):  # another process: nothing to wait on but its pid
        if time.monotonic() > deadline:
            raise KeelError(f"environment {name!r}: its holder (pid {pid}) did not stop within {timeout:g}s")
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    """Whether a process still runs (an exited one its parent has not reaped yet counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _holds(pid: int, name: str) -> bool:
    """Whether ``pid`` is a `keel env start NAME --hold` process."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return _alive(pid)  # no /proc here: trust the file
    return b"--hold" in argv and name.encode() in argv
