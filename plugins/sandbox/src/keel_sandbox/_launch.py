"""The sandbox's launcher: the first program of every sandboxed run.

It is started as ``python -I -S _launch.py --config-fd N`` (stdlib only, no site-packages), in a
new session. Its configuration, secrets included, arrives on that file descriptor (a memfd or a
pipe), never on the command line, where any process could read it from ``/proc/*/cmdline``.

Then, in this order: it enters a new network namespace, a private mount table and a new PID
namespace when asked. In the mount table every mount but the run folder is read-only, and empty
read-only filesystems cover ``/run`` (``/var/run``), ``/tmp``, ``/var/tmp`` and ``/dev/shm``,
where the Unix sockets of local services live (PostgreSQL's, MySQL's, Docker's); the run folder
stays reachable at its own path. In the PID namespace the first process is a small init that
mounts a fresh ``/proc`` (so the run sees only its own processes), reaps orphans and reports the
command's wait status back; when it ends, the kernel kills whatever the run left behind. The
command's own process sets the rlimits, drops to the run's own user id (when the host runs as
root), enters the working folder and execs with exactly the environment it was given. Doing
this in a separate program rather than in ``preexec_fn`` keeps the host process free of
fork-and-thread hazards.

``_launch.py --probe UID FOLDER`` reports as JSON what this machine allows.
"""

import ctypes
import json
import os
import resource
import signal
import sys
from typing import Any

CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC = 1024, 2048, 4096, 16384
MS_PRIVATE, MS_RELATIME, MS_STRICTATIME = 1 << 18, 1 << 21, 1 << 24
KEPT_FLAGS = {
    "nosuid": MS_NOSUID,
    "nodev": MS_NODEV,
    "noexec": MS_NOEXEC,
    "noatime": MS_NOATIME,
    "nodiratime": MS_NODIRATIME,
    "relatime": MS_RELATIME,
    "strictatime": MS_STRICTATIME,
}

_libc: Any = None


def _call(name: str, *args: object) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if getattr(_libc, name)(*args) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, name + ": " + os.strerror(errno))


def _write(path: str, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)


def unshare(network: bool, mounts: bool, pids: bool = False) -> None:
    """Enter new namespaces: an empty network (a loopback that is down: no connection works),
    a private mount table and/or a PID namespace (for the children forked after this). An
    unprivileged user owns them through a user namespace."""
    flags = (CLONE_NEWNET if network else 0) | (CLONE_NEWNS if mounts else 0) | (CLONE_NEWPID if pids else 0)
    if not flags:
        return
    if os.geteuid() == 0:
        _call("unshare", flags)
        return
    uid, gid = os.getuid(), os.getgid()
    _call("unshare", CLONE_NEWUSER | flags)
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"{uid} {uid} 1")
    _write("/proc/self/gid_map", f"{gid} {gid} 1")


def _mount(source: str | None, target: str, flags: int, fstype: str | None = None, data: str | None = None) -> None:
    _call(
        "mount", source and source.encode(), target.encode(), fstype and fstype.encode(), ctypes.c_ulong(flags),
        data and data.encode(),
    )  # fmt: skip


