"""The options of ``store = "postgres"``: imported by the entry point, so only pydantic here."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["DEFAULT_DSN", "PostgresStoreOptions"]

DEFAULT_DSN = "postgresql://127.0.0.1:5432/postgres"


class PostgresStoreOptions(BaseModel):
    """The options of ``store = "postgres"`` (the ``[store]`` table of a stack)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    dsn: str | None = Field(default=None, description=f"libpq URL; default: $KEEL_POSTGRES_DSN, else {DEFAULT_DSN}")
    schema_name: str = Field(default="keel", alias="schema", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    min_size: int = Field(default=1, ge=0)
    max_size: int = Field(default=10, ge=1)
    poll_interval: float = Field(default=1.0, gt=0, le=60, description="subscribe()'s fallback poll, seconds")
