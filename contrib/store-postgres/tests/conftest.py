"""A PostgreSQL database of the suite's own on the machine's server: created at the start, dropped
at the end; the suite FAILS (never skips) when the server cannot be made to answer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from keel.testing.postgres import local_postgres, temporary_database


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    with temporary_database(local_postgres()) as dsn:
        yield dsn
