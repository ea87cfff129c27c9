"""The entry point ``sqlite`` (group ``keel``): registers the store. Cheap to import."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import keel
from keel_store_sqlite.options import SqliteStoreOptions


def create_store(options: dict[str, Any]) -> Any:
    """Build a :class:`keel_store_sqlite.SqliteStore` from a stack's ``[store]`` options."""
    from keel_store_sqlite.store import SqliteStore

    return SqliteStore.from_options(options)


@keel.hookimpl
def keel_stores() -> Iterator[keel.StoreSpec]:
    yield keel.StoreSpec(
        name="sqlite",
        description="embedded SQLite file (default .keel/keel.db): WAL, synchronous=FULL, group commit",
        durable=True,
        factory=create_store,
        options=SqliteStoreOptions,
    )