#: where local services keep their Unix sockets (and runs could leave things for each other)
COVERED = ("/run", "/var/run", "/tmp", "/var/tmp", "/dev/shm")


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def cover_shared(folder: str) -> None:
    """Mount an empty read-only filesystem over each of ``COVERED``, keeping the run folder
    reachable at its own path when it lies under one of them."""
    handle = os.open(folder, os.O_PATH | os.O_DIRECTORY)
    done: set[str] = set()
    for place in COVERED:
        real = os.path.realpath(place)
        if real in done or not os.path.isdir(real) or _inside(real, folder):
            continue
        done.add(real)
        _mount("tmpfs", real, MS_NOSUID | MS_NODEV | MS_NOEXEC, "tmpfs", "size=64k,nr_inodes=64,mode=0755")
        if _inside(folder, real):
            os.makedirs(folder, mode=0o755, exist_ok=True)
            _mount(f"/proc/self/fd/{handle}", folder, MS_BIND | MS_REC)
        _mount(None, real, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    os.close(handle)


def mount_proc() -> None:
    """A fresh ``/proc`` for the new PID namespace: the run's own processes only."""
    _mount("proc", "/proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "proc")


def _mount_points() -> list[tuple[str, list[str]]]:
    found = []
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            fields = line.split()
            point = fields[4].encode().decode("unicode_escape")  # "\040" is a space
            found.append((point, fields[5].split(",")))
    return found


def readonly_except(folder: str) -> None:
    """In the private mount table: every mount read-only, but the folder (bound onto itself)."""
    _mount(None, "/", MS_REC | MS_PRIVATE)
    _mount(folder, folder, MS_BIND | MS_REC)
    for point, options in _mount_points():
        if point == folder or point.startswith(folder.rstrip("/") + "/"):
            continue
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY
        for option in options:
            flags |= KEPT_FLAGS.get(option, 0)
        try:
            _mount(None, point, flags)
        except OSError as err:
            if err.errno != 2:  # a mount point hidden under another mount cannot be reached: fine
                raise


#: per machine: (AUDIT_ARCH_*, the socket(2) syscall number)
SECCOMP_ARCH = {"x86_64": (0xC000003E, 41), "aarch64": (0xC00000B7, 198)}


def deny_unix_sockets() -> None:
    """A seccomp filter: ``socket(AF_UNIX, ...)`` fails with EACCES, for this process and every
    child (``socketpair`` stays allowed: pipes between a run's own processes need it). A system
    call of another ABI (32-bit, x32) fails with EPERM, so the filter cannot be gone around."""
    machine = os.uname().machine
    if machine not in SECCOMP_ARCH:
        raise OSError(95, f"no seccomp filter for {machine}")
    arch, socket_nr = SECCOMP_ARCH[machine]
    ld, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06
    allow, errno_ret = 0x7FFF0000, 0x00050000
    program = [
        (ld, 0, 0, 4),  # arch
        (jeq, 1, 0, arch),
        (ret, 0, 0, errno_ret | 1),  # another ABI: EPERM
        (ld, 0, 0, 0),  # syscall number
        (jge, 4, 0, 0x40000000),  # x32: EACCES
        (jeq, 0, 2, socket_nr),
        (ld, 0, 0, 16),  # low half of the first argument: the address family
        (jeq, 1, 0, 1),  # AF_UNIX
        (ret, 0, 0, allow),
        (ret, 0, 0, errno_ret | 13),  # EACCES
    ]

    class Filter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]

    class Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Filter))]

    filters = (Filter * len(program))(*[Filter(*row) for row in program])
    prog = Program(len(program), filters)
    _call("prctl", 38, ctypes.c_ulong(1), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))  # NO_NEW_PRIVS
    _call("prctl", 22, ctypes.c_ulong(2), ctypes.byref(prog), ctypes.c_ulong(0), ctypes.c_ulong(0))  # SECCOMP filter


def drop_to(uid: int) -> None:
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)


def probe(uid: int, folder: str) -> None:
    found: dict[str, Any] = {"euid": os.geteuid()}
    for key, network, mounts in (("netns", True, False), ("mountns", False, True)):
        pid = os.fork()
        if pid == 0:
            try:
                unshare(network, mounts)
                if mounts:
                    readonly_except(folder)
                    cover_shared(folder)
                    if os.listdir("/tmp") and not _inside(folder, "/tmp"):
                        os._exit(4)  # /tmp was not covered
                    with open(os.path.join(folder, "probe"), "w"):
                        pass
                    outside = os.path.join(os.path.dirname(folder), f"keel-sandbox-probe-{os.getpid()}")
                    try:
                        open(outside, "w").close()
                    except OSError:
                        os._exit(0)
                    os.unlink(outside)
                    os._exit(3)  # the mounts were not made read-only
                os._exit(0)
            except BaseException as err:
                sys.stderr.write(f"{key}: {err}\n")
                os._exit(1)
        found[key] = os.waitpid(pid, 0)[1] == 0
    found["pidns"] = found["mountns"] and _probe_pidns(folder)
    found["unix_filter"] = _probe_unix_filter()
    found["tmpfs_quota"] = _probe_tmpfs(folder)
    if os.geteuid() == 0:
        try:
            drop_to(uid)
            found["setuid"] = os.getuid() == uid
        except OSError as err:
            found["setuid"] = False
            sys.stderr.write(f"setuid: {err}\n")
    else:
        found["setuid"] = False
    sys.stdout.write(json.dumps(found))


def _probe_pidns(folder: str) -> bool:
    pid = os.fork()
    if pid == 0:
        try:
            unshare(False, True, True)
            child = os.fork()
            if child == 0:
                try:
                    readonly_except(folder)
                    mount_proc()
                    os._exit(0 if os.getpid() == 1 and os.path.exists("/proc/1/status") else 3)
                except BaseException as err:
                    sys.stderr.write(f"pidns: {err}\n")
                    os._exit(1)
            os._exit(os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]))
        except BaseException as err:
            sys.stderr.write(f"pidns: {err}\n")
            os._exit(1)
    return os.waitpid(pid, 0)[1] == 0


