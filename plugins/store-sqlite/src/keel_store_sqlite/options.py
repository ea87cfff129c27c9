"""The options of ``store = "sqlite"``: imported by the entry point, so only pydantic here."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["DEFAULT_PATH", "SqliteStoreOptions"]

DEFAULT_PATH = ".keel/keel.db"


class SqliteStoreOptions(BaseModel):
    """The options of ``store = "sqlite"`` (the ``[store]`` table of a stack)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    path: str = Field(default=DEFAULT_PATH, description="database file; relative paths are from the cwd")
    poll_interval: float = Field(
        default=0.25, gt=0, le=60, description="seconds between checks for other processes' appends in subscribe()"
    )
    max_batch: int = Field(default=512, ge=1, description="most operations committed in one transaction")
    busy_timeout: float = Field(default=30.0, ge=0, description="seconds to wait for another process's write lock")
