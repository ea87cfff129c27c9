"""``[settings.scheduler]`` in a stack: the database, the workers' defaults, the intake sources."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from keel import parse_options
from keel_scheduler.errors import SchedulerError

__all__ = ["SchedulerSettings", "SourceSettings", "load_settings"]


class SourceSettings(BaseModel):
    """One webhook source of ``keel intake`` (``[settings.scheduler.sources.<name>]``)."""

    model_config = ConfigDict(extra="forbid")

    task: str | None = Field(default=None, description="the runnable each accepted delivery enqueues")
    queue: str = "default"
    secret_env: str | None = Field(default=None, description="environment variable holding the HMAC secret")
    secret: str | None = Field(default=None, description="the HMAC secret itself (prefer secret_env)")
    signature_header: str = Field(default="X-Keel-Signature", description="'t=<unix>,v1=<hex HMAC-SHA256>'")
    delivery_header: str = Field(
        default="X-Keel-Delivery", description="the sender's delivery id; without one, a hash of the body"
    )
    tolerance: float = Field(default=300.0, gt=0, description="seconds a signature timestamp may be off")
    max_body: int = Field(default=1_048_576, gt=0, description="largest accepted body, bytes")
    correlation_field: str | None = Field(
        default=None, description="a top-level JSON field whose value resumes the waiting job with that correlation id"
    )
    signal: str = Field(default="webhook", description="the signal name a correlated delivery sends")
    max_attempts: int = Field(default=5, ge=1)


class SchedulerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    database: str = Field(default=".keel/scheduler.db", description="a SQLite path or postgresql://...")
    schema_name: str = Field(default="keel_scheduler", alias="schema", description="PostgreSQL schema")
    queues: list[str] = Field(default_factory=lambda: ["default"])
    concurrency: int = Field(default=4, ge=1)
    lease: float = Field(default=30.0, gt=0.1)
    poll_interval: float = Field(default=0.5, gt=0, le=60)
    queue_limits: dict[str, int] = Field(default_factory=dict, description="per queue: most running at once")
    rate_limits: dict[str, float] = Field(default_factory=dict, description="per queue: most started per second")
    channels: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="options per channel name listed in the stack's channels = [...]"
    )
    sources: dict[str, SourceSettings] = Field(default_factory=dict, description="webhook sources for keel intake")
    brokers: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="broker sources for keel intake: driver, task, and the source's options"
    )


def load_settings(raw: dict[str, Any] | None) -> SchedulerSettings:
    return parse_options(SchedulerSettings, raw, where="[settings.scheduler]", error=SchedulerError)
