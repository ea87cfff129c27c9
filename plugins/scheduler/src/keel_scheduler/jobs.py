"""A job as stored, its statuses, and the pure helpers the queue uses on it: JSON encoding of
inputs and results, the retry backoff, and a delivery's stable id.

:class:`keel_scheduler.Queue` (in :mod:`keel_scheduler.queue`) stores and moves these.
"""

from __future__ import annotations

import enum
import hashlib
import json
import random
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import to_jsonable_python

from keel_scheduler.errors import SchedulerError

__all__ = ["FINISHED", "Job", "JobStatus", "delay_for", "delivery_hash", "dumps"]

#: statuses a job can no longer leave on its own
FINISHED = ("completed", "failed", "cancelled")


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    #: the dead-letter state: every attempt failed (``errors`` keeps each cause)
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self.value in FINISHED


class Job(BaseModel):
    """One unit of work, as stored."""

    model_config = ConfigDict(extra="forbid")

    id: str
    queue: str
    task: str = Field(description="the runnable's name")
    input: Any = None
    tenant: str = "default"
    status: JobStatus
    priority: int = 0
    run_at: float
    attempts: int = 0
    max_attempts: int = 3
    backoff: float = 1.0
    backoff_max: float = 300.0
    dedup_key: str | None = None
    concurrency_key: str | None = None
    correlation_id: str | None = None
    schedule_id: str | None = None
    scheduled_for: float | None = None
    lease_owner: str | None = None
    lease_until: float | None = None
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    errors: list[dict[str, Any]] = Field(default_factory=list)
    result: Any = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Job:
        data = dict(row)
        data["input"] = json.loads(data["input"])
        data["errors"] = json.loads(data["errors"])
        data["result"] = None if data.get("result") is None else json.loads(data["result"])
        return cls.model_validate(data)

    @property
    def last_error(self) -> str | None:
        return self.errors[-1]["error"] if self.errors else None

    def summary(self) -> dict[str, Any]:
        """The row ``keel queue ls --json`` prints."""
        return {
            "id": self.id,
            "queue": self.queue,
            "task": self.task,
            "status": self.status.value,
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "priority": self.priority,
            "run_at": self.run_at,
            "last_error": self.last_error,
        }


def dumps(value: Any) -> str:
    try:
        return json.dumps(to_jsonable_python(value), ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError) as err:
        raise SchedulerError(
            f"job input/result is not JSON-compatible ({err}); pass plain data or a pydantic model"
        ) from err


def delay_for(job: Job, rng: random.Random | None = None) -> float:
    """Seconds before the next attempt: exponential from ``backoff``, capped at ``backoff_max``,
    with "equal jitter" (between half and all of it) so that retries of many jobs spread out."""
    base = min(job.backoff * (2 ** max(job.attempts - 1, 0)), job.backoff_max)
    return float(base / 2 + (rng or random).random() * base / 2)


def delivery_hash(*parts: str | bytes) -> str:
    """A stable id for a delivery whose sender gives none: SHA-256 of its parts."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0")
    return digest.hexdigest()
