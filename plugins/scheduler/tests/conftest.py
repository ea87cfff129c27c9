"""The two backends every queue test runs on: a SQLite file, and a schema of its own in the machine's
PostgreSQL database ``test`` (created per test, dropped after).

The server is the machine's (127.0.0.1:5432, trust auth). If it is not answering, the fixture runs
the documented start command once; if it still does not answer, the suite FAILS (never skips).
"""

from __future__ import annotations

import glob
import os
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import anyio
import pytest

from keel_scheduler import Queue, open_database

HOST, PORT = "127.0.0.1", 5432
PG_DSN = os.environ.get("KEEL_TEST_POSTGRES_DSN", f"postgresql://postgres@{HOST}:{PORT}/test")


def _answering() -> bool:
    try:
        with socket.create_connection((HOST, PORT), timeout=1):
            return True
    except OSError:
        return False


def _start_server() -> str:
    versions = [os.path.basename(p) for p in glob.glob("/etc/postgresql/*")]
    if not versions:
        return "no cluster under /etc/postgresql"
    command = ["pg_ctlcluster", "--skip-systemctl-redirect", sorted(versions)[-1], "main", "start"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"{' '.join(command)}: {err}"
    return f"{' '.join(command)} exited {done.returncode}: {done.stderr.strip()}"


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    if not _answering():
        note = _start_server()
        for _ in range(60):
            if _answering():
                break
            time.sleep(0.5)
        else:
            pytest.fail(
                f"PostgreSQL is not answering on {HOST}:{PORT}, and starting it failed ({note}). "
                "These tests need the machine's PostgreSQL server (trust auth)."
            )
    return PG_DSN


@dataclass
class Backend:
    """How to reach one test's database: ``url`` and ``schema`` for Queue(...) in any process."""

    kind: str
    url: str
    schema: str | None

    def queue(self) -> Queue:
        return Queue(open_database(self.url, schema=self.schema))


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path) -> Iterator[Backend]:
    if request.param == "sqlite":
        yield Backend("sqlite", str(tmp_path / "scheduler.db"), None)
        return
    dsn = request.getfixturevalue("pg_dsn")
    schema = f"keel_t_{uuid.uuid4().hex[:10]}"
    yield Backend("postgres", dsn, schema)

    async def drop() -> None:
        import asyncpg

        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await conn.close()

    anyio.run(drop)


@pytest.fixture
async def queue(backend: Backend) -> AsyncIterator[Queue]:
    q = backend.queue()
    try:
        yield q
    finally:
        await q.aclose()
