"""The two backends every queue test runs on: a SQLite file, and a schema of its own in the machine's
PostgreSQL database ``test`` (created per test, dropped after).

The server is the machine's (127.0.0.1:5432, trust auth). If it is not answering, the fixture runs
the documented start command once; if it still does not answer, the suite FAILS (never skips).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest

from keel.testing.postgres import HOST, PORT, local_postgres, temporary_schema
from keel_scheduler import Queue, open_database

PG_DSN = os.environ.get("KEEL_TEST_POSTGRES_DSN", f"postgresql://postgres@{HOST}:{PORT}/test")


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    local_postgres()  # fails the test, never skips it, when the server cannot be made to answer
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
    with temporary_schema(dsn) as schema:
        yield Backend("postgres", dsn, schema)


@pytest.fixture
async def queue(backend: Backend) -> AsyncIterator[Queue]:
    q = backend.queue()
    try:
        yield q
    finally:
        await q.aclose()
