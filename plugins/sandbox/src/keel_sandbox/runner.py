"""Run one script or command in a fresh folder, under limits, and report what happened.

What is enforced, and how (``Capabilities`` says which of these this machine allows):

- **limits**: rlimits set in the launcher before exec: CPU seconds (``RLIMIT_CPU``), memory
  (``RLIMIT_AS``; ``RLIMIT_DATA`` for Node.js, whose engine reserves address space it never uses),
  open files, processes (``RLIMIT_NPROC``) and the size of a written file (``RLIMIT_FSIZE``);
- **wall clock**: the run is a new session; at its deadline the whole process group is killed, and
  when the run has its own user id every process of that user as well (so a child that started
  its own session dies too);
- **environment**: exactly ``PATH`` (a minimal one), ``HOME``/``TMPDIR`` inside the folder, ``LANG``
  and the variable names the permissions declare; nothing else of the host's environment;
- **network**: a new, empty network namespace when ``network = false`` and the machine allows it;
  otherwise the result says plainly that network isolation is NOT enforced. Unix sockets are
  not network: in the private mount table ``/run`` (``/var/run``), ``/tmp``, ``/var/tmp`` and
  ``/dev/shm`` are covered by empty read-only filesystems, so the sockets of local services
  (PostgreSQL's ``/var/run/postgresql/.s.PGSQL.5432``, MySQL's, Docker's) cannot be reached;
- **processes and secrets**: each run gets its own PID namespace with a fresh ``/proc`` (it sees
  and signals only its own processes), and its configuration, passed-through secrets included,
  reaches the launcher over a file descriptor, never on a command line;
- **disk**: when the host runs as root, the run folder is a tmpfs of ``disk_mb`` megabytes and
  ``max_inodes`` entries, so a run cannot fill the disk however many files it writes
  (``max_file_mb`` still caps each file);
- **files**: the command runs in the folder, with ``HOME`` and ``TMPDIR`` inside it. Where mount
  namespaces work, the run gets a private mount table in which every mount but its folder is
  read-only (``EROFS`` on any write elsewhere). When the host runs as root, each run also gets its
  own unused user id (so it cannot read the host's private files, and every process it starts can
  be found and killed). With a user id but no mount table, world-writable places (``/tmp``...) are
  swept after the run: what it wrote there is reported and removed. With neither, writes outside
  the folder are NOT prevented, and the result says so.
- **output**: stdout and stderr are read in chunks and kept up to a cap; the rest is read and
  discarded (never held), and the result carries a truncation marker and flags.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import anyio
from anyio.abc import ByteReceiveStream
from pydantic import BaseModel, ConfigDict, Field

import keel
from keel_sandbox.config import LANGUAGES, Language, SandboxConfig
from keel_sandbox.host import (
    chown_tree,
    config_descriptor,
    count_processes,
    feed,
    kill_everything,
    kill_uid,
    looks_out_of_memory,
    looks_out_of_processes,
    mount_quota,
    reachable_by_others,
    read_nofollow,
    remove_tree,
    sweep_outside,
    unmount,
)

__all__ = [
    "LANGUAGES",
    "Capabilities",
    "ProducedFile",
    "RunResult",
    "Sandbox",
    "SandboxConfig",
    "capabilities",
]

LAUNCHER = Path(__file__).with_name("_launch.py")
MINIMAL_PATH = "/usr/local/bin:/usr/bin:/bin"
TRUNCATION_MARKER = "\n[... output truncated by keel-sandbox: {dropped} more bytes were discarded ...]"
#: per-run user ids are drawn from here (unused ids: nothing on the machine belongs to them)
UID_RANGE = (1_900_000_000, 2_000_000_000)

Reason = Literal["completed", "timeout", "cpu", "memory", "processes", "killed", "start_failed"]


class ProducedFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="relative to the run folder")
    size: int
    sha256: str
    blob: keel.BlobRef | None = Field(default=None, description="set when the sandbox was given a store")
    saved_to: str | None = Field(default=None, description="set when the sandbox has an artifacts_dir")


class RunResult(BaseModel):
    """What the model (and the audit log) sees of one run."""

    model_config = ConfigDict(extra="forbid")

    ok: bool = Field(description="exit code 0 within every limit")
    reason: Reason
    message: str = Field(description="one line a model can act on")
    exit_code: int | None = Field(description="None when killed by a signal")
    signal: str | None = None
    run_id: str
    stdout: str
    stderr: str
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    duration_ms: float
    files: list[ProducedFile] = Field(default_factory=list)
    outside_writes: list[str] = Field(
        default_factory=list, description="paths the run created outside its folder (removed afterwards)"
    )
    enforced: dict[str, bool] = Field(default_factory=dict, description="which protections applied to this run")
    notes: list[str] = Field(default_factory=list, description="plain statements of what was NOT enforced")


@dataclass(frozen=True)
class Capabilities:
    """What this machine lets the sandbox enforce (probed once per process)."""

    network_isolation: bool
    readonly_filesystem: bool
    own_user: bool
    detail: str
    pid_namespace: bool = False
    disk_quota: bool = False
    unix_filter: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "network_isolation": self.network_isolation, "readonly_filesystem": self.readonly_filesystem,
            "own_user": self.own_user, "pid_namespace": self.pid_namespace, "disk_quota": self.disk_quota,
            "unix_filter": self.unix_filter,
            "detail": self.detail,
        }  # fmt: skip


_CAPABILITIES: Capabilities | None = None


def capabilities(refresh: bool = False) -> Capabilities:
    """Probe (once per process) what this machine lets the sandbox enforce: a network namespace,
    a private read-only mount table, a per-run user id."""
    global _CAPABILITIES
    if _CAPABILITIES is None or refresh:
        _CAPABILITIES = _probe()
    return _CAPABILITIES


def _probe() -> Capabilities:
    if not sys.platform.startswith("linux"):
        return Capabilities(False, False, False, f"{sys.platform}: only Linux isolation is implemented")
    with tempfile.TemporaryDirectory(prefix="keel-sandbox-probe-") as folder:
        try:
            done = subprocess.run(
                [sys.executable, "-I", "-S", str(LAUNCHER), "--probe", str(UID_RANGE[0]), folder],
                capture_output=True, text=True, timeout=20, env={"PATH": MINIMAL_PATH},
            )  # fmt: skip
            found = json.loads(done.stdout)
        except (OSError, ValueError, subprocess.SubprocessError) as err:
            return Capabilities(False, False, False, f"probe failed: {err}")
    return Capabilities(
        network_isolation=bool(found.get("netns")), readonly_filesystem=bool(found.get("mountns")),
        own_user=bool(found.get("setuid")), detail=done.stderr.strip().replace("\n", "; "),
        pid_namespace=bool(found.get("pidns")), disk_quota=bool(found.get("tmpfs_quota")),
        unix_filter=bool(found.get("unix_filter")),
    )  # fmt: skip


class _Capped:
    """Keeps the first ``limit`` bytes of a stream; counts (and drops) the rest."""

    def __init__(self, limit: int):
        self.limit = limit
        self.kept = bytearray()
        self.dropped = 0
        self.done = anyio.Event()

    async def pump(self, stream: ByteReceiveStream) -> None:
        try:
            async for chunk in stream:
                room = self.limit - len(self.kept)
                if room > 0:
                    self.kept += chunk[:room]
                self.dropped += max(len(chunk) - max(room, 0), 0)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass
        finally:
            self.done.set()

    def text(self) -> str:
        text = self.kept.decode("utf-8", errors="replace")
        return text + TRUNCATION_MARKER.format(dropped=self.dropped) if self.dropped else text


class Sandbox:
    """Runs scripts and commands under one :class:`SandboxConfig`.

    :param store: when given, produced files are stored as blobs (:class:`keel.BlobRef` in the result).
    """

    def __init__(self, config: SandboxConfig | None = None, *, store: keel.Store | None = None):
        self.config = config or SandboxConfig()
        if self.config.write_paths:
            raise keel.KeelError(
                "keel-sandbox: write_paths is not supported: a run writes only to its own folder. "
                "Pass input files with the `files` argument and collect outputs from the result."
            )
        self.store = store
        self.capabilities = capabilities()
        self._active: dict[str, tuple[int, int | None]] = {}  # run id -> (process group, user id)
        self._stopped: set[str] = set()

    # ------------------------------------------------------------------------------ commands

    def command_for(self, language: Language, script_name: str) -> list[str]:
        if language == "python":
            return [self.config.python, "-u", "-B", script_name]  # unbuffered: a killed run keeps its output
        if language == "node":
            heap = ["--max-old-space-size=" + str(max(self.config.memory_mb // 2, 16))] if self.config.memory_mb else []
            return [self.config.node, *heap, script_name]
        return [self.config.shell, script_name]

    async def run_script(
        self, language: Language, code: str, *, stdin: str = "", files: Mapping[str, str] | None = None
    ) -> RunResult:
        """Run ``code`` as a Python, shell or Node.js script in a fresh folder."""
        script = {"python": "main.py", "shell": "main.sh", "node": "main.js"}[language]
        return await self.run(
            self.command_for(language, script), stdin=stdin, files={**(files or {}), script: code},
            memory_via="data" if language == "node" else "as", hidden={script},
        )  # fmt: skip

    async def run(
        self,
        argv: list[str],
        *,
        stdin: str = "",
        files: Mapping[str, str] | None = None,
        memory_via: Literal["as", "data"] = "as",
        hidden: set[str] | frozenset[str] = frozenset(),
    ) -> RunResult:
        """Run a command (looked up on the minimal PATH) in a fresh folder holding ``files``."""
        cfg = self.config
        run_id = keel.new_id("run")
        uid = random.randrange(*UID_RANGE) if cfg.own_user and self.capabilities.own_user else None
        isolate = not cfg.network and self.capabilities.network_isolation
        readonly = cfg.readonly_filesystem and self.capabilities.readonly_filesystem
        base = Path(cfg.workdir_base or tempfile.gettempdir())
        base.mkdir(parents=True, exist_ok=True)
        if uid is not None and not reachable_by_others(base):
            raise keel.KeelError(
                f"keel-sandbox: the run folder base {str(base)!r} is not reachable by other users, so a run "
                "under its own user id could not enter its folder; set workdir_base to a folder like /tmp"
            )
        folder = Path(tempfile.mkdtemp(prefix=f"keel-sandbox-{run_id}-", dir=base))
        quota = self.capabilities.disk_quota
        if quota:
            try:
                mount_quota(folder, cfg.disk_mb, cfg.max_inodes)
            except OSError:
                remove_tree(folder)
                raise
        try:
            return await self._run_in(
                folder, run_id, uid, isolate, readonly, quota, argv, stdin, files, memory_via, hidden
            )
        finally:
            if quota:
                with anyio.CancelScope(shield=True):
                    unmount(folder)
            await anyio.to_thread.run_sync(remove_tree, folder)

    async def _run_in(
        self,
        folder: Path,
        run_id: str,
        uid: int | None,
        isolate: bool,
        readonly: bool,
        quota: bool,
        argv: list[str],
        stdin: str,
        files: Mapping[str, str] | None,
        memory_via: Literal["as", "data"],
        hidden: set[str] | frozenset[str],
    ) -> RunResult:
        cfg = self.config
        inputs = self._write_inputs(folder, files or {})
        if uid is not None:
            chown_tree(folder, uid)
        config = self._launcher_config(folder, uid, isolate, readonly, argv, memory_via)
        pid_namespace, unix_filtered = config["pid_namespace"], config["deny_unix_sockets"]
        config_fd = config_descriptor(json.dumps(config).encode())
        started = time.monotonic()
        out, err = _Capped(cfg.max_output_bytes), _Capped(cfg.max_output_bytes)
        timed_out = False
        returncode: int | None = None
        outside: list[str] = []
        try:
            try:
                process = await anyio.open_process(
                    [sys.executable, "-I", "-S", str(LAUNCHER), "--config-fd", str(config_fd)],
                    cwd=str(folder), env={"PATH": MINIMAL_PATH}, start_new_session=True, pass_fds=(config_fd,),
                )  # fmt: skip
            finally:
                os.close(config_fd)
            self._active[run_id] = (process.pid, uid)
            try:
                async with anyio.create_task_group() as tg:
                    assert process.stdout is not None and process.stderr is not None
                    tg.start_soon(out.pump, process.stdout)
                    tg.start_soon(err.pump, process.stderr)
                    tg.start_soon(feed, process, stdin.encode())
                    with anyio.move_on_after(cfg.wall_seconds) as deadline:
                        await process.wait()
                    timed_out = deadline.cancelled_caught
                    await anyio.to_thread.run_sync(kill_everything, process.pid, uid)
                    with anyio.move_on_after(5):
                        await process.wait()
                    # a process that escaped the kill may still hold a pipe open: stop reading then
                    with anyio.move_on_after(2):
                        await out.done.wait()
                        await err.done.wait()
                    tg.cancel_scope.cancel()
                returncode = process.returncode
            finally:
                self._active.pop(run_id, None)
                with anyio.CancelScope(shield=True):
                    kill_everything(process.pid, uid)
                    await process.aclose()
        finally:
            with anyio.CancelScope(shield=True):
                duration = round((time.monotonic() - started) * 1000, 3)
                if uid is not None:
                    await anyio.to_thread.run_sync(kill_uid, uid)
                    if not readonly:  # a read-only mount table left nothing to sweep
                        outside = await anyio.to_thread.run_sync(sweep_outside, uid, folder)
                produced = await self._collect(folder, inputs, hidden, uid, run_id)
        return self._result(
            run_id, returncode, timed_out, out, err, duration, produced, outside, isolate, readonly, uid, quota,
            pid_namespace, unix_filtered,
        )  # fmt: skip

    def kill_all(self) -> int:
        """Kill every run in flight (the environment stops); each returns ``reason = "killed"``."""
        active = list(self._active.items())
        for run_id, (pid, uid) in active:
            self._stopped.add(run_id)
            kill_everything(pid, uid)
        return len(active)

    # ----------------------------------------------------------------------------- internals

    def _write_inputs(self, folder: Path, files: Mapping[str, str]) -> dict[str, str]:
        (folder / "tmp").mkdir()
        hashes: dict[str, str] = {}
        for name, text in files.items():
            target = (folder / name).resolve()
            if not target.is_relative_to(folder.resolve()) or Path(name).is_absolute():
                raise keel.ActionInputError(
                    f"keel-sandbox: input file {name!r} must be a relative path inside the folder"
                )
            target.parent.mkdir(parents=True, exist_ok=True)
            data = text.encode()
            try:
                target.write_bytes(data)
            except OSError as err:
                raise keel.ActionInputError(
                    f"keel-sandbox: input file {name!r} could not be written ({err.strerror}); the run folder "
                    f"holds at most disk_mb = {self.config.disk_mb} MB and max_inodes = {self.config.max_inodes}"
                ) from err
            hashes[target.relative_to(folder.resolve()).as_posix()] = hashlib.sha256(data).hexdigest()
        return hashes

    def _launcher_config(
        self,
        folder: Path,
        uid: int | None,
        isolate: bool,
        readonly: bool,
        argv: list[str],
        memory_via: Literal["as", "data"],
    ) -> dict[str, Any]:
        """What the launcher applies before exec (it reads this from a descriptor, never argv)."""
        cfg = self.config
        env = {"PATH": MINIMAL_PATH, "HOME": str(folder), "TMPDIR": str(folder / "tmp"), "LANG": "C.UTF-8"}
        env.update({name: os.environ[name] for name in cfg.env if name in os.environ})
        return {
            "isolate_network": isolate,
            "readonly_root": readonly,
            "rlimits": self._rlimits(memory_via, uid),
            "uid": uid,
            "cwd": str(folder),
            "argv": argv,
            "env": env,
            "pid_namespace": readonly and self.capabilities.pid_namespace,
            "deny_unix_sockets": not cfg.network and not cfg.unix_sockets and self.capabilities.unix_filter,
        }

    def _rlimits(self, memory_via: str, uid: int | None) -> dict[str, tuple[int, int]]:
        cfg = self.config
        limits: dict[str, tuple[int, int]] = {
            "RLIMIT_NOFILE": (cfg.max_open_files, cfg.max_open_files),
            "RLIMIT_FSIZE": (cfg.max_file_mb * 1024 * 1024, cfg.max_file_mb * 1024 * 1024),
            "RLIMIT_CORE": (0, 0),
        }
        if cfg.cpu_seconds is not None:
            seconds = max(int(cfg.cpu_seconds + 0.999), 1)
            limits["RLIMIT_CPU"] = (seconds, seconds + 1)  # SIGXCPU first, SIGKILL a second later
        if cfg.memory_mb is not None:
            size = cfg.memory_mb * 1024 * 1024
            limits["RLIMIT_DATA" if memory_via == "data" else "RLIMIT_AS"] = (size, size)
        # RLIMIT_NPROC counts every process of the user: with a fresh user id that is exactly the
        # run's; otherwise it is what the user already runs plus the run's allowance
        nproc = cfg.max_processes if uid is not None else count_processes(os.getuid()) + cfg.max_processes
        limits["RLIMIT_NPROC"] = (nproc, nproc)
        return limits

    async def _collect(
        self, folder: Path, inputs: dict[str, str], hidden: set[str] | frozenset[str], uid: int | None, run_id: str
    ) -> list[ProducedFile]:
        cfg = self.config
        found: list[ProducedFile] = []
        for path in sorted(folder.rglob("*")):
            if len(found) >= cfg.max_collected_files:
                break
            try:
                info = path.lstat()
            except OSError:
                continue
            # never follow a link the run made, nor read a hard link to someone else's file
            if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1 or (uid is not None and info.st_uid != uid):
                continue
            relative = path.relative_to(folder).as_posix()
            if relative in hidden:
                continue
            data = await anyio.to_thread.run_sync(read_nofollow, path, cfg.max_file_mb * 1024 * 1024)
            if data is None:
                continue
            digest = hashlib.sha256(data).hexdigest()
            if inputs.get(relative) == digest:
                continue  # an input left unchanged is not a product
            item = ProducedFile(path=relative, size=len(data), sha256=digest)
            if self.store is not None:
                item.blob = await self.store.put_blob(cfg.tenant, data)
            if cfg.artifacts_dir is not None:
                target = Path(cfg.artifacts_dir) / run_id / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
                item.saved_to = str(target)
            found.append(item)
        return found

    def _result(
        self,
        run_id: str,
        returncode: int | None,
        timed_out: bool,
        out: _Capped,
        err: _Capped,
        duration: float,
        files: list[ProducedFile],
        outside: list[str],
        isolated: bool,
        readonly: bool,
        uid: int | None,
        quota: bool = False,
        pid_namespace: bool = False,
        unix_filtered: bool = False,
    ) -> RunResult:
        stderr = err.text()
        reason, message, signame = self._verdict(run_id, returncode, timed_out, stderr, duration, quota)
        if out.dropped or err.dropped:
            message += f"; output truncated to {self.config.max_output_bytes} bytes per stream"
        if outside:
            message += f"; {len(outside)} path(s) written outside the run folder were removed"
        notes = self._notes(isolated, readonly, uid, quota, pid_namespace, unix_filtered)
        enforced = {
            "network_isolated": isolated,
            "unix_sockets_covered": readonly,
            "unix_sockets_filtered": unix_filtered,
            "readonly_filesystem": readonly,
            "pid_namespace": pid_namespace,
            "disk_quota": quota,
            "own_user": uid is not None,
            "rlimits": True,
            "process_group_killed": True,
        }
        return RunResult(
            run_id=run_id, ok=reason == "completed" and returncode == 0, exit_code=returncode if signame is None else None,
            signal=signame, reason=reason, message=message, stdout=out.text(), stderr=stderr,
            stdout_truncated=bool(out.dropped), stderr_truncated=bool(err.dropped), duration_ms=duration,
            files=files, outside_writes=outside, enforced=enforced, notes=notes,
        )  # fmt: skip

    def _verdict(
        self, run_id: str, returncode: int | None, timed_out: bool, stderr: str, duration: float, quota: bool
    ) -> tuple[Reason, str, str | None]:
        """Why the run ended, a line saying so, and the signal that ended it (if one did)."""
        cfg = self.config
        signame = None
        if returncode is not None and returncode < 0:
            try:
                signame = signal.Signals(-returncode).name
            except ValueError:
                signame = f"signal {-returncode}"
        reason: Reason = "completed"
        if timed_out:
            reason, message = "timeout", f"killed after the wall-clock limit of {cfg.wall_seconds}s"
        elif run_id in self._stopped:
            self._stopped.discard(run_id)
            reason, message = "killed", "killed because the sandbox was stopped"
        elif signame == "SIGXCPU" or (
            signame == "SIGKILL" and cfg.cpu_seconds is not None and duration / 1000 >= cfg.cpu_seconds
        ):
            reason, message = "cpu", f"killed after the CPU limit of {cfg.cpu_seconds}s"
        elif returncode in (126, 127) and stderr.startswith("keel-sandbox: could not start"):
            reason, message = "start_failed", stderr.strip().splitlines()[0]
        elif cfg.memory_mb is not None and returncode != 0 and looks_out_of_memory(stderr, signame):
            reason, message = "memory", f"ran out of memory under the limit of {cfg.memory_mb} MB"
        elif returncode != 0 and looks_out_of_processes(stderr):
            reason, message = "processes", f"hit the process limit of {cfg.max_processes}"
        elif signame is not None:
            reason, message = "killed", f"killed by {signame}"
        else:
            message = f"exited with code {returncode}"
        if signame == "SIGXFSZ":
            message += f" (a file grew past max_file_mb = {cfg.max_file_mb})"
        if quota and "No space left on device" in stderr:
            message += f" (the run's disk quota is disk_mb = {cfg.disk_mb}, max_inodes = {cfg.max_inodes})"
        return reason, message, signame

    def _notes(
        self, isolated: bool, readonly: bool, uid: int | None, quota: bool, pid_namespace: bool, unix_filtered: bool
    ) -> list[str]:
        """Plain statements of what this run did NOT have enforced."""
        cfg = self.config
        notes = []
        if not cfg.network and not isolated:
            notes.append(
                f"network isolation is NOT enforced on this machine ({self.capabilities.detail or 'no network namespace'})"
            )
        if not readonly and uid is None:
            notes.append(
                "writes outside the run folder are NOT prevented on this machine (no private mount table, no "
                "per-run user id); only cwd, HOME and TMPDIR point into the folder"
            )
        elif not readonly:
            notes.append(
                "the filesystem is NOT read-only outside the run folder: the run's own user id can still write to "
                "world-writable places (/tmp...), which are swept after the run"
            )
        if not quota:
            notes.append(
                "the run's total disk use is NOT limited on this machine (no tmpfs per run: the host is not "
                f"root); only each file is, by max_file_mb = {cfg.max_file_mb}"
            )
        if not cfg.network and not cfg.unix_sockets and not unix_filtered:
            notes.append(
                "Unix sockets are NOT filtered on this machine (no seccomp): a socket file outside /run, /tmp, "
                "/var/tmp and /dev/shm that every user may open stays reachable"
            )
        if not pid_namespace:
            notes.append("the run does NOT have its own PID namespace: it can see the host's processes in /proc")
        return notes