def _probe_unix_filter() -> bool:
    import socket

    pid = os.fork()
    if pid == 0:
        try:
            deny_unix_sockets()
            try:
                socket.socket(socket.AF_UNIX).close()
            except PermissionError:
                socket.socketpair()[0].close()
                socket.socket(socket.AF_INET).close()
                os._exit(0)
            os._exit(3)
        except BaseException as err:
            sys.stderr.write(f"seccomp: {err}\n")
            os._exit(1)
    return os.waitpid(pid, 0)[1] == 0


def _probe_tmpfs(folder: str) -> bool:
    """Whether this (host) process may mount a sized tmpfs: the per-run disk quota."""
    target = os.path.join(folder, "quota")
    os.mkdir(target)
    try:
        _mount("tmpfs", target, MS_NOSUID | MS_NODEV, "tmpfs", "size=1m,nr_inodes=16,mode=0700")
    except OSError as err:
        sys.stderr.write(f"tmpfs: {err}\n")
        return False
    _call("umount2", target.encode(), 2)
    return True


def launch(config: dict[str, Any]) -> None:
    config["executable"] = find(config["argv"][0], config["env"].get("PATH", ""))
    pids = bool(config.get("pid_namespace")) and config["readonly_root"]
    unshare(config["isolate_network"], config["readonly_root"], pids)
    if config["readonly_root"]:
        readonly_except(config["cwd"])
        cover_shared(config["cwd"])
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if not pids:
        start(config)
    report_r, report_w = os.pipe()
    init = os.fork()
    if init == 0:  # PID 1 of the run's namespace
        os.close(report_r)
        run_init(config, report_w)
    os.close(report_w)
    with os.fdopen(report_r) as report:
        text = report.read().strip()
    os.waitpid(init, 0)
    relay(int(text) if text.isdigit() else None)


def run_init(config: dict[str, Any], report: int) -> None:
    """PID 1 of the run: a fresh /proc, the command as its child, every orphan reaped; the
    command's wait status goes back to the launcher over ``report``."""
    try:
        mount_proc()
        command = os.fork()
        if command == 0:
            os.close(report)
            start(config)
        while True:
            pid, status = os.waitpid(-1, 0)
            if pid == command:
                os.write(report, str(status).encode())
                os._exit(0)  # the kernel then kills every process left in the namespace
    except BaseException as err:
        sys.stderr.write(f"keel-sandbox: could not start the command: {err}\n")
        sys.stderr.flush()
        os._exit(126)


def relay(status: int | None) -> None:
    """End this launcher the way the command ended: its exit code, or its signal."""
    if status is None:
        os._exit(126)
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        signal.signal(number, signal.SIG_DFL)
        os.kill(os.getpid(), number)
        os._exit(128 + number)  # a signal this process cannot die of (SIGSTOP...)
    os._exit(os.waitstatus_to_exitcode(status))


def start(config: dict[str, Any]) -> None:
    """The command's own process: limits, user id, folder, exec."""
    for name, (soft, hard) in config["rlimits"].items():
        resource.setrlimit(getattr(resource, name), (soft, hard))
    if config["uid"] is not None:
        drop_to(config["uid"])
    if config.get("deny_unix_sockets"):
        deny_unix_sockets()
    os.umask(0o077)
    os.chdir(config["cwd"])
    argv = config["argv"]
    os.execve(config["executable"], argv, config["env"])


def find(name: str, path: str) -> str:
    """The program's path on the sandbox's PATH, found before the user id changes (after it, the
    host's interpreter may not be able to import anything)."""
    if "/" in name:
        return name
    for folder in path.split(":"):
        candidate = os.path.join(folder, name)
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(2, f"{name!r} is not on the sandbox PATH {path}")


def read_config(fd: int) -> dict[str, Any]:
    """The configuration, from the descriptor the host passed (then closed: the command never sees it)."""
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    config: dict[str, Any] = json.loads(b"".join(chunks))
    return config


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--probe":
        probe(int(sys.argv[2]), sys.argv[3])
        return
    try:
        if len(sys.argv) != 3 or sys.argv[1] != "--config-fd":
            raise ValueError("usage: _launch.py --config-fd N (the configuration is never on the command line)")
        launch(read_config(int(sys.argv[2])))
    except Exception as err:
        sys.stderr.write(f"keel-sandbox: could not start the command: {err}\n")
        sys.stderr.flush()
        os._exit(127 if isinstance(err, FileNotFoundError) else 126)


main()
