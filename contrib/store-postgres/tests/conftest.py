"""A PostgreSQL database of the suite's own: created at the start, dropped at the end.

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
from collections.abc import Iterator

import anyio
import pytest

HOST, PORT = "127.0.0.1", 5432
ADMIN_DSN = os.environ.get("KEEL_TEST_POSTGRES_ADMIN_DSN", f"postgresql://postgres@{HOST}:{PORT}/postgres")


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
def pg_dsn() -> Iterator[str]:
    import asyncpg

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
    name = f"keel_test_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(ADMIN_DSN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    anyio.run(admin, f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@{HOST}:{PORT}/{name}"
    finally:
        anyio.run(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
