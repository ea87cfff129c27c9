"""Public value types of TriggerFlow: close snapshots, errors (``Interrupt`` is ``keel.Interrupt``, re-exported)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from keel import Interrupt, KeelError

__all__ = [
    "BranchError",
    "CloseSnapshot",
    "Durability",
    "FlowDefinitionError",
    "FlowError",
    "Interrupt",
    "LeaseError",
    "MissingResourceError",
    "StepFailed",
    "WaitTimeout",
]

Durability = Literal["sync", "batch", "none"]
"""How history reaches the store: ``sync`` (default) acknowledges every step before its output
flows on; ``batch`` writes every 64 records and at waits and the end (a crash re-runs at most the
unwritten steps); ``none`` writes nothing (fastest; not resumable)."""


class FlowError(KeelError):
    """Base of TriggerFlow's errors."""

    code = "flow.failed"


class FlowDefinitionError(FlowError):
    """A flow definition is invalid; ``problems`` lists every problem found, not only the first."""

    code = "flow.invalid"

    def __init__(self, flow: str, problems: list[str]):
        self.flow = flow
        self.problems = problems
        listing = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"flow {flow!r} is invalid ({len(problems)} problem(s)):\n{listing}")


class StepFailed(FlowError):
    """A step raised (after its retries); carries the original error's type and message."""

    code = "flow.step_failed"

    def __init__(self, path: str, error_type: str, message: str, attempts: int = 1):
        self.path = path
        self.error_type = error_type
        self.message = message
        self.attempts = attempts
        super().__init__(f"step {path} failed after {attempts} attempt(s): {error_type}: {message}")


class WaitTimeout(FlowError):
    """A ``pause_for`` wait reached its timeout with ``on_timeout="fail"``."""

    code = "flow.wait_timeout"


class MissingResourceError(FlowError):
    """A live resource the flow needs was not given when the execution was created or loaded."""

    code = "flow.missing_resource"


class LeaseError(FlowError):
    """Another owner holds this execution's lease (or took it over)."""

    code = "flow.lease_held"


class BranchError(BaseModel):
    """What a failed branch leaves in a joined result when the join collects errors."""

    model_config = ConfigDict(extra="forbid")

    error: dict[str, str] = Field(description="type and message of the branch's error")


class CloseSnapshot(BaseModel):
    """What ``close()`` returns: the outcome, the final state and a summary of the history."""

    model_config = ConfigDict(extra="forbid")

    execution_id: str
    flow: str
    status: str
    result: Any = None
    error: str | None = None
    state: dict[str, Any] = Field(default_factory=dict)
    steps_completed: int = 0
    pending_interrupts: list[Interrupt] = Field(default_factory=list)
    history_records: int = 0
    #: tokens, cost, model requests, action calls and wall time, with the limits in force (the
    #: kernel's budgets: ``runtime.budgets.usage``); filled by ``keel flow show``
    usage: dict[str, Any] | None = None
