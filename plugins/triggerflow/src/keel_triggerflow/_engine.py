"""One execution of a flow: the local (anyio, in-process) engine.

Durability is history replay with memoized steps: every completed step's output is a history
record; on load the flow's control logic runs again from the start, and each step whose record
exists returns its recorded output (and re-applies its recorded state writes and emits) instead of
running. Decisions of conditions are recorded too, so they are not re-evaluated. Nothing re-reads
the history per step: it is read once, on load.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import AsyncIterator, Generator, Mapping
from types import CoroutineType
from typing import TYPE_CHECKING, Any

import anyio
import anyio.from_thread
import anyio.to_thread
from pydantic import BaseModel
from pydantic_core import PydanticSerializationError, to_jsonable_python

from keel import ConflictError, ExecutionStatus, KeelError, Runtime, RuntimeEvent, Store, new_id
from keel_triggerflow._history import History, Lease, inbox_name, stream_name, write_index
from keel_triggerflow._ops import STOP, Compiled, Op, Step, Tail, emit_thread, thread_hash
from keel_triggerflow.types import (
    CloseSnapshot,
    Durability,
    FlowError,
    Interrupt,
    LeaseError,
    MissingResourceError,
    StepFailed,
    WaitTimeout,
)

if TYPE_CHECKING:
    from keel_triggerflow.flow import TriggerFlow

_log = logging.getLogger("keel_triggerflow")
BLOB_THRESHOLD = 64 * 1024  # outputs larger than this go to a blob; the record keeps the hash


_PLAIN = (str, int, float, bool, type(None))


def _jsonable(value: Any) -> Any:
    """JSON-compatible data for history records and state (pydantic models, nested, become dicts)."""
    if isinstance(value, _PLAIN):
        return value
    try:
        return to_jsonable_python(value)
    except PydanticSerializationError:
        return value  # the store reports what cannot be stored, with its own clear message


def _revive(model_ref: str, data: Any) -> Any:
    """Rebuild a recorded pydantic output; a class that cannot be found leaves the data as is."""
    module_name, _, qualname = model_ref.partition(":")
    target: Any = sys.modules.get(module_name)
    for part in qualname.split("."):
        target = getattr(target, part, None)
    if isinstance(target, type) and issubclass(target, BaseModel):
        return target.model_validate(data)
    return data


#: the live resource that follows sub-flow boundaries (see ``Context.resource``)
WORKSPACE_RESOURCE = "workspace"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.:@-]+")


def _scope_name(prefix: str) -> str:
    """A sub-flow's step path as a workspace scope: '/'-separated, safe characters only."""
    parts = [_UNSAFE.sub("_", part).strip("_") or "_" for part in prefix.rstrip(">").split(">")]
    return "/".join(parts)


class _Scope:
    """A flow's run: the root flow or one sub-flow instance, with its own state."""

    __slots__ = ("collections", "compiled", "error", "flow", "has_result", "prefix", "result", "rounds", "state", "tg")

    def __init__(self, flow: TriggerFlow, prefix: str):
        self.flow = flow
        self.compiled: Compiled = flow.compile()
        self.prefix = prefix
        self.state: dict[str, Any] = {}
        self.result: Any = None
        self.has_result = False
        self.tg: Any = None
        self.error: BaseException | None = None
        self.collections: dict[str, dict[str, Any]] = {}
        self.rounds: dict[str, int] = {}

    def set_state(self, key: str, value: Any) -> None:
        value = _jsonable(value)  # state is data: the same live and when rebuilt from history
        reducer = self.flow.reducers.get(key, "last")
        if reducer == "last":
            self.state[key] = value
        elif reducer == "list":
            self.state.setdefault(key, []).append(value)
        elif reducer == "dict":
            self.state.setdefault(key, {}).update(value)
        else:
            self.state[key] = reducer(self.state.get(key), value)  # type: ignore[operator]

    def arrive(self, name: str, key: str, value: Any) -> tuple[dict[str, Any], int] | None:
        expected = self.compiled.collect_keys[name]
        bucket = self.collections.setdefault(name, {})
        bucket[key] = value
        if len(bucket) < len(expected):
            return None
        del self.collections[name]
        rnd = self.rounds.get(name, 0) + 1
        self.rounds[name] = rnd
        return {k: bucket[k] for k in expected}, rnd


