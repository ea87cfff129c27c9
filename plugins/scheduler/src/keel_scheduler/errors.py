"""The scheduler's errors: each a :class:`keel.KeelError` that names the cause and the fix."""

from __future__ import annotations

from keel import ConflictError, KeelError, NotFoundError

__all__ = ["DuplicateJob", "JobNotFound", "ScheduleSpecError", "SchedulerError"]


class SchedulerError(KeelError):
    """The queue, a worker, the scheduler or intake failed in a way the caller should see."""

    code = "scheduler.failed"


class ScheduleSpecError(SchedulerError, ValueError):
    """A schedule spec is invalid; ``field`` names the offending field."""

    code = "scheduler.spec_invalid"

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"schedule field {field!r}: {message}")


class DuplicateJob(ConflictError):
    """An enqueue with a dedup key (or id) that is already taken, when the caller asked to reject it."""

    code = "scheduler.duplicate_job"

    def __init__(self, key: str, existing_id: str):
        self.key = key
        self.existing_id = existing_id
        super().__init__(
            f"a job with dedup key {key!r} already exists ({existing_id}); pass on_duplicate='return' to get it "
            "instead of this error"
        )


class JobNotFound(SchedulerError, NotFoundError):
    """No job with that id (it may have been purged)."""

    code = "scheduler.job_not_found"
