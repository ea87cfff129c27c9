"""The ``Execution`` protocol and the registry of runnables.

Plugins that consume other capabilities (the gateway, DevTools, the scheduler, eval) speak only to
these: an agent execution and a TriggerFlow execution look the same to them, and no plugin imports
another to start or follow one.
"""

from __future__ import annotations

import builtins
import enum
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, overload, runtime_checkable

import anyio

from keel.errors import KeelError, NotFoundError

if TYPE_CHECKING:
    from keel.events import RuntimeEvent
    from keel.runtime import Runtime

__all__ = ["EventLog", "Execution", "ExecutionRegistry", "ExecutionStatus", "Runnable", "RunnableRegistry"]

T = TypeVar("T")


class ExecutionStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in {ExecutionStatus.COMPLETED, ExecutionStatus.FAILED, ExecutionStatus.CANCELLED}


@runtime_checkable
class Execution(Protocol):
    """One run of a runnable: an agent answering, a flow executing.

    Conventions every implementation follows, so that the gateway, DevTools and the scheduler can
    serve any kind of execution without importing its plugin:

    - **Event kinds.** ``execution.started`` first; exactly one of ``execution.completed``,
      ``execution.failed`` or ``execution.cancelled``, last (payload ``reason`` for the latter
      two, user-safe, and ``code``: the :attr:`keel.KeelError.code` of what it ended with, from
      :func:`keel.error_code`, so ``"internal"`` for an exception that is not a ``KeelError``).
      ``seq`` strictly increases; every event names this execution and tenant.
    - **Progress.** An execution that reports how far it got emits ``execution.progress`` (or
      ``<kind>.progress``) with a :class:`keel.Progress` payload (``message``, ``percent``);
      readers take it with :meth:`keel.Progress.read`.
    - **Late readers.** ``events(since=0)`` after the end replays what a live reader saw;
      ``events(since=n)`` resumes with the events whose ``seq`` is past ``n`` (every one, for a
      negative ``n``). (An execution with
      very many events may coalesce its high-volume ones once finished, as an agent's
      ``model.delta`` are: ``seq`` then skips, and every other event is kept as it was.)
    - **Waiting.** An execution that waits for a signal sets its status to ``waiting`` and emits
      ``execution.waiting`` with payload ``{"interrupts": [...]}``, each a
      :class:`keel.Interrupt` dumped to JSON (``name``, the signal; ``payload``, a message or
      ``{"message": ..., "schema": <JSON schema of the expected answer>}``; optional ``id``,
      ``path``, ``deadline``);
      answering is ``signal(name, answer, request_id=...)``. A repeated ``request_id`` is a
      no-op with the same payload and a :class:`keel.ConflictError` with another one, also once
      the execution has finished (a client retrying after the answer ended it). A new request to
      a finished execution, or a signal nothing waits for, is a :class:`keel.KeelError`.
    - **Cancel.** ``cancel(reason)`` returns once ``status`` is ``cancelled`` (a no-op on a
      finished execution); ``result()`` then raises a :class:`keel.KeelError`
      (:class:`keel.ExecutionCancelled` by preference).
    - **Optional instant stream.** An execution whose answer streams in fields also offers
      ``instant(since=0)``: an async iterator of :class:`keel.instant.InstantEvent` (``path``,
      ``delta``, ``value``, ``is_complete``, and ``reset`` events for abandoned attempts).
      Check with ``hasattr(execution, "instant")``.
    - **Optional** ``running_here``: ``False`` for an object that only mirrors an execution another
      process runs (adopted for reading), or one that waits released (nothing runs it here); a
      runtime closing waits only for the ones running here, and the registry may forget the others
      (their plugin finds them again in the store).
    - **Optional** ``refresh()``: ``async``, for such a mirror: read the store again, so that its
      status (and result) follow what another process did meanwhile. :meth:`keel.Runtime.find_execution`
      calls it before it hands out an unfinished execution that is not running here.

    :class:`keel.testing.conformance.ExecutionConformance` checks these rules; run it on every
    implementation (see docs/plugins.md).
    """

    id: str
    kind: str
    tenant: str

    @property
    def status(self) -> ExecutionStatus: ...

    def events(self, since: int = 0) -> AsyncIterator[RuntimeEvent]:
        """This execution's RuntimeEvents with ``seq > since``, live until it finishes."""
        ...

    async def result(self) -> Any:
        """Wait for the final, validated result (raises what the execution failed with)."""
        ...

    async def signal(self, name: str, payload: Any = None, *, request_id: str | None = None) -> None:
        """Deliver a named signal (an approval, an answer). The same ``request_id`` twice is a no-op;
        the same id with another payload is a :class:`keel.ConflictError`."""
        ...

    async def cancel(self, reason: str = "cancelled") -> None: ...


