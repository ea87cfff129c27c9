"""Keel's proactive work: a durable queue with workers, schedules and webhook intake.

Every trigger (a cron tick, a webhook delivery, a broker message, an ``enqueue`` with a dedup key)
becomes at most one job, committed before the trigger is acknowledged; workers claim jobs with
leases and run them as executions of runnables. See docs/proactive.md.

Names load on first use, so that plugin discovery (which imports ``keel_scheduler.plugin``, and so
this package) stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from keel import lazy_exports

if TYPE_CHECKING:
    from keel_scheduler._db import Database, PostgresDatabase, SqliteDatabase, open_database
    from keel_scheduler.engines import EngineSchedules, schedules_for
    from keel_scheduler.errors import DuplicateJob, JobNotFound, SchedulerError, ScheduleSpecError
    from keel_scheduler.jobs import Job, JobStatus, delivery_hash
    from keel_scheduler.queue import Queue
    from keel_scheduler.schedules import Schedule, Scheduler, Schedules, ScheduleState, parse_schedule
    from keel_scheduler.tasks import FunctionRunnable, JobContext, current_job, task
    from keel_scheduler.worker import Worker, WorkerEvent

_WHERE = {
    "Database": "_db", "PostgresDatabase": "_db", "SqliteDatabase": "_db", "open_database": "_db",
    "DuplicateJob": "errors", "JobNotFound": "errors", "SchedulerError": "errors", "ScheduleSpecError": "errors",
    "Job": "jobs", "JobStatus": "jobs", "Queue": "queue", "delivery_hash": "jobs",
    "Schedule": "schedules", "Scheduler": "schedules", "Schedules": "schedules", "ScheduleState": "schedules",
    "parse_schedule": "schedules", "EngineSchedules": "engines", "schedules_for": "engines",
    "FunctionRunnable": "tasks", "JobContext": "tasks", "current_job": "tasks", "task": "tasks",
    "Worker": "worker", "WorkerEvent": "worker",
}  # fmt: skip

__all__ = [
    "Database",
    "DuplicateJob",
    "EngineSchedules",
    "FunctionRunnable",
    "Job",
    "JobContext",
    "JobNotFound",
    "JobStatus",
    "PostgresDatabase",
    "Queue",
    "Schedule",
    "ScheduleSpecError",
    "ScheduleState",
    "Scheduler",
    "SchedulerError",
    "Schedules",
    "SqliteDatabase",
    "Worker",
    "WorkerEvent",
    "current_job",
    "delivery_hash",
    "open_database",
    "parse_schedule",
    "schedules_for",
    "task",
]


def __getattr__(name: str) -> Any:
    return _lazy(name)


_lazy = lazy_exports(globals(), {name: f".{home}" for name, home in _WHERE.items()})
