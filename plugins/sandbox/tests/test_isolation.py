"""What a run cannot reach: local services' Unix sockets, other runs' processes and secrets, and
more disk than its quota. Each test has a control showing the thing it hides is really there."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from keel_sandbox import Sandbox, SandboxConfig, capabilities

CAPS = capabilities()
PG_SOCKET = Path("/var/run/postgresql/.s.PGSQL.5432")

CONNECT = """
import socket, sys
for path in sys.argv[1:] if len(sys.argv) > 1 else open("targets").read().split():
    try:
        s = socket.socket(socket.AF_UNIX)
        s.connect(path.replace("@", "\\0", 1) if path.startswith("@") else path)
        print("CONNECTED", path)
    except OSError as err:
        print("REFUSED", path, type(err).__name__)
"""


def sandbox(**options: object) -> Sandbox:
    base: dict[str, object] = {"wall_seconds": 20.0, "cpu_seconds": 10.0, "memory_mb": 256}
    return Sandbox(SandboxConfig.model_validate({**base, **options}))


@pytest.fixture
def listeners() -> Iterator[list[str]]:
    """Unix sockets the host listens on where local services keep theirs: /run, /tmp, and the
    abstract namespace."""
    paths = [f"/run/keel-test-{os.getpid()}.sock", f"/tmp/keel-test-{os.getpid()}.sock", f"@keel-test-{os.getpid()}"]
    servers = []
    for path in paths:
        server = socket.socket(socket.AF_UNIX)
        server.bind(path.replace("@", "\0", 1) if path.startswith("@") else path)
        if not path.startswith("@"):
            os.chmod(path, 0o777)  # as PostgreSQL's: anyone may connect
        server.listen(8)
        servers.append(server)
    stop = threading.Event()

    def accept(server: socket.socket) -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                server.accept()[0].close()
            except OSError:
                continue

    threads = [threading.Thread(target=accept, args=(s,), daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    yield paths
    stop.set()
    for thread in threads:
        thread.join(timeout=5)
    for server, path in zip(servers, paths, strict=True):
        server.close()
        if not path.startswith("@"):
            os.unlink(path)


def _host_connects(path: str) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(path.replace("@", "\0", 1) if path.startswith("@") else path)
            return True
        except OSError:
            return False


@pytest.mark.skipif(not CAPS.readonly_filesystem, reason="no private mount table on this machine")
async def test_network_off_closes_unix_sockets_of_local_services(listeners: list[str]) -> None:
    targets = list(listeners)
    if PG_SOCKET.exists():
        targets.append(str(PG_SOCKET))  # the real PostgreSQL, trust auth: the superuser if reachable
    assert all(_host_connects(t) for t in targets), "control: the host itself reaches every socket"
    with anyio.fail_after(60):
        result = await sandbox(network=False).run_script("python", CONNECT, files={"targets": "\n".join(targets)})
    assert result.ok, result
    assert "CONNECTED" not in result.stdout, result.stdout
    assert result.stdout.count("REFUSED") == len(targets)
    assert result.enforced["unix_sockets_covered"] and result.enforced["network_isolated"]


@pytest.mark.skipif(not CAPS.readonly_filesystem, reason="no private mount table on this machine")
async def test_the_run_folder_stays_usable_under_the_covers() -> None:
    code = (
        "import os, socket, tempfile\n"
        "s = socket.socket(socket.AF_UNIX); s.bind('own.sock'); s.listen(1)\n"
        "c = socket.socket(socket.AF_UNIX); c.connect('own.sock'); print('OWN OK')\n"
        "open(os.path.join(tempfile.gettempdir(), 'scratch'), 'w').write('x'); print('TMPDIR OK')\n"
        "print(sorted(os.listdir('/tmp')) == [os.getcwd().split('/')[2]] or os.listdir('/tmp'))\n"
    )
    result = await sandbox(unix_sockets=True).run_script("python", code)
    assert result.ok, result
    assert "OWN OK" in result.stdout and "TMPDIR OK" in result.stdout
    assert result.stdout.splitlines()[-1] == "True", "the host's /tmp shows nothing but the run's own folder"


@pytest.mark.skipif(not CAPS.pid_namespace, reason="no PID namespace on this machine")
async def test_secrets_are_never_on_a_command_line_and_runs_do_not_see_each_other(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = f"tok-{os.getpid()}-s3cr3t"
    monkeypatch.setenv("KEEL_TEST_TOKEN", secret)
    holder = "import time, os; print(os.getpid()); time.sleep(3)"
    snoop = (
        "import os\n"
        "pids = [p for p in os.listdir('/proc') if p.isdigit()]\n"
        "seen = [open(f'/proc/{p}/cmdline', 'rb').read() for p in pids]\n"
        f"print(len(pids), any(b'{secret}' in s for s in seen))\n"
    )
    found_on_host: list[tuple[bool, bool]] = []

    async def scan_host() -> None:
        # wait (bounded) until the holder's launcher runs, then read every command line on the machine
        with anyio.fail_after(20):
            while True:
                lines = []
                for entry in Path("/proc").glob("[0-9]*/cmdline"):
                    try:
                        lines.append(entry.read_bytes())
                    except OSError:
                        continue
                launcher = any(b"_launch.py" in line and b"--config-fd" in line for line in lines)
                if launcher:
                    found_on_host.append((launcher, any(secret.encode() in line for line in lines)))
                    return
                await anyio.sleep(0.02)

    results = {}

    async def run(name: str, code: str, env: list[str]) -> None:
        results[name] = await sandbox(env=env).run_script("python", code)

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run, "holder", holder, ["KEEL_TEST_TOKEN"])
            await scan_host()
            tg.start_soon(run, "snoop", snoop, [])
    assert results["holder"].ok, results["holder"]
    assert found_on_host == [(True, False)], "the launcher ran, and the secret is on no command line"
    count, hit = results["snoop"].stdout.split()
    assert hit == "False" and int(count) <= 3, "a run sees only its own few processes"
    assert results["snoop"].enforced["pid_namespace"]


@pytest.mark.skipif(not CAPS.disk_quota, reason="no tmpfs per run on this machine (the host is not root)")
async def test_the_total_disk_a_run_writes_is_capped() -> None:
    code = (
        "import os\n"
        "written = 0\n"
        "try:\n"
        "    for i in range(64):\n"
        "        with open(f'blob{i}', 'wb') as f: f.write(b'x' * (1 << 20))\n"
        "        written += 1\n"
        "except OSError as err:\n"
        "    print('STOPPED', written, err.strerror); raise\n"
    )
    result = await sandbox(disk_mb=8, max_file_mb=64, max_collected_files=0).run_script("python", code)
    assert not result.ok and "STOPPED" in result.stdout
    assert int(result.stdout.split()[1]) < 8, "at most disk_mb megabytes, across all files"
    assert "disk_mb = 8" in result.message and result.enforced["disk_quota"]


@pytest.mark.skipif(not CAPS.disk_quota, reason="no tmpfs per run on this machine (the host is not root)")
async def test_the_number_of_files_a_run_creates_is_capped() -> None:
    code = "import os\nfor i in range(5000):\n    open(f'f{i}', 'w').close()\n"
    result = await sandbox(max_inodes=200, max_collected_files=0).run_script("python", code)
    assert not result.ok and "No space left on device" in result.stderr
    assert "max_inodes = 200" in result.message


@pytest.mark.skipif(not CAPS.unix_filter, reason="no seccomp filter on this machine")
async def test_a_unix_socket_outside_the_covered_folders_is_refused_by_the_filter() -> None:
    folder = Path("/var/lib") / f"keel-sock-test-{os.getpid()}"
    try:
        folder.mkdir(mode=0o755)
    except OSError as err:
        pytest.skip(f"cannot make a folder outside /run and /tmp: {err}")
    path = str(folder / "service.sock")
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(path)
        os.chmod(path, 0o777)  # a careless service: every user may connect
        server.listen(8)
        with anyio.fail_after(60):
            filtered = await sandbox(network=False).run_script("python", CONNECT, files={"targets": path})
            allowed = await sandbox(network=False, unix_sockets=True).run_script(
                "python", CONNECT, files={"targets": path}
            )
    finally:
        server.close()
        os.unlink(path)
        folder.rmdir()
    assert "CONNECTED" in allowed.stdout, "control: without the filter the socket is reachable"
    assert "REFUSED" in filtered.stdout and "PermissionError" in filtered.stdout, filtered
    assert filtered.enforced["unix_sockets_filtered"] and not allowed.enforced["unix_sockets_filtered"]
