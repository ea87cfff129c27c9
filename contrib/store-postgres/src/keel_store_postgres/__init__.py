"""keel-store-postgres: a Keel store on PostgreSQL (``store = "postgres"``).

Importing this package is cheap; :class:`PostgresStore` (and asyncpg) load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from keel import lazy_exports

if TYPE_CHECKING:
    from keel_store_postgres.store import DEFAULT_DSN, PostgresStore, PostgresStoreOptions

__all__ = ["DEFAULT_DSN", "PostgresStore", "PostgresStoreOptions"]


def __getattr__(name: str) -> Any:
    """Load on first use: the plugin's entry module stays cheap to import."""
    return _lazy(name)


_lazy = lazy_exports(globals(), dict.fromkeys(__all__, ".store"))
