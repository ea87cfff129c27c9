"""One execution of a flow: the local (anyio, in-process) engine.

Durability is history replay with memoized steps: every completed step's output is a history
record; on load the flow's control logic runs again from the start, and each step whose record
exists returns its recorded output (and re-applies its recorded state writes and emits) instead of
running. Decisions of conditions are recorded too, so they are not re-evaluated. Nothing re-reads
the history per step: it is read once, on load.

The engine's parts, one job each: :class:`FlowExecution` (here) is the :class:`keel.Execution`
API and the lifecycle of a run; ``_replay`` holds what a loaded history says; ``_journal`` writes
the history under a lease, follows the inbox and keeps the index row; ``_interpreter`` runs the
ops; ``_waits`` holds the waits; ``_events`` the event log; ``_context`` is what a chunk sees.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio

import keel.budgets
import keel.draws
from keel import ConflictError, ExecutionStatus, KeelError, Runtime, RuntimeEvent, new_id
from keel_triggerflow._clock import clock_of
from keel_triggerflow._context import Context, Scope
from keel_triggerflow._events import FlowEvents
from keel_triggerflow._history import stream_name
from keel_triggerflow._interpreter import Interpreter
from keel_triggerflow._journal import Journal
from keel_triggerflow._records import Answer, EndRecord, ExternalEvent
from keel_triggerflow._replay import Replay
from keel_triggerflow._values import jsonable
from keel_triggerflow._waits import Waits
from keel_triggerflow.types import CloseSnapshot, Durability, FlowError, Interrupt, LeaseError, MissingResourceError

if TYPE_CHECKING:
    from keel_triggerflow.flow import TriggerFlow

__all__ = ["Context", "FlowExecution"]

_log = logging.getLogger("keel_triggerflow")


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
        self._status = ExecutionStatus.PENDING
        self._input: Any = None
        self._result: Any = None
        self._error: BaseException | None = None
        self._raised: BaseException | None = None  # the error result() raises, with its traceback then
        self._raised_tb: TracebackType | None = None
        self._finished = anyio.Event()
        self._settled = anyio.Event()  # finished, or waiting
        self._started = False
        self._stopped = anyio.Event()  # the driver returned (finished or detached)
        self._preparing = anyio.Lock()  # a timer's resume and a reader's at once: one driver
        self._detaching = False
        self._cancel_scope: anyio.CancelScope | None = None
        self._cancel_reason: str | None = None
        self._tg: Any = None
        self.steps_completed = 0
        self._final_state: dict[str, Any] = {}
        self._replay = Replay()  # what the loaded history says (filled by _load)
        self._answering = anyio.Lock()  # continue_with: one answer applied at a time
        self._journal = Journal(self, lease_ttl)
        self._waits = Waits(self)
        self._events = FlowEvents(self.id, tenant, self.runtime.bus)
        self.clock = clock_of(self.runtime)  # what wait deadlines are measured against
        self._interp: Interpreter | None = None  # while a drive runs (or ran last)
        self._missing = [r for r in flow.resources if r not in self._resources]
        self._adopted = False  # found through keel_find_execution: a signal or cancel continues it here
        self._unresolved: str | None = None  # adopted without its definition: why it cannot continue
        self._following = False  # another process runs it: _follow reads its history as it grows
        self._items_after = 0  # the last record of its /stream log a follower turned into events

    # the parts other modules of this package read (adoption, the CLI)
    @property
    def _inbox_after(self) -> int:
        return self._replay.inbox_after

    @property
    def _replaying(self) -> bool:
        return self._replay.replaying

    @property
    def _root(self) -> Scope | None:
        return self._interp.root if self._interp is not None else None

    def _event(self, kind: str, payload: dict[str, Any], level: str = "info", span: str | None = None) -> None:
        self._events.add(kind, payload, level, span)

    def _has_expired_wait(self) -> bool:
        return self._waits.has_expired()

    # =================================================================== keel.Execution
    @property
    def status(self) -> ExecutionStatus:
        return self._status

    @property
    def running_here(self) -> bool:
        """Whether this process drives it now (a loaded or adopted one that waits for a signal,
        or that another process runs, does not)."""
        return self._started and not self._stopped.is_set()

    def events(self, since: int = 0) -> AsyncIterator[RuntimeEvent]:
        """This execution's events after ``since`` (a negative one reads from the start), live
        until it finishes; re-join by seq."""
        return self._events.follow(since, self._ended_for_readers)

    def _ended_for_readers(self) -> bool:
        return self._finished.is_set() or (self._detaching and self._settled.is_set())

    async def stream(self, since: int = 0) -> AsyncIterator[Any]:
        """The runtime stream: the items chunks put with ``ctx.put_into_stream``."""
        async for event in self.events(since):
            if event.kind == "flow.stream":
                yield event.payload["item"]

    async def result(self) -> Any:
        """Wait for the end; return the result or raise what the execution failed with."""
        await self._finished.wait()
        error = self._error
        if error is not None:  # raised as first seen here: raising it again adds the caller's frames to it
            if self._raised is not error:
                self._raised, self._raised_tb = error, error.__traceback__
            raise error.with_traceback(self._raised_tb)
        return self._result

    async def signal(self, name: str, payload: Any = None, *, request_id: str | None = None) -> None:
        """Answer the pending wait named ``name`` (the oldest, if several)."""
        if request_id is not None and request_id in self._replay.requests:
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
        if self._replay.replaying or self._stopped.is_set():
            await self._journal.open(None)
            if self._status.finished:
                return  # another process ended it since this object read it
        await self._finish(ExecutionStatus.CANCELLED, None, FlowError(f"execution {self.id} cancelled: {reason}"))

    # =================================================================== TriggerFlow API
    def get_pending_interrupts(self) -> list[Interrupt]:
        return self._waits.pending()

    def is_waiting(self) -> bool:
        return self._status is ExecutionStatus.WAITING

    async def continue_with(
        self, interrupt_id: str, value: Any = None, *, request_id: str | None = None, _inbox: int | None = None
    ) -> None:
        """Answer one interrupt. A repeated ``request_id`` is a no-op (with the same value) or a
        :class:`keel.ConflictError` (with another); an interrupt that is not waiting is an error.

        When another live process owns the execution, the answer goes to the execution's inbox in
        the store and that process applies it (with the same checks)."""
        # one answer at a time: the check for a repeated request id and the commit of the answer
        # are one step, or a caller's direct answer and its retry through the inbox (applied by
        # the inbox reader) both pass the check while the first commit awaits, and both apply
        async with self._answering:
            await self._continue_with(interrupt_id, value, request_id=request_id, _inbox=_inbox)

    async def _continue_with(
        self, interrupt_id: str, value: Any, *, request_id: str | None, _inbox: int | None
    ) -> None:
        replay = self._replay
        if _inbox is not None and _inbox <= replay.inbox_after:
            return  # this inbox record is applied already (a reader started again reads it again)
        if request_id is not None and request_id in replay.requests:
            if _inbox is not None:
                replay.inbox_after = _inbox  # a repeat another process wrote: read past it
            self._check_duplicate(request_id, value)  # the owner logs a conflict as rejected
            return
        if self._unresolved is not None:
            raise FlowError(self._unresolved)
        pending = {i.id for i in self.get_pending_interrupts()}
        if interrupt_id not in pending:
            state = "already answered" if interrupt_id in replay.answers else "unknown"
            raise FlowError(f"interrupt {interrupt_id!r} of execution {self.id} is not waiting ({state})")
        request_id = request_id or new_id("req")
        value = jsonable(value)
        record: Answer = {"t": "sig", "i": interrupt_id, "r": request_id, "v": value}
        if _inbox is not None:
            record["x"] = _inbox
            replay.inbox_after = _inbox
        journal = self._journal
        if journal.history is None and self.durability != "none":
            try:
                if await journal.open(None):
                    # another process moved it on since this object read it: judge the answer again
                    return await self._continue_with(interrupt_id, value, request_id=request_id, _inbox=_inbox)
            except LeaseError:
                await journal.answer_through_inbox(interrupt_id, request_id, value)
                return
        if journal.history is not None:
            await journal.commit_answer(record)
        replay.requests[request_id] = value
        replay.answers[interrupt_id] = record
        self._waits.answer(interrupt_id, value)
        self._events.add("flow.signal", {"interrupt": interrupt_id, "request_id": request_id, "value": value})
        if self._adopted and not self._started and self.runtime.started:
            await self.start(self._input)  # adopted while waiting: the answer continues it here

    def _draw(self, kind: str, real: Any) -> Any:
        """A clock reading, random number or id a step takes (``keel.draws``): the runtime's
        ``draw_source`` serves it in a replay, else it is drawn; recorded as a ``draw`` event."""
        source = self.runtime.draw_source
        value = real() if source is None else source(self, kind)
        self._events.add("draw", {"kind": kind, "value": value})  # from a worker thread too
        return value

    def _check_duplicate(self, request_id: str, payload: Any) -> None:
        if self._replay.requests[request_id] != jsonable(payload):
            raise ConflictError(
                f"request id {request_id!r} was already used with another payload on execution {self.id}; "
                "use a new request id for a new answer"
            )

    async def emit(self, event: str, value: Any = None) -> None:
        """Deliver an external event to the running execution's ``when(event)`` chains."""
        interp = self._interp
        if interp is None or self._status.finished:
            raise FlowError(f"execution {self.id} is not running; events can only reach a running execution")
        external = self._replay.external
        k = len(external) + 1
        record: ExternalEvent = {"t": "ev", "n": event, "v": jsonable(value), "k": k}
        external.append(record)
        if self._journal.history is not None:
            await self._journal.history.commit(record, force=True)
        interp.fire(interp.root, event, value, "ext", k)

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
        if not self._replay.replaying:
            self._input = input
        if not await self._prepare():
            return self.snapshot()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._drive)
            if through_timed_waits:
                await self._waits.settle_untimed()
            else:
                await self._settled.wait()
            if not self._finished.is_set():
                self._detach()
        return self.snapshot()

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
        history = self._journal.history
        return CloseSnapshot(
            execution_id=self.id,
            flow=self.flow.name,
            status=self._status.value,
            result=self._result,
            error=str(self._error) if self._error else None,
            state=dict(root.state) if root else dict(self._final_state),
            steps_completed=self.steps_completed,
            pending_interrupts=self.get_pending_interrupts(),
            history_records=history.seq if history else self._replay.length,
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
        store = self._journal.store = self.runtime.store()
        records = await store.read(self.tenant, stream_name(self.id))
        if not records:
            raise KeelError(f"no execution {self.id!r} for tenant {self.tenant!r} in the store")
        first = records[0].data
        if first.get("flow") != self.flow.name:
            raise FlowError(f"execution {self.id} belongs to flow {first.get('flow')!r}, not {self.flow.name!r}")
        self.durability = first.get("dur", self.durability)
        self._events.continue_trace(first.get("trace"), first.get("span"))
        self._input = first.get("input")
        if first.get("v", 1) < 2:
            self._waits.salt = ""
        replay = self._replay
        replay.load([rec.data for rec in records])
        self.steps_completed = len(replay.done)  # until a run replays them
        end = replay.end
        if end is not None:
            self._status = ExecutionStatus(end["status"])
            self._result = end.get("o")
            self._final_state = end.get("state", {})
            if self._status is not ExecutionStatus.COMPLETED:
                self._error = FlowError(end.get("error") or self._status.value)
            self._finished.set()
            self._settled.set()
        else:
            self._status = ExecutionStatus.WAITING if self.get_pending_interrupts() else ExecutionStatus.RUNNING
            self._journal.indexed_waiting = self._status is ExecutionStatus.WAITING  # what the index row says

    async def refresh(self) -> None:
        """Read the history again when another process wrote to it since this object read it, so
        that a copy (adopted for reading, or released at a wait) shows what the execution's owner
        did: :meth:`keel.Runtime.find_execution` calls this before handing out such a copy. In a
        serving runtime, a copy found orphaned (its owner gone) is continued here, as on adoption.
        Does nothing while this process runs it; one that it follows (``_follow``) catches up."""
        if self._following:
            from keel_triggerflow._follow import catch_up

            await catch_up(self)
            return
        if self.running_here or self._status.finished or self.durability == "none" or self._journal.history is not None:
            return
        from keel_triggerflow._follow import start_following

        store = self._journal.store or self.runtime.store()
        if await store.last_seq(self.tenant, stream_name(self.id)) == self._replay.length:
            start_following(self)
            return
        async with self._journal.opening:  # not while a signal takes the lease for this object
            if self._journal.history is not None or self.running_here:
                return
            self._reset()
            await self._load()
        self._events.notify()  # a reader following a copy that has now ended stops
        if not self._status.finished:
            from keel_triggerflow._adopt import continue_if_orphaned

            await continue_if_orphaned(self.runtime, self)
            start_following(self)

    def _reset(self) -> None:
        self._started = False
        self._detaching = False
        self._stopped = anyio.Event()
        self._settled = anyio.Event()
        self._cancel_scope = None
        self._interp = None
        self._waits.waiting = {}
        self._replay.clear()

    # =================================================================== driving
    async def _prepare(self) -> bool:
        """Check, take the lease and open the history; ``False`` when there is nothing to run.
        One at a time: two resumes racing through the lease would each start a driver (and an
        inbox reader), and each would apply the same inbox answer again (issue 23)."""
        async with self._preparing:
            return await self._prepare_once()

    async def _prepare_once(self) -> bool:
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
        if self._missing and self._replay.end is None:
            names = ", ".join(repr(m) for m in self._missing)
            missing = MissingResourceError(
                f"flow {self.flow.name!r} needs the live resource(s) {names}, not given to this execution "
                f"(pass resources={{...}} to create_execution() or load(), or put them in runtime.resources "
                "for executions the runtime adopts)"
            )
            if not self._adopted:
                raise missing
            # adopted by a service: this one execution fails, saying which resource; the others go on
            await self._journal.open(None)
            self._started = True
            if self._replay.end is not None:
                return False  # another process ended it meanwhile
            await self._finish(ExecutionStatus.FAILED, None, missing)
            return False
        self.flow.compile()
        if self._replay.end is not None:
            self._started = True
            return False
        await self._journal.open(self._input)
        self._started = True
        if self._replay.end is not None:
            return False  # another process ended it since this object read it
        self.runtime.executions.add(self)
        return True

    async def _drive(self) -> None:
        self._events.loop_thread = threading.get_ident()
        self._status = ExecutionStatus.RUNNING
        self.steps_completed = 0
        self._events.add(
            "execution.started",
            {
                "flow": self.flow.name,
                "resumed": self._replay.replaying,
                "input": self._input,
                "drawing": self.flow.drawing(),
            },
        )
        interp = self._interp = Interpreter(self, Scope(self.flow, ""))
        try:
            # the kernel's budgets: a durable flow's usage is in the store, so spent usage survives a crash
            budgets, name, tenant, emit = self.runtime.budgets, self.flow.name, self.tenant, self._events.add
            if self._journal.store is not None and self.durability != "none":
                meter = await budgets.open(self.id, runnable=name, tenant=tenant, emit=emit)
            else:
                meter = budgets.meter(self.id, runnable=name, tenant=tenant, emit=emit)
            with keel.budgets.metering(meter), keel.draws.drawing(self._draw):
                await self._drive_scope(interp)
        except anyio.get_cancelled_exc_class():
            # cancelled from outside (runtime shutdown, a caller's timeout): leave it resumable
            with anyio.CancelScope(shield=True):
                await self._journal.release()
            self._settled.set()
            self._stopped.set()
            self._events.notify()
            raise

    async def _drive_scope(self, interp: Interpreter) -> None:
        status, result, error = ExecutionStatus.COMPLETED, None, None
        journal = self._journal
        with anyio.CancelScope() as cancel_scope:
            self._cancel_scope = cancel_scope
            if self._cancel_reason:  # cancelled between start() and here
                cancel_scope.cancel()
            async with anyio.create_task_group() as tg:
                if journal.lease is not None:
                    tg.start_soon(journal.heartbeat)
                journal.driver_tg, journal.inbox_reading = tg, False
                if self.get_pending_interrupts():  # resumed while waiting: answers may be in the inbox
                    journal.start_inbox()
                try:
                    if self.flow.input_model is not None:
                        self._input = self.flow.input_model.model_validate(self._input)
                    result = await interp.run_scope(interp.root, self._input, "")
                    if self.flow.output_model is not None:
                        result = self.flow.output_model.model_validate(result)
                except Exception as err:  # the execution's failure: recorded and reported by _finish
                    status, error = ExecutionStatus.FAILED, err
                tg.cancel_scope.cancel()  # the heartbeat (and the inbox reader)
            journal.driver_tg = None
        if self._detaching:
            with anyio.CancelScope(shield=True):
                await journal.write_index_now()
            await journal.release()
            self._settled.set()
            self._stopped.set()
            self._events.notify()
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
        journal = self._journal
        history = journal.history
        self._status = status
        self._result = jsonable(result) if history is not None else result
        self._error = error
        if history is not None and not isinstance(error, LeaseError):
            end: EndRecord = {"t": "end", "status": status.value}  # type: ignore[typeddict-item]
            root = self._root
            if root is not None and root.state:
                end["state"] = root.state
            if status is ExecutionStatus.COMPLETED:
                end["o"] = self._result
            else:
                end["error"] = str(error)
            try:  # one transaction: no crash leaves the row 'running' after the end
                await history.commit_with_index(end, status=status.value)
            except Exception as err:  # the end is not recorded: a completed run is reported failed
                if error is None:
                    self._status, self._error = ExecutionStatus.FAILED, err
        await journal.release()
        payload: dict[str, Any] = {"flow": self.flow.name, "steps": self.steps_completed}
        if self._error is not None:
            payload["error"] = f"{type(self._error).__name__}: {self._error}"
            # the protocol's user-safe why: the reason given to cancel(), or what it failed with
            cancelled = self._status is ExecutionStatus.CANCELLED and self._cancel_reason
            payload["reason"] = self._cancel_reason if cancelled else str(self._error)
        elif self._status is ExecutionStatus.COMPLETED:
            payload["output"] = self._result
        self._events.add(f"execution.{self._status.value}", payload, level="error" if self._error else "info")
        self._finished.set()
        self._settled.set()
        self._stopped.set()
        self._events.notify()

    def _detach(self) -> None:
        if self._cancel_reason:
            return  # a cancel ends it: nothing to leave for another process
        self._detaching = True
        if self._cancel_scope is not None:
            self._cancel_scope.cancel()

    def __repr__(self) -> str:
        return f"<FlowExecution {self.id} flow={self.flow.name!r} status={self._status.value}>"
