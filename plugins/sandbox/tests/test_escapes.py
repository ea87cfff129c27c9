"""Sandbox escapes tried and refused. Each run ends within its limit with a clear result, and the
host process (this one) is unharmed: it can still fork, allocate and open sockets afterwards."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from keel_sandbox import Sandbox, SandboxConfig, capabilities

CAPS = capabilities()


def sandbox(**limits: object) -> Sandbox:
    base: dict[str, object] = {"wall_seconds": 10.0, "cpu_seconds": 5.0, "memory_mb": 256}
    return Sandbox(SandboxConfig.model_validate({**base, **limits}))


@pytest.fixture(autouse=True)
def host_unharmed() -> Iterator[None]:
    yield
    assert subprocess.run(["true"], timeout=10).returncode == 0, "the host can no longer start processes"
    assert len(bytearray(64 * 1024 * 1024)) == 64 * 1024 * 1024


def no_process_left(uid_hint: str) -> None:
    # every sandboxed process runs under a user id drawn from the sandbox's range
    from keel_sandbox.runner import UID_RANGE

    leftovers = [
        line for line in Path("/proc").glob("[0-9]*/status") if _uid_in_range(line, UID_RANGE)
    ]  # fmt: skip
    assert not leftovers, f"{uid_hint}: sandboxed processes outlived their run: {leftovers}"


def _uid_in_range(status: Path, bounds: tuple[int, int]) -> bool:
    try:
        for line in status.read_text().splitlines():
            if line.startswith("State:") and line.split()[1] in ("Z", "X"):
                return False  # a zombie waits for init to reap it; it runs nothing
            if line.startswith("Uid:"):
                return bounds[0] <= int(line.split()[1]) < bounds[1]
    except OSError:
        return False
    return False


@pytest.mark.parametrize("readonly", [True, False], ids=["read-only-mounts", "own-user-only"])
async def test_writing_outside_the_folder_is_refused_or_undone(tmp_path: Path, readonly: bool) -> None:
    private = tmp_path / "host-private"
    private.mkdir(mode=0o700)
    shared = Path("/tmp") / f"keel-escape-{os.getpid()}-{time.time_ns()}"
    code = f"""
import pathlib
for target in [{str(private / "stolen.txt")!r}, {str(shared)!r}, "/etc/keel-escape"]:
    try:
        pathlib.Path(target).write_text("escaped")
        print("WROTE", target)
    except OSError as err:
        print("REFUSED", target, type(err).__name__, err.errno)
