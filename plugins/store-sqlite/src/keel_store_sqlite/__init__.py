"""keel-store-sqlite: Keel's embedded default store (``store = "sqlite"``).

Importing this package is cheap; :class:`SqliteStore` (and ``sqlite3``) load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keel_store_sqlite.store import DEFAULT_PATH, SqliteStore, SqliteStoreOptions

__all__ = ["DEFAULT_PATH", "SqliteStore", "SqliteStoreOptions"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from keel_store_sqlite import store

        return getattr(store, name)
    raise AttributeError(f"module 'keel_store_sqlite' has no attribute {name!r}")
