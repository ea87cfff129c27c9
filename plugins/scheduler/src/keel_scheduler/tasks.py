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
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from keel import EventLog, ExecutionCancelled, ExecutionStatus, KeelError, RuntimeEvent, error_code, new_id

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


class _FunctionExecution:
    """An :class:`keel.Execution` of a function: started, then completed, failed or cancelled."""

    kind = "task"

    def __init__(self, runnable: FunctionRunnable, tenant: str):
        self.id = new_id("exe")
        self.tenant = tenant
        self.runnable = runnable
        self._status = ExecutionStatus.PENDING
        self._log: EventLog[RuntimeEvent] = EventLog()
        self._done = anyio.Event()
        self._result: Any = None
        self._error: BaseException | None = None
        self._scope: anyio.CancelScope | None = None
        self._cancel_reason: str | None = None  # set by cancel(), also before the task ran
        self._signals: dict[str, Any] = {}

    @property
    def status(self) -> ExecutionStatus:
        return self._status

    def _emit(self, kind: str, payload: dict[str, Any] | None = None) -> None:
        self._log.append(
            RuntimeEvent(
                kind=kind, execution_id=self.id, tenant=self.tenant, seq=len(self._log) + 1, payload=payload or {}
            )
        )

    async def _run(self, input: Any) -> None:
        self._status = ExecutionStatus.RUNNING
        self._emit("execution.started", {"runnable": self.runnable.name})
        try:
            with anyio.CancelScope() as self._scope:
                if self._cancel_reason is not None:  # cancelled before it ran
                    self._scope.cancel()
                self._result = await self.runnable.fn(input)
            if self._scope.cancelled_caught:
                raise anyio.get_cancelled_exc_class()
            self._status = ExecutionStatus.COMPLETED
            self._emit("execution.completed")
        except anyio.get_cancelled_exc_class():
            reason = self._cancel_reason or "cancelled"
            self._status = ExecutionStatus.CANCELLED
            self._error = ExecutionCancelled(
                f"execution {self.id} of task {self.runnable.name!r} was cancelled: {reason}"
            )
            self._emit("execution.cancelled", {"reason": reason, "code": self._error.code})
        except Exception as err:
            self._status = ExecutionStatus.FAILED
            self._error = err
            self._emit("execution.failed", {"reason": f"{type(err).__name__}: {err}", "code": error_code(err)})
        finally:
            self._done.set()
            self._log.notify()

    def events(self, since: int = 0) -> AsyncIterator[RuntimeEvent]:
        return self._log.follow(since, lambda: self._done.is_set())

    async def result(self) -> Any:
        await self._done.wait()
        if self._error is not None:
            raise self._error
        return self._result

    async def signal(self, name: str, payload: Any = None, *, request_id: str | None = None) -> None:
        if self._done.is_set():
            raise KeelError(
                f"execution {self.id} of task {self.runnable.name!r} is {self._status.value}: "
                f"it takes no more signals (got {name!r})"
            )
        self._signals[name] = payload  # a plain function waits for nothing; kept for inspection

    async def cancel(self, reason: str = "cancelled") -> None:
        """Stop the function; returns once the execution is ``cancelled`` (a no-op once finished)."""
        if self._done.is_set():
            return
        if self._cancel_reason is None:
            self._cancel_reason = reason
        if self._scope is not None:
            self._scope.cancel()
        await self._done.wait()


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
        execution = _FunctionExecution(self, tenant)
        runtime.task_group.start_soon(execution._run, input)
        return execution

    async def __call__(self, input: Any) -> Any:
        return await self.fn(input)


def task(fn: Callable[[Any], Awaitable[Any]] | None = None, *, name: str | None = None) -> Any:
    """Make an ``async def`` function a runnable that workers can run (``@task`` or ``@task(name=...)``)."""
    if fn is None:
        return lambda f: FunctionRunnable(f, name)
    return FunctionRunnable(fn, name)
