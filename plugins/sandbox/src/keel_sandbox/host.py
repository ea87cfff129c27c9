"""The sandbox's dealings with the host: killing a run's processes, sweeping what it left outside
its folder, the launcher's configuration descriptor, the per-run tmpfs, reading and removing files
without following a run's links, and reading why a run failed from its stderr.

Used by :mod:`keel_sandbox.runner`; nothing here knows about a :class:`~keel_sandbox.SandboxConfig`.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import time
from pathlib import Path
from typing import Any

import anyio

import keel

__all__ = [
    "chown_tree",
    "config_descriptor",
    "count_processes",
    "feed",
    "kill_everything",
    "kill_uid",
    "looks_out_of_memory",
    "looks_out_of_processes",
    "mount_quota",
    "processes_of",
    "reachable_by_others",
    "read_nofollow",
    "remove_tree",
    "sweep_outside",
    "unmount",
]

WORLD_WRITABLE = ("/tmp", "/var/tmp", "/dev/shm")


async def feed(process: Any, data: bytes) -> None:
    try:
        if data:
            await process.stdin.send(data)
        await process.stdin.aclose()
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        pass


def kill_everything(pid: int, uid: int | None) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if uid is not None:
        kill_uid(uid)


def processes_of(uid: int) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status") as handle:
                for line in handle:
                    if line.startswith("State:") and line.split()[1] in ("Z", "X"):
                        break  # a zombie holds nothing and waits for its new parent to reap it
                    if line.startswith("Uid:"):
                        if int(line.split()[1]) == uid:
                            found.append(int(entry.name))
                        break
        except (OSError, ValueError):
            continue
    return found


def count_processes(uid: int) -> int:
    return len(processes_of(uid)) if os.path.isdir("/proc") else 0


def kill_uid(uid: int) -> None:
    """Kill every process of the run's own user id, until none is left (a fork bomb races us)."""
    for _ in range(50):
        pids = processes_of(uid)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.01)


def sweep_outside(uid: int, folder: Path) -> list[str]:
    """Find, report and remove what the run's user id left in world-writable places (the run's
    user owns nothing else and is in no group, so it can create entries nowhere else)."""
    found: list[str] = []
    roots = {*(Path(p) for p in WORLD_WRITABLE), folder.parent}
    seen = 0
    for root in roots:
        if not root.is_dir():
            continue
        for current, dirs, names in os.walk(root):
            here = Path(current)
            if here == folder:
                dirs[:] = []
                continue
            keep = []
            for name in [*dirs, *names]:
                seen += 1
                path = here / name
                if path == folder:
                    continue
                try:
                    info = path.lstat()
                except OSError:
                    continue
                if info.st_uid == uid:
                    found.append(str(path))
                elif name in dirs and info.st_mode & stat.S_IWOTH:
                    keep.append(name)  # only a world-writable folder can hold what the run wrote
            dirs[:] = keep
            if seen > 50_000:
                break
    for leftover in found:
        remove_tree(Path(leftover))
    return sorted(found)


def config_descriptor(data: bytes) -> int:
    """A readable descriptor holding the launcher's configuration: a memfd (Linux), else a pipe."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("keel-sandbox-config", 0)
        os.write(fd, data)
        os.lseek(fd, 0, os.SEEK_SET)
        return fd
    read, write = os.pipe()
    if len(data) > 60_000:
        os.close(read)
        os.close(write)
        raise keel.KeelError("keel-sandbox: the run's configuration is too large to pass on this platform")
    os.write(write, data)
    os.close(write)
    return read


_LIBC: Any = None


def _libc_call(name: str, *args: Any) -> None:
    import ctypes

    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(None, use_errno=True)
    if getattr(_LIBC, name)(*args) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{name}: {os.strerror(errno)}")


def mount_quota(folder: Path, size_mb: int, inodes: int) -> None:
    """Make the run folder a tmpfs of ``size_mb`` and ``inodes``: the run's whole disk."""
    import ctypes

    options = f"size={size_mb}m,nr_inodes={inodes},mode=0700".encode()
    _libc_call("mount", b"tmpfs", str(folder).encode(), b"tmpfs", ctypes.c_ulong(2 | 4), options)  # nosuid, nodev


def unmount(folder: Path) -> None:
    try:
        _libc_call("umount2", str(folder).encode(), 2)  # MNT_DETACH: nothing of the run still uses it
    except OSError:
        pass


def reachable_by_others(folder: Path) -> bool:
    """Every folder from / down to ``folder`` lets others through (the execute bit)."""
    current = folder.resolve()
    return all(part.stat().st_mode & stat.S_IXOTH for part in [current, *current.parents])


def read_nofollow(path: Path, limit: int) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        return handle.read(limit)


def chown_tree(folder: Path, uid: int) -> None:
    os.chown(folder, uid, uid)
    for path in folder.rglob("*"):
        os.chown(path, uid, uid, follow_symlinks=False)


def remove_tree(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
        return

    def unlock(function: Any, name: str, _info: Any) -> None:
        os.chmod(os.path.dirname(name), 0o700)  # a run may have locked its own directories
        function(name)

    shutil.rmtree(path, onerror=unlock)


def looks_out_of_memory(stderr: str, signame: str | None) -> bool:
    markers = ("MemoryError", "Cannot allocate memory", "out of memory", "std::bad_alloc", "allocation failed")
    return any(m in stderr for m in markers) or signame in ("SIGSEGV", "SIGABRT", "SIGTRAP")


def looks_out_of_processes(stderr: str) -> bool:
    markers = ("Resource temporarily unavailable", "fork: retry", "Cannot fork", "can't fork")
    return any(marker in stderr for marker in markers)
