"""One execution's failure stays with that execution.

The runtime's task group is shared by every execution, the gateway's projectors and the
environments' supervisors. A task that raised would cancel all of them (anyio's task-group rule)
and leave the runtime unable to start anything. So the task group the runtime hands out is a
:class:`GuardedTaskGroup`: a task that raises an ``Exception`` is caught, logged and published as
a ``runtime.task_failed`` event, and when it was started on behalf of an execution (inside
:meth:`keel.Runtime.start`) that execution becomes ``failed`` with the cause.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from keel.errors import KeelError
from keel.events import RuntimeEvent
from keel.execution import ExecutionStatus

if TYPE_CHECKING:
    from keel.execution import Execution

__all__ = ["OWNER", "ContainedExecution", "ExecutionCrashed", "GuardedTaskGroup", "Owner"]

log = logging.getLogger("keel.runtime")


class ExecutionCrashed(KeelError):
    """An execution's own task raised where its runnable did not catch it."""

    code = "execution.crashed"


class Owner:
    """Who the tasks started in this context belong to (set while a runnable starts)."""

    def __init__(self) -> None:
        self.execution: ContainedExecution | None = None
        self.early: BaseException | None = None  # a task that failed before start() returned


OWNER: contextvars.ContextVar[Owner | None] = contextvars.ContextVar("keel_execution_owner", default=None)


class GuardedTaskGroup:
    """The runtime's task group, with every task's ``Exception`` contained to that task.

    It offers what background work needs (``start_soon``, ``start``, ``cancel_scope``); it is not
    entered or exited by its users: the runtime owns its lifetime.
    """

    def __init__(self, inner: TaskGroup, on_failure: Callable[[BaseException, str, Owner | None], None]):
        self._inner = inner
        self._on_failure = on_failure

    @property
    def cancel_scope(self) -> anyio.CancelScope:
        return self._inner.cancel_scope

    def _guard(
        self, func: Callable[..., Coroutine[Any, Any, Any]], name: object
    ) -> Callable[..., Coroutine[Any, Any, Any]]:
        label = str(name) if name is not None else getattr(func, "__qualname__", repr(func))
        failed = self._on_failure

        async def guarded(*args: Any) -> Any:
            try:
                return await func(*args)
            except Exception as err:
                failed(err, label, OWNER.get())
                return None

        return guarded

    def start_soon(self, func: Callable[..., Coroutine[Any, Any, Any]], *args: Any, name: object = None) -> None:
        self._inner.start_soon(self._guard(func, name), *args, name=name)

    async def start(self, func: Callable[..., Coroutine[Any, Any, Any]], *args: Any, name: object = None) -> Any:
        """As ``TaskGroup.start``: a task that fails before it reports ``started`` raises here, to
        the one who started it; once started, its failure is contained like any other."""
        label = str(name) if name is not None else getattr(func, "__qualname__", repr(func))
        failed = self._on_failure

        async def guarded(*args: Any, task_status: TaskStatus[Any] = anyio.TASK_STATUS_IGNORED) -> Any:
            reported = False

            class Status:
                def started(self, value: Any = None) -> None:
                    nonlocal reported
                    reported = True
                    task_status.started(value)

            try:
                return await func(*args, task_status=Status())
            except Exception as err:
                if not reported:
                    raise
                failed(err, label, OWNER.get())
                return None

        return await self._inner.start(guarded, *args, name=name)


_END = object()


class ContainedExecution:
    """An execution as the runtime hands it out: itself, unless its task crashed; then ``failed``.

    Everything but status, events, the instant stream, result, signal and cancel is the wrapped
    execution's own (``getattr`` passes through).
    """

    def __init__(self, inner: Execution):
        self._inner = inner
        self._failure: BaseException | None = None
        self._failed: RuntimeEvent | None = None  # the execution.failed made for a crash, once
        self._waiters: set[anyio.CancelScope] = set()
        self.id = inner.id
        self.kind = inner.kind
        self.tenant = inner.tenant

    @property
    def wrapped(self) -> Execution:
        return self._inner

    @property
    def failure(self) -> BaseException | None:
        """What crashed this execution's task, if anything did."""
        return self._failure

    def fail(self, cause: BaseException) -> None:
        if self._failure is None and not self._inner.status.finished:
            self._failure = cause
            for scope in list(self._waiters):
                scope.cancel()

    @property
    def status(self) -> ExecutionStatus:
        return ExecutionStatus.FAILED if self._failure is not None else self._inner.status

    def _reason(self) -> str:
        cause = self._failure
        return f"the execution crashed: {type(cause).__name__}: {cause}" if cause is not None else ""

    async def _until_failed(self, waiting: Awaitable[Any]) -> Any:
        """Await ``waiting``, or return ``_END`` as soon as this execution crashes (no task per
        call: a cancel scope that :meth:`fail` cancels). Once crashed, what is ready without
        waiting (the events logged before the crash, for a late reader) still comes through."""
        with anyio.CancelScope() as scope:
            if self._failure is not None:
                scope.cancel()  # ends ``waiting`` at its first checkpoint: only what is ready
            self._waiters.add(scope)
            try:
                return await waiting
            finally:
                self._waiters.discard(scope)
        return _END  # cancelled by fail(); a cancellation of the caller itself still propagates

    async def _next(self, iterator: AsyncIterator[Any]) -> Any:
        """The iterator's next item, or ``_END`` when it ends or this execution crashed first."""
        try:
            return await self._until_failed(iterator.__anext__())
        except StopAsyncIteration:
            return _END

    async def events(self, since: int = 0) -> AsyncIterator[RuntimeEvent]:
        iterator = self._inner.events(since).__aiter__()
        while (event := await self._next(iterator)) is not _END:
            yield event
        if self._failure is not None:
            failed = await self._failed_event()
            if (failed.seq or 0) > since:
                yield failed

    async def _failed_event(self) -> RuntimeEvent:
        """The ``execution.failed`` that ends a crashed execution's events: one event, the same for
        every reader, numbered after the last event the execution logged."""
        if self._failed is None:
            last = 0
            iterator = self._inner.events(0).__aiter__()
            while (event := await self._next(iterator)) is not _END:
                last = max(last, event.seq or 0)
            if self._failed is None:
                self._failed = RuntimeEvent(
                    kind="execution.failed", execution_id=self.id, tenant=self.tenant, seq=last + 1,
                    payload={"reason": self._reason(), "error": type(self._failure).__name__, "code": ExecutionCrashed.code},
                )  # fmt: skip
        return self._failed

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if name == "instant" and callable(value):

            async def instant(since: int = 0) -> AsyncIterator[Any]:
                iterator = value(since).__aiter__()
                while (item := await self._next(iterator)) is not _END:
                    yield item

            return instant
        return value

    async def result(self) -> Any:
        found = await self._until_failed(self._inner.result())
        if found is _END and self._failure is not None:
            raise ExecutionCrashed(f"execution {self.id} failed: {self._reason()}") from self._failure
        return found

    async def signal(self, name: str, payload: Any = None, *, request_id: str | None = None) -> None:
        if self._failure is not None:
            raise KeelError(f"execution {self.id} has failed and takes no signal: {self._reason()}")
        await self._inner.signal(name, payload, request_id=request_id)

    async def cancel(self, reason: str = "cancelled") -> None:
        if self._failure is None:
            await self._inner.cancel(reason)
