"""Plain async functions as runnables, and what a running job knows about itself.

Workers start any runnable (an agent, a flow) through ``runtime.runnables``; :func:`task` makes a
plain ``async def`` one, so that a side effect with no agent around it (send an e-mail, write a
row) can be queued, retried and scheduled the same way::

    @task
    async def send_invoice(input: dict) -> dict:
        job = current_job()                       # id, attempt, idempotency key
        await billing.send(input["invoice"], idempotency_key=job.idempotency_key)
        return {"sent": True}

    runtime.add(send_invoice)
"""

from __future__ import annotations

import contextvars
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from keel import BaseExecution, ExecutionCancelled, KeelError

if TYPE_CHECKING:
    from keel import Runtime

__all__ = ["FunctionRunnable", "JobContext", "current_job", "task"]


@dataclass(frozen=True)
class JobContext:
    """The job an execution runs for: read it with :func:`current_job` inside a task."""

    job_id: str
    attempt: int
    queue: str
    correlation_id: str | None
    schedule_id: str | None
    scheduled_for: float | None

    @property
    def idempotency_key(self) -> str:
        """The same for every attempt of one job: key side effects with it, so that a retry after
        a crash (the work ran, the worker died before it said so) does not do them twice."""
        return self.job_id


_current: contextvars.ContextVar[JobContext | None] = contextvars.ContextVar("keel_scheduler_job", default=None)


def current_job() -> JobContext | None:
    """The job this code runs for, or ``None`` outside a worker."""
    return _current.get()


class _FunctionExecution(BaseExecution):
    """An :class:`keel.Execution` of a function: started, then completed, failed or cancelled.

    The protocol's bookkeeping (events for late readers, result, cancel) is
    :class:`keel.BaseExecution`'s; what differs is said here: the started event names the
    runnable, a cancel's error names the task, any signal is taken while it runs (a function waits
    for none), and its events stay with it (the worker publishes the job's ``task.*`` events)."""

    kind = "task"
    publishes = False

    def __init__(self, runnable: FunctionRunnable, runtime: Runtime, tenant: str, input: Any):
        super().__init__(runtime, tenant)
        self.runnable = runnable
        self._input = input
        self._signals: dict[str, Any] = {}

    async def body(self) -> Any:
        return await self.runnable.fn(self._input)

    def started_payload(self) -> dict[str, Any]:
        return {"runnable": self.runnable.name}

    def cancelled_error(self, reason: str) -> BaseException:
        return ExecutionCancelled(f"execution {self.id} of task {self.runnable.name!r} was cancelled: {reason}")

    async def signal(self, name: str, payload: Any = None, *, request_id: str | None = None) -> None:
        if self._status.finished:
            raise KeelError(
                f"execution {self.id} of task {self.runnable.name!r} is {self._status.value}: "
                f"it takes no more signals (got {name!r})"
            )
        self._signals[name] = payload  # a plain function waits for nothing; kept for inspection


class FunctionRunnable:
    """A :class:`keel.Runnable` around an ``async def fn(input)``; its execution runs in the
    starting runtime's task group."""

    kind = "task"

    def __init__(self, fn: Callable[[Any], Awaitable[Any]], name: str | None = None, description: str = ""):
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"task {fn!r} must be an async def function taking one input")
        self.fn = fn
        self.name = name or fn.__name__
        self.description = description or (inspect.getdoc(fn) or "").split("\n")[0]

    def input_schema(self) -> dict[str, Any]:
        return {}

    def output_schema(self) -> dict[str, Any]:
        """The JSON schema of the function's return annotation (``{}`` when it has none, or ``Any``):
        a task that returns a pydantic model or a typed dict has an output contract like an agent."""
        import typing

        from pydantic import TypeAdapter

        try:
            hint = typing.get_type_hints(self.fn).get("return")
        except Exception:  # an annotation that names something not importable here: no contract
            return {}
        if hint is None or hint is Any or hint is type(None):
            return {}
        try:
            return TypeAdapter(hint).json_schema()
        except Exception:  # a type pydantic cannot describe
            return {}

    async def start(self, input: Any, *, runtime: Runtime, tenant: str = "default") -> _FunctionExecution:
        execution = _FunctionExecution(self, runtime, tenant, input)
        runtime.task_group.start_soon(execution.run)  # runtime.start registers it (launch() would too)
        return execution

    async def __call__(self, input: Any) -> Any:
        return await self.fn(input)


def task(fn: Callable[[Any], Awaitable[Any]] | None = None, *, name: str | None = None) -> Any:
    """Make an ``async def`` function a runnable that workers can run (``@task`` or ``@task(name=...)``)."""
    if fn is None:
        return lambda f: FunctionRunnable(f, name)
    return FunctionRunnable(fn, name)