pathlib.Path("inside.txt").write_text("fine")
"""
    result = await sandbox(readonly_filesystem=readonly).run_script("python", code)
    assert result.ok, result
    assert [f.path for f in result.files] == ["inside.txt"], "writing inside the folder works"
    assert not (private / "stolen.txt").exists() and not Path("/etc/keel-escape").exists()
    assert not shared.exists()
    if readonly and result.enforced["readonly_filesystem"]:
        assert result.stdout.count("REFUSED") == 3, result.stdout
        assert f"REFUSED {shared} OSError 30" in result.stdout  # EROFS: read-only file system
        assert result.outside_writes == []
    elif result.enforced["own_user"]:
        assert f"REFUSED {private / 'stolen.txt'} PermissionError" in result.stdout
        assert "REFUSED /etc/keel-escape PermissionError" in result.stdout
        # /tmp is world-writable: the write happens, is found after the run, reported and removed
        assert f"WROTE {shared}" in result.stdout and result.outside_writes == [str(shared)]
        assert "outside the run folder were removed" in result.message
        assert any("NOT read-only" in note for note in result.notes)
    else:
        assert any("NOT prevented" in note for note in result.notes)
        pytest.skip("writes outside the folder are not prevented on this machine: " + "; ".join(result.notes))


async def test_undeclared_secret_is_not_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEL_TEST_SECRET", "s3cr3t-value")
    monkeypatch.setenv("KEEL_TEST_DECLARED", "visible-value")
    code = "import os; print(sorted(os.environ)); print(os.environ.get('KEEL_TEST_SECRET')); print(os.environ['KEEL_TEST_DECLARED'])"
    result = await sandbox(env=["KEEL_TEST_DECLARED"]).run_script("python", code)
    assert result.ok, result
    assert "s3cr3t-value" not in result.stdout and "KEEL_TEST_SECRET" not in result.stdout
    assert "visible-value" in result.stdout
    names = eval(result.stdout.splitlines()[0])
    assert names == ["HOME", "KEEL_TEST_DECLARED", "LANG", "PATH", "TMPDIR"]
    # nor through /proc: the host process belongs to another user
    peek = await sandbox().run_script("python", f"print(open('/proc/{os.getpid()}/environ').read())")
    assert "s3cr3t-value" not in peek.stdout
    if peek.enforced["pid_namespace"]:
        assert "FileNotFoundError" in peek.stderr, "the host's processes are not even visible"
    elif peek.enforced["own_user"]:
        assert "PermissionError" in peek.stderr


async def test_fork_bomb_is_contained() -> None:
    with anyio.fail_after(3.0 + 15):  # the wall limit ends it: a hang here is the failure
        result = await sandbox(wall_seconds=3.0, max_processes=20).run_script("shell", "b() { b | b & }; b; sleep 60")
    assert not result.ok and result.reason in ("timeout", "processes"), result
    no_process_left("fork bomb")


async def test_memory_hog_is_stopped() -> None:
    result = await sandbox(memory_mb=128).run_script(
        "python", "hog = bytearray(1024 * 1024 * 1024)\nprint('allocated')"
    )
    assert not result.ok and result.reason == "memory", result
    assert "allocated" not in result.stdout and "MemoryError" in result.stderr
    assert "memory" in result.message and "128 MB" in result.message


async def test_busy_infinite_loop_hits_the_cpu_limit() -> None:
    result = await sandbox(cpu_seconds=1, wall_seconds=15).run_script("python", "while True:\n    pass")
    assert not result.ok and result.reason == "cpu" and result.signal in ("SIGXCPU", "SIGKILL"), result


async def test_sleeping_infinite_loop_hits_the_wall_clock() -> None:
    code = "import subprocess, time\nsubprocess.Popen(['sleep', '600'], start_new_session=True)\nprint('started')\nwhile True:\n    time.sleep(1)"
    with anyio.fail_after(1.5 + 10):  # the wall limit ends it: a hang here is the failure
        result = await sandbox(wall_seconds=1.5).run_script("python", code)
    assert not result.ok and result.reason == "timeout" and "wall-clock" in result.message, result
    assert result.stdout == "started\n", "what a killed run printed is kept"
    if result.enforced["own_user"]:
        no_process_left("a child in its own session")


async def test_no_network_connection_when_network_is_off() -> None:
    accepted: list[object] = []
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(0.2)
        port = server.getsockname()[1]
        stop = threading.Event()

        def accept() -> None:
            while not stop.is_set():
                try:
                    accepted.append(server.accept())
                except OSError:
                    continue

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        code = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=3)\nprint('CONNECTED')"
        try:
            closed = await sandbox(network=False).run_script("python", code)
            opened = await sandbox(network=True).run_script("python", code)
        finally:
            stop.set()
            thread.join(5)
    assert opened.ok and "CONNECTED" in opened.stdout, "the control run (network allowed) must connect"
    if not CAPS.network_isolation:
        assert any("network isolation is NOT enforced" in n for n in closed.notes)
        pytest.skip("network isolation is not available on this machine: " + CAPS.detail)
    assert not closed.ok and "CONNECTED" not in closed.stdout
    assert "OSError" in closed.stderr or "unreachable" in closed.stderr.lower(), closed.stderr
    assert closed.enforced["network_isolated"] and not closed.notes
    assert len(accepted) == 1, "only the control run reached the listener"


async def test_printing_100_mb_is_capped() -> None:
    code = "import sys\nchunk = b'x' * 1024 * 1024\nfor _ in range(100):\n    sys.stdout.buffer.write(chunk)\nprint('done', file=sys.stderr)"
    result = await sandbox(max_output_bytes=64 * 1024, wall_seconds=30).run_script("python", code)
    assert result.reason == "completed" and result.exit_code == 0, result
    assert result.stdout_truncated and not result.stderr_truncated
    assert result.stdout.startswith("x" * 1000)
    assert "output truncated by keel-sandbox" in result.stdout
    assert f"{100 * 1024 * 1024 - 64 * 1024} more bytes" in result.stdout
    assert len(result.stdout) < 64 * 1024 + 200
    assert result.stderr == "done\n"
