"""The sandbox's launcher: the first program of every sandboxed run.

It is started as ``python -I -S _launch.py CONFIG_JSON`` (stdlib only, no site-packages), in a
new session, and then, in this order: enters a new network namespace and a private mount table
(all read-only but the working folder) when asked, sets the rlimits,
drops to the run's own user id (when the host runs as root), enters the working folder and execs
the command with exactly the environment it was given. Doing this in a separate program rather
than in ``preexec_fn`` keeps the host process free of fork-and-thread hazards.

``_launch.py --probe UID FOLDER`` reports as JSON what this machine allows.
"""

import ctypes
import json
import os
import resource
import sys
from typing import Any

CLONE_NEWNS = 0x00020000
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


def unshare(network: bool, mounts: bool) -> None:
    """Enter new namespaces: an empty network (a loopback that is down: no connection works)
    and/or a private mount table. An unprivileged user owns them through a user namespace."""
    flags = (CLONE_NEWNET if network else 0) | (CLONE_NEWNS if mounts else 0)
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


def _mount(source: str | None, target: str, flags: int) -> None:
    _call("mount", source and source.encode(), target.encode(), None, ctypes.c_ulong(flags), None)


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


def launch(config: dict[str, Any]) -> None:
    config["executable"] = find(config["argv"][0], config["env"].get("PATH", ""))
    unshare(config["isolate_network"], config["readonly_root"])
    if config["readonly_root"]:
        readonly_except(config["cwd"])
    for name, (soft, hard) in config["rlimits"].items():
        resource.setrlimit(getattr(resource, name), (soft, hard))
    if config["uid"] is not None:
        drop_to(config["uid"])
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


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--probe":
        probe(int(sys.argv[2]), sys.argv[3])
        return
    try:
        launch(json.loads(sys.argv[1]))
    except Exception as err:
        sys.stderr.write(f"keel-sandbox: could not start the command: {err}\n")
        sys.stderr.flush()
        os._exit(127 if isinstance(err, FileNotFoundError) else 126)


main()
