"""keel-store-postgres: a Keel store on PostgreSQL (``store = "postgres"``).

Importing this package is cheap; :class:`PostgresStore` (and asyncpg) load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keel_store_postgres.store import DEFAULT_DSN, PostgresStore, PostgresStoreOptions

__all__ = ["DEFAULT_DSN", "PostgresStore", "PostgresStoreOptions"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from keel_store_postgres import store

        return getattr(store, name)
    raise AttributeError(f"module 'keel_store_postgres' has no attribute {name!r}")