@runtime_checkable
class Runnable(Protocol):
    """Something that can be started by name with an input: an agent, a flow.

    What the kernel guarantees to everyone who starts runnables through
    :meth:`keel.Runtime.start` (the gateway, the CLI, the scheduler), whoever wrote the runnable:
    a task that ``start`` puts in ``runtime.task_group`` and that raises (say ``anyio.sleep(nan)``
    from a NaN in the input) fails only that execution: its status becomes ``failed``, ``result()``
    raises :class:`keel.ExecutionCrashed` naming the cause, its events end with
    ``execution.failed``, and the runtime and every other execution go on. An author still
    reports expected failures the usual way (its own ``execution.failed``).
    """

    name: str
    kind: str
    description: str

    def input_schema(self) -> dict[str, Any]: ...

    def output_schema(self) -> dict[str, Any]: ...

    async def start(self, input: Any, *, runtime: Runtime, tenant: str = "default") -> Execution: ...


class EventLog(Generic[T]):
    """An execution's events: appended once, followed by any number of readers from any position.

    What an :class:`Execution` needs for ``events(since)``: a reader that starts late replays
    from ``since``, then waits for each new item, and stops once the log has nothing more and
    ``finished()`` is true (call :meth:`notify` when an execution finishes without a last event).
    Read the items themselves with ``len``, indexing (slices too) and iteration.
    """

    def __init__(self) -> None:
        self._items: list[T] = []
        self._wake: anyio.Event | None = None  # made by the first reader that waits, in its loop

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, index: int) -> T: ...

    @overload
    def __getitem__(self, index: slice) -> list[T]: ...

    def __getitem__(self, index: int | slice) -> T | list[T]:
        return self._items[index]

    def __iter__(self) -> Iterator[T]:
        return iter(self._items)

    def append(self, item: T) -> None:
        self._items.append(item)
        if self._wake is not None:
            self.notify()

    def extend(self, items: Iterable[T]) -> None:
        """Append every one of ``items``, waking the readers once."""
        self._items.extend(items)
        if self._wake is not None:
            self.notify()

    def replace(self, items: Iterable[T]) -> None:
        """Put ``items`` in place of the log's (a finished execution keeping fewer, coalesced):
        readers that start from now on read these; a reader already following goes on over the
        items it started with. Wakes nobody."""
        self._items = list(items)

    def notify(self) -> None:
        """Wake every waiting reader."""
        if self._wake is not None:
            wake, self._wake = self._wake, None
            wake.set()

    async def changed(self) -> None:
        """Wait for the next :meth:`append`, :meth:`extend` or :meth:`notify`: for a reader that
        waits for something else than the next item (a status), or takes what is new in batches."""
        if self._wake is None:
            self._wake = anyio.Event()
        await self._wake.wait()

    async def follow(self, since: int, finished: Callable[[], bool]) -> AsyncIterator[T]:
        items = self._items  # held: a replace() while this reader follows does not move it
        i = max(since, 0)  # a position, not an index: a negative one reads from the start
        while True:
            while i < len(items):
                yield items[i]
                i += 1
            if finished():
                return
            await self.changed()


