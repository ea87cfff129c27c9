"""keel-store-sqlite: Keel's embedded default store (``store = "sqlite"``).

Importing this package is cheap; :class:`SqliteStore` (and ``sqlite3``) load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from keel import lazy_exports

if TYPE_CHECKING:
    from keel_store_sqlite.store import DEFAULT_PATH, SqliteStore, SqliteStoreOptions

__all__ = ["DEFAULT_PATH", "SqliteStore", "SqliteStoreOptions"]


def __getattr__(name: str) -> Any:
    """Load on first use: the plugin's entry module stays cheap to import."""
    return _lazy(name)


_lazy = lazy_exports(globals(), dict.fromkeys(__all__, ".store"))
