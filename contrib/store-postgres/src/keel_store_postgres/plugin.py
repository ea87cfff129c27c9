"""The entry point ``postgres`` (group ``keel``): registers the store. Cheap to import (no asyncpg)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import keel
from keel_store_postgres.options import PostgresStoreOptions


def create_store(options: dict[str, Any]) -> Any:
    """Build a :class:`keel_store_postgres.PostgresStore` from a stack's ``[store]`` options."""
    from keel_store_postgres.store import PostgresStore

    return PostgresStore.from_options(options)


@keel.hookimpl
def keel_stores() -> Iterator[keel.StoreSpec]:
    yield keel.StoreSpec(
        name="postgres",
        description="PostgreSQL via asyncpg: transactional writes, LISTEN/NOTIFY subscriptions",
        durable=True,
        factory=create_store,
        options=PostgresStoreOptions,
    )
