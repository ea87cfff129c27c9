"""``keel.BaseExecution``: the ``Execution`` protocol's bookkeeping, for executions written by hand.

A runnable that is neither an agent nor a flow still has to keep the protocol's promises: events in
order for late readers, a ``waiting`` payload that says what to answer, a signal that is idempotent
by request id, a cancel that ends it, a result that raises its error. Subclass, write ``body()``,
and those come with it::

    class Review(keel.BaseExecution):
        kind = "review"

        async def body(self) -> Any:
            self.emit("review.progress", {"message": "drafting", "percent": 10})
            answer = await self.wait_for("approve", {"message": "Publish?"})
            return {"approved": bool(answer.get("approved"))}

    execution = Review(runtime, tenant).launch()  # registered with the runtime and started

``ExecutionConformance`` (``keel.testing.conformance``) checks a subclass like any other Execution.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import anyio

from keel.errors import ConflictError, ExecutionCancelled, KeelError, error_code
from keel.events import RuntimeEvent
from keel.execution import EventLog, ExecutionStatus
from keel.types import new_id

if TYPE_CHECKING:
    from keel.runtime import Runtime

__all__ = ["BaseExecution"]


class BaseExecution:
    """An Execution whose work is :meth:`body`; everything else the protocol asks is done here.

    :ivar kind: the runnable's kind (``"task"`` unless a subclass says otherwise).
    :ivar id: ``exe_...``, fresh per execution.
    :ivar publishes: whether :meth:`emit` publishes each event on the runtime's bus too (observers,
        DevTools); ``True`` unless a subclass says otherwise.
    """

    kind = "task"
    publishes = True

    def __init__(self, runtime: Runtime, tenant: str = "default") -> None:
        self.id = new_id("exe")
        self.runtime = runtime
        self.tenant = tenant
        self._status = ExecutionStatus.PENDING
        self._events: EventLog[RuntimeEvent] = EventLog()
        self._done = anyio.Event()
        self._scope = anyio.CancelScope()
        self._answers: dict[str, Any] = {}  # request id -> the payload it carried
        self._waiting_for: str | None = None
        self._answered = anyio.Event()
        self._answer: Any = None
        self._result: Any = None
        self._error: BaseException | None = None
        self._error_tb: TracebackType | None = None  # its traceback when kept: each raise starts there
        self._reason = ""

    # ------------------------------------------------------------------ for the subclass
    async def body(self) -> Any:
        """The work; its return value is the result. Raise to fail, :meth:`wait_for` to wait."""
        raise NotImplementedError(f"{type(self).__name__} must define async def body(self)")

    def emit(self, kind: str, payload: dict[str, Any] | None = None) -> RuntimeEvent:
        """Append an event (the next ``seq``) and publish it to the runtime's observers."""
        event = RuntimeEvent(
            kind=kind, execution_id=self.id, seq=len(self._events) + 1, tenant=self.tenant, payload=payload or {}
        )
        self._events.append(event)
        if self.publishes:
            self.runtime.publish(event)
        return event

    def started_payload(self) -> dict[str, Any]:
        """The payload of the ``execution.started`` event (empty unless a subclass says more)."""
        return {}

    def cancelled_error(self, reason: str) -> BaseException:
        """The error :meth:`result` raises once the execution is cancelled for ``reason``."""
        return ExecutionCancelled(reason)

    async def wait_for(self, name: str, payload: Any = None, **interrupt: Any) -> Any:
        """Wait for the signal ``name``: the status is ``waiting`` and ``execution.waiting`` names it
        (``payload`` is what the waiter shows; ``interrupt`` adds fields such as ``id``). Returns the
        answer's payload."""
        self._waiting_for, self._answered = name, anyio.Event()
        self._status = ExecutionStatus.WAITING
        self.emit("execution.waiting", {"interrupts": [{**interrupt, "name": name, "payload": payload}]})
        await self._answered.wait()
        self._waiting_for = None
        self._status = ExecutionStatus.RUNNING
        return self._answer

    def launch(self) -> Self:
        """Register with the runtime (``runtime.executions``) and start :meth:`run` in its task group."""
        self.runtime.executions.add(self)
        self.runtime.task_group.start_soon(self.run)
        return self

    # -------------------------------------------------------------------- the protocol
    @property
    def status(self) -> ExecutionStatus:
        return self._status

    def events(self, since: int = 0) -> AsyncIterator[RuntimeEvent]:
        return self._events.follow(since, lambda: self._status.finished)

    async def result(self) -> Any:
        await self._done.wait()
        if self._error is not None:  # as kept: raising one object again adds this caller's frames to it
            raise self._error.with_traceback(self._error_tb)
        return self._result

    async def signal(self, name: str, payload: Any = None, *, request_id: str | None = None) -> None:
        if request_id is not None and request_id in self._answers:
            if self._answers[request_id] != payload:
                raise ConflictError(
                    f"request {request_id!r} was already used with another payload: send a new request id "
                    "for a new answer"
                )
            return  # the same answer again: delivered once
        if self._waiting_for != name or self._status is not ExecutionStatus.WAITING:
            waits = f"waits for {self._waiting_for!r}" if self._waiting_for else f"is {self._status.value}"
            raise KeelError(f"{self.kind} {self.id} is not waiting for {name!r}: it {waits}")
        self._answers[request_id or new_id("req")] = payload
        self._answer = payload
        self._answered.set()

    async def cancel(self, reason: str = "cancelled") -> None:
        if self._status.finished:
            return
        self._reason = reason
        self._scope.cancel()
        await self._done.wait()

    async def run(self) -> None:
        """Run :meth:`body` to its end: completed with its value, failed with its error, or cancelled."""
        try:
            with self._scope:
                self._status = ExecutionStatus.RUNNING
                self.emit("execution.started", self.started_payload())
                self._result = await self.body()
                self._finish(ExecutionStatus.COMPLETED)
        except Exception as err:  # the execution's failure is its result
            self._finish(ExecutionStatus.FAILED, err)
        finally:
            if not self._status.finished:  # cancelled (by cancel() or the runtime closing)
                reason = self._reason or "runtime closed"
                self._finish(ExecutionStatus.CANCELLED, self.cancelled_error(reason), reason)

    def _finish(self, status: ExecutionStatus, error: BaseException | None = None, reason: str = "") -> None:
        self._status, self._error = status, error
        self._error_tb = error.__traceback__ if error is not None else None
        payload: dict[str, Any] = {}
        if error is not None:  # the protocol's user-safe reason, the error for the logs, its stable code
            reason = reason or f"{type(error).__name__}: {error}"
            payload = {"reason": reason, "error": f"{type(error).__name__}: {error}", "code": error_code(error)}
        self.emit(f"execution.{status.value}", payload)
        self._done.set()
