"""The machine's PostgreSQL for tests: a server that answers, a database or a schema of the test's own.

Integration tests run against a real server (127.0.0.1:5432, trust auth). :func:`local_postgres`
makes sure it answers (starting the installed cluster once if it does not) and otherwise FAILS the
test, never skips it; :func:`temporary_database` and :func:`temporary_schema` give a test a place of
its own and drop it afterwards. They need ``asyncpg`` (a PostgreSQL backend's own dependency).

Example (a ``conftest.py``)::

    from keel.testing.postgres import local_postgres, temporary_database

    @pytest.fixture(scope="session")
    def pg_dsn():
        with temporary_database(local_postgres()) as dsn:
            yield dsn
"""

from __future__ import annotations

import contextlib
import glob
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator

__all__ = ["HOST", "PORT", "local_postgres", "temporary_database", "temporary_schema"]

HOST, PORT = "127.0.0.1", 5432


def _answering(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
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


def local_postgres(host: str = HOST, port: int = PORT, *, wait: float = 30.0) -> str:
    """The admin DSN (database ``postgres``, or ``KEEL_TEST_POSTGRES_ADMIN_DSN``) of a server that
    answers. If none answers, the installed cluster is started once and given ``wait`` seconds;
    then the calling test fails (``pytest.fail``), naming what was tried."""
    if not _answering(host, port):
        note = _start_server()
        deadline = time.monotonic() + wait
        while not _answering(host, port):
            if time.monotonic() > deadline:
                import pytest

                pytest.fail(
                    f"PostgreSQL is not answering on {host}:{port}, and starting it failed ({note}). "
                    "These tests need the machine's PostgreSQL server (trust auth)."
                )
            time.sleep(0.5)
    return os.environ.get("KEEL_TEST_POSTGRES_ADMIN_DSN", f"postgresql://postgres@{host}:{port}/postgres")


def _execute(dsn: str, sql: str) -> None:
    import anyio
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    anyio.run(run)


@contextlib.contextmanager
def temporary_database(admin_dsn: str, prefix: str = "keel_test") -> Iterator[str]:
    """A new database on ``admin_dsn``'s server: its DSN, dropped (connections closed) afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    _execute(admin_dsn, f'CREATE DATABASE "{name}"')
    try:
        yield f"{admin_dsn.rsplit('/', 1)[0]}/{name}"
    finally:
        _execute(admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def temporary_schema(dsn: str, prefix: str = "keel_t") -> Iterator[str]:
    """A fresh schema name in ``dsn``'s database (whoever uses it creates it), dropped with
    everything in it afterwards."""
    schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        yield schema
    finally:
        _execute(dsn, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
