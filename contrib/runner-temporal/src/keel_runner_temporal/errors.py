"""The temporal runner's errors (each with its stable ``code``)."""

from __future__ import annotations

from keel import KeelError

__all__ = ["TemporalExecutionFailed", "TemporalRunnerError", "TemporalUnavailableError"]


class TemporalRunnerError(KeelError):
    """A flow, an option or a call the temporal runner cannot run (yet): the message names it."""

    code = "temporal.runner_failed"


class TemporalUnavailableError(TemporalRunnerError):
    """No Temporal server answered at the configured address."""

    code = "temporal.unavailable"


class TemporalExecutionFailed(KeelError):
    """The execution's workflow failed or was cancelled on Temporal; the message carries the cause."""

    code = "temporal.execution_failed"