class _State:
    """``ctx.state``: reads and writes the flow's state; writes are recorded with the step."""

    __slots__ = ("_ctx",)

    def __init__(self, ctx: Context):
        self._ctx = ctx

    def get(self, key: str, default: Any = None) -> Any:
        return self._ctx._scope.state.get(key, default)

    def set(self, key: str, value: Any) -> None:
        ctx = self._ctx
        ctx._scope.set_state(key, value)
        ctx._sets.append([key, _jsonable(value)])

    def __getitem__(self, key: str) -> Any:
        return self._ctx._scope.state[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.set(key, value)

    def __delitem__(self, key: str) -> None:
        ctx = self._ctx
        del ctx._scope.state[key]  # a KeyError for a key that is not there, as a dict gives
        ctx._sets.append([key])  # one element: a deletion, replayed as one

    def __contains__(self, key: object) -> bool:
        return key in self._ctx._scope.state

    def to_dict(self) -> dict[str, Any]:
        return dict(self._ctx._scope.state)


class Context:
    """What a chunk receives: the value, state, emit, the runtime stream, waits, resources."""

    __slots__ = ("_deferred", "_emits", "_scope", "_sets", "_span", "_waits", "_x", "attempt", "path", "value")

    def __init__(self, x: FlowExecution, scope: _Scope, path: str, value: Any, attempt: int):
        self._x = x
        self._scope = scope
        self.path = path
        self.value = value
        self.attempt = attempt
        self._emits: list[list[Any]] = []
        self._sets: list[list[Any]] = []
        self._waits = 0
        self._span: str | None = None
        # chains started by emit() while the chunk has not yet suspended: the engine starts them
        # when it suspends or ends (the same moment a spawned task would first run); None = at once
        self._deferred: list[tuple[list[Op], Any, str]] | None = []

    @property
    def input(self) -> Any:
        """The same as ``value`` (Agently's name)."""
        return self.value

    @property
    def execution_id(self) -> str:
        return self._x.id

    @property
    def tenant(self) -> str:
        return self._x.tenant

    @property
    def runtime(self) -> Runtime:
        return self._x.runtime

    @property
    def trace_id(self) -> str:
        """The execution's trace id: pass it (with :attr:`span_id`) to work this step starts, so
        that a tracer shows that work inside the step (an agent run as a step gets both)."""
        return self._x._template.trace_id or ""

    @property
    def span_id(self) -> str:
        """This attempt's span id, the one its ``flow.step.*`` events carry."""
        if self._span is None:
            self._span = os.urandom(8).hex()
        return self._span

    @property
    def idempotency_key(self) -> str:
        """``<execution id>:<step path>:<attempt>``: hand it to side-effecting calls so that a step
        resumed after a crash (same attempt) is recognised by the system it calls."""
        return f"{self._x.id}:{self.path}:{self.attempt}"

    @property
    def state(self) -> _State:
        return _State(self)

    def emit(self, event: str, value: Any = None) -> None:
        """Start every ``when(event)`` chain with ``value`` (recorded with this step)."""
        k = len(self._emits)
        self._emits.append([event, _jsonable(value)])
        self._x._fire(self._scope, event, value, self.path, k + 1, self._deferred)

    async def async_emit(self, event: str, value: Any = None) -> None:
        self.emit(event, value)

    def put_into_stream(self, item: Any) -> None:
        """Put an item into the runtime stream (``execution.stream()``; events of kind ``flow.stream``)."""
        self._x._event("flow.stream", {"path": self.path, "item": _jsonable(item)})

    async def async_put_into_stream(self, item: Any) -> None:
        self.put_into_stream(item)

    def set_result(self, value: Any) -> None:
        """Make ``value`` the flow's result (as ``.end()`` does)."""
        self._scope.result = value
        self._scope.has_result = True

    def resource(self, name: str) -> Any:
        """A live resource given to ``create_execution``/``load`` (never serialized).

        The resource named ``"workspace"`` follows the flow's topology: inside a sub-flow it is
        the sub-flow's own child (``workspace.child(<sub-flow path>)``), so each role sub-flow
        writes its evidence apart while the parent keeps the shared one. Any object with a
        ``child(name)`` method works (keel-workspace's ``Workspace`` does); TriggerFlow imports none.
        """
        try:
            value = self._x._resources[name]
        except KeyError:
            raise MissingResourceError(
                f"step {self.path} needs the resource {name!r}, which this execution was not given; "
                f"pass resources={{{name!r}: ...}} to create_execution() or load()"
            ) from None
        if name == WORKSPACE_RESOURCE and self._scope.prefix and callable(getattr(value, "child", None)):
            return value.child(_scope_name(self._scope.prefix))
        return value

    require_resource = resource

    async def pause_for(
        self,
        name: str,
        payload: Any = None,
        *,
        timeout: float | None = None,
        on_timeout: str = "fail",
        default: Any = None,
    ) -> Any:
        """Wait for the signal ``name`` (an approval, an answer, any external event) and return
        its payload. The wait is durable: the process may exit; a resumed execution waits again
        (the code before the wait runs again, so keep it free of side effects or key them with
        ``idempotency_key``). On timeout: ``on_timeout="fail"`` raises :class:`WaitTimeout`,
        ``"continue"`` returns ``default``."""
        self._waits += 1
        return await self._x._wait(self.path, self._waits, name, _jsonable(payload), timeout, on_timeout, default)


class _Resumed:
    """Await a chunk's coroutine that already ran up to its first suspension (``signal``): the
    rest of it runs as if it had been awaited from the start (sends and throws pass through)."""

    __slots__ = ("coro", "signal")

    def __init__(self, coro: Any, signal: Any):
        self.coro = coro
        self.signal = signal

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, signal = self.coro, self.signal
        while True:
            try:
                sent = yield signal
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:
                try:
                    signal = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    signal = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


class _Pending:
    """An event nobody has received yet: built into a RuntimeEvent only when read (``events()``),
    so a run that nobody watches does not pay for building one per step."""

    __slots__ = ("kind", "level", "payload", "seq", "span", "time")

    def __init__(self, kind: str, payload: dict[str, Any], seq: int, level: str, span: str | None = None):
        self.kind = kind
        self.payload = payload
        self.seq = seq
        self.level = level
        self.span = span  # a step attempt's own span id (its parent: the execution's)
        self.time = time.time()


class _Waiting:
    __slots__ = ("event", "interrupt", "timed_out", "value")

    def __init__(self, interrupt: Interrupt):
        self.interrupt = interrupt
        self.event = anyio.Event()
        self.value: Any = None
        self.timed_out = False


class FlowExecution:
    """One run of a flow; implements :class:`keel.Execution`."""

    kind = "flow"

    def __init__(
        self,
        flow: TriggerFlow,
        runtime: Runtime | None,
        *,
        tenant: str = "default",
        execution_id: str | None = None,
        durability: Durability = "sync",
        resources: Mapping[str, Any] | None = None,
        step_events: bool = True,
        lease_ttl: float = 30.0,
    ):
        self.flow = flow
        self.runtime = runtime or Runtime()
        self.id = execution_id or new_id("flow")
        self.tenant = tenant
        self.durability: Durability = durability
        self._resources = dict(resources or {})
        self._step_events = step_events
        self._lease_ttl = lease_ttl
        self._status = ExecutionStatus.PENDING
        self._store: Store | None = None
        self._history: History | None = None
        self._lease: Lease | None = None
        self._input: Any = None
        self._result: Any = None
        self._error: BaseException | None = None
        self._root: _Scope | None = None
        self._finished = anyio.Event()
        self._settled = anyio.Event()  # finished, or waiting
        self._started = False
        self._stopped = anyio.Event()  # the driver returned (finished or detached)
        self._detaching = False
        self._cancel_scope: anyio.CancelScope | None = None
        self._cancel_reason: str | None = None
        self._tg: Any = None
        self.steps_completed = 0
        self._final_state: dict[str, Any] = {}
        # replay tables (filled by _load)
        self._replaying = False
        self._done: dict[str, dict[str, Any]] = {}
        self._failed: dict[str, dict[str, Any]] = {}
        self._attempts: dict[str, int] = {}
        self._decisions: dict[str, Any] = {}
        self._waits_recorded: dict[str, dict[str, Any]] = {}
        self._answers: dict[str, dict[str, Any]] = {}
        self._requests: dict[str, Any] = {}  # request id -> payload
        self._external: list[dict[str, Any]] = []
        self._loaded_end: dict[str, Any] | None = None
        self._inbox_after = 0  # the last inbox record applied
        self._driver_tg: Any = None  # the task group of the heartbeat and the inbox reader
        self._inbox_reading = False
        self._history_len = 0
        # live waits and events
        self._waiting: dict[str, _Waiting] = {}
        self._events: list[RuntimeEvent | _Pending] = []
        self._events_changed: anyio.Event | None = None
        self._template = RuntimeEvent(
            kind="flow", execution_id=self.id, trace_id=os.urandom(16).hex(), span_id=os.urandom(8).hex(),
            source="triggerflow", tenant=tenant,
        )  # fmt: skip
        self._missing = [r for r in flow.resources if r not in self._resources]
        self._opening = anyio.Lock()
        self._adopted = False  # found through keel_find_execution: a signal or cancel continues it here
        self._unresolved: str | None = None  # adopted without its definition: why it cannot continue
        self._active = 0  # chunks running now (a wait inside a chunk counts too)
        self._indexed_waiting = False
        self._loop_thread = threading.get_ident()
        self._iid_salt = self.id  # interrupt ids are unique per execution (histories of v1: not salted)

    # =================================================================== keel.Execution
    @property
    def status(self) -> ExecutionStatus:
        return self._status

    @property
    def running_here(self) -> bool:
        """Whether this process drives it now (a loaded or adopted one that waits for a signal,
        or that another process runs, does not)."""
        return self._started and not self._stopped.is_set()

    async def events(self, since: int = 0) -> AsyncIterator[RuntimeEvent]:
        """This execution's events after ``since``, live until it finishes; re-join by seq."""
        position = since
        while True:
            if self._events_changed is None:
                self._events_changed = anyio.Event()
            changed = self._events_changed
            events = self._events
            while position < len(events):
                event = events[position]
                if isinstance(event, _Pending):
                    built = events[position] = self._build(event)
                    event = built
                position += 1
                yield event
            if self._finished.is_set() or (self._detaching and self._settled.is_set()):
                return
            await changed.wait()

    async def stream(self, since: int = 0) -> AsyncIterator[Any]:
        """The runtime stream: the items chunks put with ``ctx.put_into_stream``."""
        async for event in self.events(since):
            if event.kind == "flow.stream":
                yield event.payload["item"]

    async def result(self) -> Any:
        """Wait for the end; return the result or raise what the execution failed with."""
        await self._finished.wait()
        if self._error is not None:
            raise self._error
        return self._result

    async def signal(self, name: str, payload: Any = None, *, request_id: str | None = None) -> None:
        """Answer the pending wait named ``name`` (the oldest, if several)."""
        if request_id is not None and request_id in self._requests:
            self._check_duplicate(request_id, payload)
            return
        if self._status.finished:
            raise FlowError(f"execution {self.id} is {self._status.value}: it waits for no signal")
        for interrupt in self.get_pending_interrupts():
            if interrupt.name == name:
                await self.continue_with(interrupt.id, payload, request_id=request_id)
                return
        if name in self.flow.compile().handlers:
            await self.emit(name, payload)
            return
        waiting = ", ".join(sorted({i.name for i in self.get_pending_interrupts()})) or "nothing"
        raise FlowError(f"execution {self.id} is not waiting for {name!r} (it is waiting for: {waiting})")

    async def cancel(self, reason: str = "cancelled") -> None:
        """Cancel every running branch; the execution ends ``cancelled``, recorded in its history
        before this returns (also when it waits, or was released at a wait by ``run()``/``close()``).
        An execution that another live process owns is a :class:`LeaseError`: cancel it there."""
        if self._status.finished:
            return
        self._cancel_reason = reason
        if self._started and not self._stopped.is_set():  # running in this process
            if self._cancel_scope is not None:
                self._cancel_scope.cancel()
            await self._finished.wait()
            return
        # not running here (loaded, adopted, or released at a wait): end it from its history
        if self._replaying or self._stopped.is_set():
            await self._open_history(None)
        await self._finish(ExecutionStatus.CANCELLED, None, FlowError(f"execution {self.id} cancelled: {reason}"))

    # =================================================================== TriggerFlow API
    def get_pending_interrupts(self) -> list[Interrupt]:
        if self._status.finished:
            return []
        live = [w.interrupt for w in self._waiting.values() if not w.event.is_set()]
        known = {i.id for i in live}
        for iid, rec in self._waits_recorded.items():
            if iid not in known and iid not in self._answers:
                live.append(
                    Interrupt(
                        id=iid, name=rec["n"], payload=rec.get("payload"), path=rec["p"], deadline=rec.get("deadline")
                    )
                )
        return live

    def is_waiting(self) -> bool:
        return self._status is ExecutionStatus.WAITING

    async def continue_with(
        self, interrupt_id: str, value: Any = None, *, request_id: str | None = None, _inbox: int | None = None
    ) -> None:
        """Answer one interrupt. A repeated ``request_id`` is a no-op (with the same value) or a
        :class:`keel.ConflictError` (with another); an interrupt that is not waiting is an error.

        When another live process owns the execution, the answer goes to the execution's inbox in
        the store and that process applies it (with the same checks)."""
        if request_id is not None and request_id in self._requests:
            self._check_duplicate(request_id, value)
            return
        if self._unresolved is not None:
            raise FlowError(self._unresolved)
        pending = {i.id for i in self.get_pending_interrupts()}
        if interrupt_id not in pending:
            state = "already answered" if interrupt_id in self._answers else "unknown"
            raise FlowError(f"interrupt {interrupt_id!r} of execution {self.id} is not waiting ({state})")
        request_id = request_id or new_id("req")
        value = _jsonable(value)
        record = {"t": "sig", "i": interrupt_id, "r": request_id, "v": value}
        if _inbox is not None:
            record["x"] = _inbox
            self._inbox_after = _inbox
        if self._history is None and self.durability != "none":
            try:
                await self._open_history(None)
            except LeaseError:
                store = self._store or self.runtime.store()
                if not await self._answered_in_inbox(store, interrupt_id, request_id, value):
                    await store.append(
                        self.tenant, inbox_name(self.id), [{"i": interrupt_id, "r": request_id, "v": value}]
                    )
                    # the row says 'running' from now on: a restart resumes it, and its inbox is applied
                    seq = await store.last_seq(self.tenant, stream_name(self.id))
                    await write_index(store, self.tenant, self.id, seq=seq, status="running")
                # not in self._requests: if this object takes the execution over, its inbox reader
                # must apply the answer, not take it for a duplicate (a repeat is checked in the inbox)
                if self._adopted and self.runtime.started:
                    # the owner may be a process that died a moment ago: take over once its lease expires
                    from keel_triggerflow._adopt import resume_if_orphaned

                    await resume_if_orphaned(self.runtime, self)
                return
        if self._history is not None:
            await self._commit_answer(record)
        self._requests[request_id] = value
        self._answers[interrupt_id] = record
        waiting = self._waiting.pop(interrupt_id, None)
        if waiting is not None:
            waiting.value = value
            waiting.event.set()
            if not self._waiting and self._status is ExecutionStatus.WAITING:
                self._status = ExecutionStatus.RUNNING  # at once: a close() right after must wait for the end
                self._settled = anyio.Event()
        self._event("flow.signal", {"interrupt": interrupt_id, "request_id": request_id})
        if self._adopted and not self._started and self.runtime.started:
            await self.start(self._input)  # adopted while waiting: the answer continues it here

    async def _answered_in_inbox(self, store: Store, interrupt_id: str, request_id: str, value: Any) -> bool:
        """Check an answer against the ones already in the inbox, as the owner will: the same
        request id is a no-op with the same payload and a :class:`keel.ConflictError` with another,
        told to this caller (the owner only logs what it rejects). Another answer to the same
        interrupt, with another request id, is refused too."""
        for record in await store.read(self.tenant, inbox_name(self.id), after=self._inbox_after):
            data = record.data
            if data.get("r") == request_id:
                if data.get("v") != value or data.get("i") != interrupt_id:
                    raise ConflictError(
                        f"request id {request_id!r} was already used with another payload on execution {self.id}; "
                        "use a new request id for a new answer"
                    )
                return True
            if data.get("i") == interrupt_id:
                raise FlowError(
                    f"interrupt {interrupt_id!r} of execution {self.id} is not waiting (already answered by "
                    f"request {data.get('r')!r}, on its way to the process that runs it)"
                )
        return False

    async def emit(self, event: str, value: Any = None) -> None:
        """Deliver an external event to the running execution's ``when(event)`` chains."""
        if self._root is None or self._status.finished:
            raise FlowError(f"execution {self.id} is not running; events can only reach a running execution")
        k = len(self._external) + 1
        record = {"t": "ev", "n": event, "v": _jsonable(value), "k": k}
        self._external.append(record)
        if self._history is not None:
            await self._history.commit(record, force=True)
        self._fire(self._root, event, value, "ext", k)

    async def start(self, input: Any = None) -> FlowExecution:
        """Start running in the background (the runtime's task group, or this execution's own
        when used as ``async with``); returns at once."""
        tg = self._tg
        if tg is None:
            try:
                tg = self.runtime.task_group
            except KeelError:
                raise FlowError(
                    "start() runs the execution in the background, which needs a started runtime "
                    "('async with runtime:') or 'async with flow.create_execution() as execution:'; "
                    "or use 'await execution.run(input)' to run it in this task"
                ) from None
        self._input = input
        if await self._prepare():
            tg.start_soon(self._drive)
        return self

    async def resume(self) -> FlowExecution:
        """Continue a loaded execution in the background (completed steps are not run again)."""
        return await self.start(self._input)

    async def run(self, input: Any = None, *, through_timed_waits: bool = False) -> CloseSnapshot:
        """Run in this task until the execution finishes or waits; then return a snapshot.

        :param through_timed_waits: do not return at a wait with a timeout: it ends by itself
            (answered or timed out), so keep running (what ``flow.run()`` does)."""
        if not self._replaying:
            self._input = input
        if not await self._prepare():
            return self.snapshot()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._drive)
            if through_timed_waits:
                await self._settle_untimed()
            else:
                await self._settled.wait()
            if not self._finished.is_set():
                self._detach()
        return self.snapshot()

    async def _settle_untimed(self) -> None:
        """Until the execution finishes or waits for a signal with no deadline: a timed wait ends
        by itself (answered or timed out), so ``run()`` waits it out."""
        while True:
            await self._settled.wait()
            if self._finished.is_set() or self._detaching:
                return
            pending = self.get_pending_interrupts()
            deadlines = [i.deadline for i in pending]
            if not pending or None in deadlines:
                return
            nearest = min(d for d in deadlines if d is not None)
            await anyio.sleep(max(0.0, nearest - time.time()) + 0.005)

    def _has_expired_wait(self) -> bool:
        now = time.time()
        return any(i.deadline is not None and i.deadline <= now for i in self.get_pending_interrupts())

    async def close(self) -> CloseSnapshot:
        """Wait until finished or waiting, then return the close snapshot. A waiting execution is
        released (its lease too): another process can resume it from the store."""
        if self._started:
            await self._settled.wait()
            if not self._finished.is_set():
                self._detach()
                await self._stopped.wait()
        return self.snapshot()

    def snapshot(self) -> CloseSnapshot:
        root = self._root
        return CloseSnapshot(
            execution_id=self.id,
            flow=self.flow.name,
            status=self._status.value,
            result=self._result,
            error=str(self._error) if self._error else None,
            state=dict(root.state) if root else dict(self._final_state),
            steps_completed=self.steps_completed,
            pending_interrupts=self.get_pending_interrupts(),
            history_records=self._history.seq if self._history else self._history_len,
        )

    async def __aenter__(self) -> FlowExecution:
        self._own_tg = anyio.create_task_group()
        self._tg = await self._own_tg.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._started and not self._settled.is_set() and exc[0] is None:
            await self._settled.wait()
        if self._started and not self._finished.is_set():
            self._detach()
        await self._own_tg.__aexit__(*exc)  # type: ignore[arg-type]
        self._tg = None

    # =================================================================== loading
    async def _load(self) -> None:
        store = self._store = self.runtime.store()
        records = await store.read(self.tenant, stream_name(self.id))
        if not records:
            raise KeelError(f"no execution {self.id!r} for tenant {self.tenant!r} in the store")
        first = records[0].data
        if first.get("flow") != self.flow.name:
            raise FlowError(f"execution {self.id} belongs to flow {first.get('flow')!r}, not {self.flow.name!r}")
        self.durability = first.get("dur", self.durability)
        self._input = first.get("input")
        if first.get("v", 1) < 2:
            self._iid_salt = ""
        for rec in records:
            data = rec.data
            t = data["t"]
            if t == "c":
                self._done[data["p"]] = data
            elif t == "x":
                self._attempts[data["p"]] = data["a"]
            elif t == "f":
                self._failed[data["p"]] = data
            elif t == "d":
                self._decisions[data["p"]] = data["v"]
            elif t == "w":
                self._waits_recorded[data["i"]] = data
            elif t == "sig":
                self._answers[data["i"]] = data
                self._requests[data["r"]] = data.get("v")
                self._inbox_after = max(self._inbox_after, data.get("x", 0))
            elif t == "ev":
                self._external.append(data)
            elif t == "end":
                self._loaded_end = data
        self._history_len = len(records)
        self._replaying = True
        self.steps_completed = len(self._done)  # until a run replays them
        if self._loaded_end is not None:
            self._status = ExecutionStatus(self._loaded_end["status"])
            self._result = self._loaded_end.get("o")
            self._final_state = self._loaded_end.get("state", {})
            self.steps_completed = len(self._done)
            if self._status is not ExecutionStatus.COMPLETED:
                self._error = FlowError(self._loaded_end.get("error") or self._status.value)
            self._finished.set()
            self._settled.set()
        else:
            self._status = ExecutionStatus.WAITING if self.get_pending_interrupts() else ExecutionStatus.RUNNING
            self._indexed_waiting = self._status is ExecutionStatus.WAITING  # what the index row says

    def _reset(self) -> None:
        self._started = False
        self._detaching = False
        self._stopped = anyio.Event()
        self._settled = anyio.Event()
        self._cancel_scope = None
        self._root = None
        self._waiting = {}
        self._done, self._failed, self._attempts, self._decisions = {}, {}, {}, {}
        self._waits_recorded, self._answers, self._requests, self._external = {}, {}, {}, []
        self._inbox_after = 0

    async def _open_history(self, input: Any) -> None:
        """Take the lease and open the history writer (a new execution writes its start record)."""
        if self.durability == "none" or self._history is not None:
            return
        async with self._opening:  # a signal and a resume may open it at once: one lease, one owner
            if self._history is None:
                await self._take_history(input)

    async def _take_history(self, input: Any) -> None:
        store = self._store = self._store or self.runtime.store()
        lease = Lease(store, self.tenant, self.id, new_id("owner"), self._lease_ttl)
        await lease.acquire()  # only a lease actually held becomes this execution's
        self._lease = lease
        seq = await store.last_seq(self.tenant, stream_name(self.id))
        self._history = History(store, self.tenant, self.id, seq, self.durability, self._lease)
        if seq == 0:
            start = {"t": "start", "flow": self.flow.name, "input": _jsonable(input), "dur": self.durability, "v": 2}
            if self.flow.ref:
                start["ref"] = self.flow.ref
            if self.flow.definition is not None:
                start["def"] = self.flow.definition
            # one transaction: no crash leaves a started execution out of the index
            await self._history.commit_with_index(start, flow=self.flow.name, status="running", ref=self.flow.ref)

    # =================================================================== driving
    async def _prepare(self) -> bool:
        """Check, take the lease and open the history; ``False`` when there is nothing to run."""
        if self._started:
            if not self._stopped.is_set() or self._finished.is_set():
                raise FlowError(f"execution {self.id} was already started")
            # it was released while waiting: continue from its own history, as another process would
            if self.durability == "none":
                raise FlowError(
                    f"execution {self.id} ran with durability='none', so nothing is kept to continue it from; "
                    "use start() and answer while it waits, or a durable mode"
                )
            self._reset()
            await self._load()
        if self._unresolved is not None:
            raise FlowError(self._unresolved)
        if self._missing and self._loaded_end is None:
            names = ", ".join(repr(m) for m in self._missing)
            missing = MissingResourceError(
                f"flow {self.flow.name!r} needs the live resource(s) {names}, not given to this execution "
                f"(pass resources={{...}} to create_execution() or load(), or put them in runtime.resources "
                "for executions the runtime adopts)"
            )
            if not self._adopted:
                raise missing
            # adopted by a service: this one execution fails, saying which resource; the others go on
            await self._open_history(None)
            self._started = True
            await self._finish(ExecutionStatus.FAILED, None, missing)
            return False
        self.flow.compile()
        if self._loaded_end is not None:
            self._started = True
            return False
        await self._open_history(self._input)
        self._started = True
        self.runtime.executions.add(self)
        return True

    async def _drive(self) -> None:
        self._loop_thread = threading.get_ident()
        self._status = ExecutionStatus.RUNNING
        self.steps_completed = 0
        self._event("execution.started", {"flow": self.flow.name, "resumed": self._replaying, "input": self._input})
        root = self._root = _Scope(self.flow, "")
        try:
            await self._drive_scope(root)
        except anyio.get_cancelled_exc_class():
            # cancelled from outside (runtime shutdown, a caller's timeout): leave it resumable
            with anyio.CancelScope(shield=True):
                await self._release()
            self._settled.set()
            self._stopped.set()
            self._notify()
            raise

    async def _drive_scope(self, root: _Scope) -> None:
        status, result, error = ExecutionStatus.COMPLETED, None, None
        with anyio.CancelScope() as cancel_scope:
            self._cancel_scope = cancel_scope
            if self._cancel_reason:  # cancelled between start() and here
                cancel_scope.cancel()
            async with anyio.create_task_group() as tg:
                if self._lease is not None:
                    tg.start_soon(self._heartbeat)
                self._driver_tg, self._inbox_reading = tg, False
                if self.get_pending_interrupts():  # resumed while waiting: answers may be in the inbox
                    self._start_inbox()
                try:
                    if self.flow.input_model is not None:
                        self._input = self.flow.input_model.model_validate(self._input)
                    result = await self._run_scope(root, self._input, "")
                    if self.flow.output_model is not None:
                        result = self.flow.output_model.model_validate(result)
                except Exception as err:
                    status, error = ExecutionStatus.FAILED, err
                tg.cancel_scope.cancel()  # the heartbeat (and the inbox reader)
            self._driver_tg = None
        if self._detaching:
            with anyio.CancelScope(shield=True):
                if self._store is not None and self._history is not None:
                    seq = self._history.seq
                    await write_index(self._store, self.tenant, self.id, seq=seq, **self._index_fields())
            await self._release()
            self._settled.set()
            self._stopped.set()
            self._notify()
            return
        if isinstance(self._error, LeaseError):
            status, error = ExecutionStatus.FAILED, self._error
        elif cancel_scope.cancelled_caught or (self._cancel_reason and status is not ExecutionStatus.COMPLETED):
            status, error = (
                ExecutionStatus.CANCELLED,
                FlowError(f"execution {self.id} cancelled: {self._cancel_reason}"),
            )
        with anyio.CancelScope(shield=True):
            await self._finish(status, result, error)

    async def _finish(self, status: ExecutionStatus, result: Any, error: BaseException | None) -> None:
        if isinstance(error, LeaseError):
            _log.warning("execution %s stopped in this process: %s", self.id, error)
        self._status = status
        self._result = _jsonable(result) if self._history is not None else result
        self._error = error
        if self._history is not None and not isinstance(error, LeaseError):
            end: dict[str, Any] = {"t": "end", "status": status.value}
            if self._root is not None and self._root.state:
                end["state"] = self._root.state
            if status is ExecutionStatus.COMPLETED:
                end["o"] = self._result
            else:
                end["error"] = str(error)
            try:  # one transaction: no crash leaves the row 'running' after the end
                await self._history.commit_with_index(end, status=status.value)
            except Exception as err:
                if error is None:
                    self._status, self._error = ExecutionStatus.FAILED, err
        await self._release()
        payload: dict[str, Any] = {"flow": self.flow.name, "steps": self.steps_completed}
        if error is not None:
            payload["error"] = f"{type(error).__name__}: {error}"
        elif self._status is ExecutionStatus.COMPLETED:
            payload["output"] = self._result
        self._event(f"execution.{self._status.value}", payload, level="error" if error else "info")
        self._finished.set()
        self._settled.set()
        self._stopped.set()
        self._notify()

    def _detach(self) -> None:
        if self._cancel_reason:
            return  # a cancel ends it: nothing to leave for another process
        self._detaching = True
        if self._cancel_scope is not None:
            self._cancel_scope.cancel()

    async def _release(self) -> None:
        if self._lease is not None:
            with anyio.CancelScope(shield=True):
                try:
                    await self._history.flush() if self._history else None
                except Exception:
                    pass
                await self._lease.release()
            self._lease = None
            if self._history is not None:
                self._history_len = self._history.seq
            self._history = None

    def _start_inbox(self) -> None:
        """Follow the inbox from the first wait on. Another process writes there only to answer a
        wait recorded in the history, so an execution that never waits never reads it (and does
        not re-read it after each of its own appends, which wake the store's subscribers)."""
        if not self._inbox_reading and self._history is not None and self._driver_tg is not None:
            self._inbox_reading = True
            self._driver_tg.start_soon(self._read_inbox)

    async def _read_inbox(self) -> None:
        """Apply answers other processes left for this execution while this process owns it."""
        assert self._store is not None
        async for record in self._store.subscribe(self.tenant, inbox_name(self.id), after=self._inbox_after):
            data = record.data
            try:
                await self.continue_with(data["i"], data.get("v"), request_id=data.get("r"), _inbox=record.seq)
            except (FlowError, ConflictError) as err:
                self._event("flow.signal.rejected", {"interrupt": data.get("i"), "reason": str(err)}, level="warning")

    async def _heartbeat(self) -> None:
        assert self._lease is not None
        while True:
            await anyio.sleep(self._lease.ttl / 3)
            try:
                await self._lease.renew()
            except LeaseError as err:
                self._error = err
                if self._cancel_scope is not None:
                    self._cancel_reason = str(err)
                    self._cancel_scope.cancel()
                return

    # =================================================================== running ops
    async def _run_scope(self, scope: _Scope, value: Any, thread: str) -> Any:
        async with anyio.create_task_group() as tg:
            scope.tg = tg
            if scope is self._root:
                for record in self._external:  # external events of a resumed execution, in order
                    self._fire(scope, record["n"], record["v"], "ext", record["k"])
            try:
                out = await self._thread(scope, scope.compiled.main, value, thread)
            except Exception as err:
                if scope.error is None:
                    scope.error = err
                tg.cancel_scope.cancel()
        if scope.error is not None:
            raise scope.error
        if scope.has_result:
            return scope.result
        return None if out is STOP else out

    async def _run_subflow(self, flow: TriggerFlow, parent: _Scope, value: Any, prefix: str) -> Any:
        if flow.input_model is not None:
            value = flow.input_model.model_validate(_jsonable(value))
        self._event("flow.subflow.started", {"flow": flow.name, "path": prefix})
        out = await self._run_scope(_Scope(flow, prefix), value, prefix)
        if flow.output_model is not None:
            out = flow.output_model.model_validate(_jsonable(out))
        return out

    async def _thread(self, scope: _Scope, ops: list[Op], value: Any, thread: str) -> Any:
        out = await self._ops(scope, ops, value, thread, True)
        if type(out) is not Tail:
            return out
        own = out.own
        while type(out) is Tail:
            ops = out.ops
            if len(ops) == 1:  # a loop's usual shape: one chunk per event
                op = ops[0]
                if type(op) is Step and not self._replaying:
                    out = await self._call(op, scope, out.value, out.thread + op.sfx, True)
                else:
                    out = await op.run(self, scope, out.value, out.thread, True)
            else:
                out = await self._ops(scope, ops, out.value, out.thread, True)
        return own

    async def _spawned(self, scope: _Scope, ops: list[Op], value: Any, thread: str) -> None:
        try:
            await self._thread(scope, ops, value, thread)
        except Exception as err:
            if scope.error is None:
                scope.error = err
            scope.tg.cancel_scope.cancel()

    async def _ops(self, scope: _Scope, ops: list[Op], value: Any, thread: str, tail: bool) -> Any:
        last = len(ops) - 1
        fresh = not self._replaying
        for i, op in enumerate(ops):
            if fresh and type(op) is Step:  # what Step.run does when nothing is recorded, one call less
                value = await self._call(op, scope, value, thread + op.sfx, tail and i == last)
            else:
                value = await op.run(self, scope, value, thread, tail and i == last)
            if value is STOP:
                return STOP
        return value

    def _fire(
        self,
        scope: _Scope,
        event: str,
        value: Any,
        origin: str,
        k: int,
        defer: list[tuple[list[Op], Any, str]] | None = None,
    ) -> None:
        """Start every chain of ``event``: each in a task of its own, or, given ``defer`` (a
        running chunk's list), queued there for :meth:`_call` to start when the chunk suspends
        or ends."""
        handlers = scope.compiled.handlers.get(event)
        if self._step_events:
            self._event("flow.emit", {"event": event, "path": origin})
        if not handlers:
            return
        base = emit_thread(origin, event, k)
        if defer is not None and len(handlers) == 1 and handlers[0][1] is None:  # the common case
            defer.append((handlers[0][0], value, base))
            return
        for j, (ops, join) in enumerate(handlers):
            if join is not None:
                ready = scope.arrive(join, event, value)
                if ready is None:
                    continue
                full, rnd = ready
                job = (ops, full, thread_hash(scope.prefix, join, rnd))
            else:
                job = (ops, value, base if j == 0 else f"{base}.{j}")
            if defer is not None:
                defer.append(job)
            else:
                scope.tg.start_soon(self._spawned, scope, *job)

    def _start_deferred(self, scope: _Scope, ctx: Context) -> None:
        """Start the chains a chunk's emits queued, each in its own task; later emits start at once."""
        deferred, ctx._deferred = ctx._deferred, None
        if deferred:
            for job in deferred:
                scope.tg.start_soon(self._spawned, scope, *job)

    def _on_emit(self, scope: _Scope, event: str, origin: str) -> None:
        if self._step_events:
            self._event("flow.emit", {"event": event, "path": origin})

    async def _replay_step(self, scope: _Scope, key: str, rec: dict[str, Any]) -> Any:
        for write in rec.get("s", ()):
            if len(write) == 1:
                scope.state.pop(write[0], None)
            else:
                scope.set_state(write[0], write[1])
        for k, (event, value) in enumerate(rec.get("e", ()), start=1):
            self._fire(scope, event, value, key, k)
        if "r" in rec:
            result = rec["r"]
            if "result" in result:
                scope.result, scope.has_result = result["result"], True
        self.steps_completed += 1
        if "ref" in rec:
            assert self._store is not None
            out = json.loads(await self._store.get_blob(self.tenant, rec["ref"]))
        else:
            out = rec.get("o")
        return _revive(rec["m"], out) if "m" in rec else out

    async def _call(self, op: Step, scope: _Scope, value: Any, key: str, tail: bool = False) -> Any:
        if self._replaying:
            fail = self._failed.get(key)
            if fail is not None:
                err = fail["err"]
                raise StepFailed(key, err["type"], err["message"], fail["a"])
            attempt = self._attempts.get(key, 0) + 1
        else:
            attempt = 1
        history = self._history
        events = self._step_events
        self._active += 1
        try:
            while True:
                ctx = Context(self, scope, key, value, attempt)
                if events:
                    self._event(
                        "flow.step.started", {"path": key, "step": op.name, "attempt": attempt}, span=ctx.span_id
                    )
                try:
                    if op.is_async or self._lease is None:
                        out = op.fn(ctx)
                    else:  # a plain chunk may block: in a worker thread, the lease's heartbeat goes on
                        out = await anyio.to_thread.run_sync(op.fn, ctx)
                    if type(out) is CoroutineType:
                        # run it to its first suspension by hand: a chunk that ends without suspending
                        # (most do) lets its emits continue in this task instead of a new one each
                        try:
                            signal = out.send(None)
                        except StopIteration as stop:
                            out = stop.value
                        else:
                            self._start_deferred(scope, ctx)
                            out = await _Resumed(out, signal)
                    elif op.is_async or hasattr(out, "__await__"):
                        self._start_deferred(scope, ctx)
                        out = await out
                    break
                except Exception as err:
                    self._start_deferred(scope, ctx)  # what it emitted before failing runs, as it always did
                    if isinstance(err, (LeaseError, MissingResourceError)):
                        raise
                    info = self._error_info(err)
                    if attempt <= op.retries:
                        if history is not None:
                            history.add({"t": "x", "p": key, "a": attempt, "err": info})
                        if events:  # the attempt's end: tracers close its span, UIs show the retry
                            self._event(
                                "flow.step.retry", {"path": key, "step": op.name, "attempt": attempt, "error": info},
                                level="warning", span=ctx.span_id,
                            )  # fmt: skip
                        attempt += 1
                        continue
                    if history is not None:
                        await history.commit({"t": "f", "p": key, "a": attempt, "err": info})
                    if events:
                        self._event(
                            "flow.step.failed",
                            {"path": key, "step": op.name, "error": info},
                            level="error",
                            span=ctx.span_id,
                        )
                    raise StepFailed(key, info["type"], info["message"], attempt) from err
        finally:
            self._active -= 1
            if self._waiting and not self._indexed_waiting:
                self._index_if_waiting()
        deferred = ctx._deferred
        if deferred:
            if tail and history is None and len(deferred) == 1:
                ctx._deferred = None  # the one chain continues in this task once the step is done
            else:
                self._start_deferred(scope, ctx)  # before the commit, as a spawned task would run
                deferred = None
        else:
            ctx._deferred = None
        if history is not None:
            await self._record_completion(history, key, out, ctx, scope)
        self.steps_completed += 1
        if events:
            self._event("flow.step.completed", {"path": key, "step": op.name}, span=ctx.span_id)
        if deferred:
            ops, start, thread = deferred[0]
            return Tail(ops, start, thread, out)
        return out

    async def _record_completion(self, history: History, key: str, out: Any, ctx: Context, scope: _Scope) -> None:
        data = _jsonable(out)
        record: dict[str, Any] = {"t": "c", "p": key, "o": data}
        if data is not None and not isinstance(data, (int, float, bool)):
            try:
                text = json.dumps(data)
            except (TypeError, ValueError) as err:
                raise FlowError(
                    f"step {key} returned a value that cannot be stored ({err}); return JSON-compatible data "
                    "(dicts, lists, strings, numbers, pydantic models) or store bytes with the store's put_blob()"
                ) from err
            if len(text) > BLOB_THRESHOLD:
                assert self._store is not None
                ref = await self._store.put_blob(self.tenant, text.encode(), "application/json")
                record = {"t": "c", "p": key, "ref": ref.sha256}
        if isinstance(out, BaseModel):  # replay gives back the model, not a dict
            record["m"] = f"{type(out).__module__}:{type(out).__qualname__}"
        if ctx._sets:
            record["s"] = ctx._sets
        if ctx._emits:
            record["e"] = ctx._emits
        if scope.has_result and scope is self._root:
            record["r"] = {"result": _jsonable(scope.result)}
        await history.commit(record)

    @staticmethod
    def _error_info(err: BaseException) -> dict[str, str]:
        if isinstance(err, StepFailed):
            return {"type": err.error_type, "message": err.message}
        return {"type": type(err).__name__, "message": str(err)}

    # =================================================================== waits
    async def _wait(
        self, path: str, n: int, name: str, payload: Any, timeout: float | None, on_timeout: str, default: Any
    ) -> Any:
        iid = (
            "i" + thread_hash(self._iid_salt, path, name, n)[1:]
            if self._iid_salt
            else "i" + thread_hash(path, name, n)[1:]
        )
        answer = self._answers.get(iid)
        if answer is None:
            recorded = self._waits_recorded.get(iid)
            deadline = (
                recorded.get("deadline") if recorded else (time.time() + timeout if timeout is not None else None)
            )
            interrupt = Interrupt(id=iid, name=name, payload=payload, path=path, deadline=deadline)
            waiting = self._waiting[iid] = _Waiting(interrupt)
            self._start_inbox()
            if recorded is None:
                record = {"t": "w", "p": path, "i": iid, "n": name, "payload": payload, "deadline": deadline}
                self._waits_recorded[iid] = record
                if self._history is not None:
                    await self._history.commit(record, force=True)
            if deadline is None or deadline > time.time():
                self._set_waiting()
            try:
                if deadline is None:
                    await waiting.event.wait()
                else:
                    with anyio.move_on_after(max(0.0, deadline - time.time())):
                        await waiting.event.wait()
                    if not waiting.event.is_set():
                        record = {"t": "sig", "i": iid, "r": f"timeout:{iid}", "to": True}
                        self._answers[iid] = record
                        if self._history is not None:
                            await self._commit_answer(record)
                        self._event("flow.wait.timeout", {"interrupt": iid, "name": name})
            finally:
                self._waiting.pop(iid, None)
                if not self._waiting and self._status is ExecutionStatus.WAITING and not self._detaching:
                    self._status = ExecutionStatus.RUNNING
                    self._settled = anyio.Event()
            answer = self._answers[iid]
        if answer.get("to"):
            if on_timeout == "continue":
                return default
            raise WaitTimeout(f"wait {name!r} at {path} timed out")
        return answer.get("v")

    def _set_waiting(self) -> None:
        if self._status is not ExecutionStatus.WAITING:
            self._status = ExecutionStatus.WAITING
            pending = [i.model_dump() for i in self.get_pending_interrupts()]
            self._event("execution.waiting", {"interrupts": pending})
        self._index_if_waiting()
        self._settled.set()

    def _index_if_waiting(self) -> None:
        """Mark the index row ``waiting`` (with the nearest deadline) once every running chunk is
        at a wait: start-up adoption resumes only ``running`` rows, so a row must not say
        ``waiting`` while another branch still has work to finish."""
        if (
            self._status is ExecutionStatus.WAITING
            and not self._indexed_waiting
            and self._active <= len(self._waiting)
            and self._store is not None
            and self._history is not None
        ):
            self._indexed_waiting = True
            seq = self._history.seq  # taken now: the write runs later, maybe after newer ones
            self._root_tg_call(write_index, self._store, self.tenant, self.id, seq=seq, **self._index_fields())

    def _index_fields(self) -> dict[str, Any]:
        """The index row's status, and for a waiting execution its nearest deadline (start-up
        adoption arms one timer from these, without reading any history)."""
        fields: dict[str, Any] = {"status": self._status.value}
        if self._status is ExecutionStatus.WAITING:
            deadlines = [i.deadline for i in self.get_pending_interrupts() if i.deadline is not None]
            if deadlines:
                fields["deadline"] = min(deadlines)
        return fields

    async def _commit_answer(self, record: dict[str, Any]) -> None:
        """Record an answer or a timeout; when the index says ``waiting``, it says ``running`` again
        in the same transaction (a crash from here on must leave the execution to resume)."""
        assert self._history is not None
        if self._indexed_waiting:
            self._indexed_waiting = False
            await self._history.commit_with_index(record, status="running")
        else:
            await self._history.commit(record, force=True)

    def _root_tg_call(self, fn: Any, *args: Any, **kwargs: Any) -> None:
        root = self._root
        if root is not None and root.tg is not None:

            async def call() -> None:
                try:
                    await fn(*args, **kwargs)
                except Exception:
                    pass  # the index is a convenience; the history is the truth

            root.tg.start_soon(call)

    def _check_duplicate(self, request_id: str, payload: Any) -> None:
        if self._requests[request_id] != _jsonable(payload):
            raise ConflictError(
                f"request id {request_id!r} was already used with another payload on execution {self.id}; "
                "use a new request id for a new answer"
            )

    # =================================================================== events
    def _event(self, kind: str, payload: dict[str, Any], level: str = "info", span: str | None = None) -> None:
        if threading.get_ident() != self._loop_thread:  # from a plain chunk in its worker thread
            anyio.from_thread.run_sync(self._event, kind, payload, level, span)
            return
        events = self._events
        pending = _Pending(kind, payload, len(events) + 1, level, span)
        bus = self.runtime.bus
        if bus.has_listeners:
            event = self._build(pending)
            events.append(event)
            bus.publish(event)
        else:  # nobody would receive it now: build it when events() reads it
            events.append(pending)
        if self._events_changed is not None:
            self._notify()

    def _build(self, pending: _Pending) -> RuntimeEvent:
        # a copy of a per-execution template: 2-3x cheaper than building a RuntimeEvent field by field
        update = {
            "id": f"{self.id}.{pending.seq}",
            "kind": pending.kind,
            "time": pending.time,
            "seq": pending.seq,
            "level": pending.level,
            "payload": pending.payload,
        }
        if pending.span is not None:
            update["span_id"] = pending.span
            update["parent_span_id"] = self._template.span_id
        return self._template.model_copy(update=update)

    def _notify(self) -> None:
        changed = self._events_changed
        if changed is not None:
            self._events_changed = None
            changed.set()

    def __repr__(self) -> str:
        return f"<FlowExecution {self.id} flow={self.flow.name!r} status={self._status.value}>"