class RunnableRegistry:
    """Runnables by name; a second runnable under a taken name is an error."""

    def __init__(self) -> None:
        self._items: dict[str, Runnable] = {}

    def add(self, runnable: Runnable) -> Runnable:
        if not isinstance(runnable, Runnable):
            raise KeelError(
                f"{runnable!r} is not a runnable: it needs name, kind, description, input_schema(), "
                "output_schema() and start()"
            )
        existing = self._items.get(runnable.name)
        if existing is not None and existing is not runnable:
            raise KeelError(f"a runnable named {runnable.name!r} ({existing.kind}) is already registered")
        self._items[runnable.name] = runnable
        return runnable

    def get(self, name: str) -> Runnable:
        try:
            return self._items[name]
        except KeyError:
            names = ", ".join(sorted(self._items)) or "none"
            raise NotFoundError(f"no runnable named {name!r}; registered: {names}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __iter__(self) -> Iterator[Runnable]:
        return iter(list(self._items.values()))

    def __contains__(self, name: object) -> bool:
        return name in self._items


def _kept(execution: Execution) -> bool:
    """Unfinished and driven by this process: what a registry keeps and a closing runtime waits for
    (an object that only mirrors the store says so with ``running_here = False``)."""
    return not execution.status.finished and bool(getattr(execution, "running_here", True))


class ExecutionRegistry:
    """Live executions by id, scoped by tenant: another tenant's id is simply not found.

    Finished executions are kept for late readers (a UI that reconnects, ``keel flow show``),
    bounded two ways, so a long-running service does not grow without bound:

    - ``keep_finished`` (default 10,000): past that many executions, the oldest finished ones are
      forgotten;
    - ``keep_finished_bytes`` (default 256 MiB): the finished executions that report a
      ``footprint`` (bytes they keep, an estimate; agent executions do) are forgotten oldest first
      once their sum passes it. The newest finished execution is always kept.

    An execution that is not running here (``running_here`` is ``False``: a copy of one that
    another process runs, or one that waits released) counts as finished for ``keep_finished``:
    the plugin that owns it finds it again in the store (``keel_find_execution``). Executions
    running here are never dropped. Set either on ``runtime.executions``.

    Past ``keep_finished``, the registry looks for executions to forget once per
    ``keep_finished // 10`` additions, not on every one (a registry full of running executions
    would otherwise be scanned whole for each new one).
    """

    def __init__(self, keep_finished: int = 10_000, keep_finished_bytes: int = 256 * 2**20) -> None:
        self._items: dict[tuple[str, str], Execution] = {}
        self._sizes: dict[tuple[str, str], int] = {}  # finished ones that reported a footprint, oldest first
        self.keep_finished = keep_finished
        self.keep_finished_bytes = keep_finished_bytes
        self.finished_bytes = 0
        self._next_sweep = 0  # the size at which to look for executions to forget again

    def add(self, execution: Execution) -> Execution:
        self._items[(execution.tenant, execution.id)] = execution
        if len(self._items) > self.keep_finished and len(self._items) >= self._next_sweep:
            self._forget_finished()
        return execution

    def note_finished(self, execution: Execution) -> None:
        """Count a finished execution's ``footprint``, and forget the oldest finished ones while the
        total is past ``keep_finished_bytes``. An execution that is not registered is ignored."""
        key = (execution.tenant, execution.id)
        if key not in self._items or key in self._sizes:
            return
        size = int(getattr(execution, "footprint", 0) or 0)
        self._sizes[key] = size
        self.finished_bytes += size
        while self.finished_bytes > self.keep_finished_bytes and len(self._sizes) > 1:
            oldest = next(iter(self._sizes))
            self._drop(oldest)

    def _drop(self, key: tuple[str, str]) -> None:
        self._items.pop(key, None)
        self.finished_bytes -= self._sizes.pop(key, 0)

    def _forget_finished(self) -> None:
        idle = [key for key, item in self._items.items() if not _kept(item)]  # oldest first
        for key in idle[: max(len(idle) - self.keep_finished * 9 // 10, 0)]:
            self._drop(key)
        self._next_sweep = len(self._items) + max(1, self.keep_finished // 10)

    def get(self, execution_id: str, tenant: str = "default") -> Execution:
        try:
            return self._items[(tenant, execution_id)]
        except KeyError:
            raise NotFoundError(f"no execution {execution_id!r}") from None

    def list(self, tenant: str = "default") -> list[Execution]:
        return [e for (t, _), e in self._items.items() if t == tenant]

    def in_flight(self) -> builtins.list[Execution]:
        """Every tenant's executions that have not finished (running, pending or waiting)."""
        return [e for e in list(self._items.values()) if not e.status.finished]

    def discard(self, execution_id: str, tenant: str = "default") -> None:
        self._drop((tenant, execution_id))

    def clear(self) -> None:
        """Forget every execution (a closed runtime does: each execution refers to its runtime,
        so a registry kept past the end made one reference cycle of the runtime and every
        execution it held, freed only by a full garbage collection)."""
        self._items.clear()
        self._sizes.clear()
        self.finished_bytes = 0
        self._next_sweep = 0
