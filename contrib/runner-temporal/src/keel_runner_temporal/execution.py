"""``TemporalExecution``: a flow execution Temporal runs, seen through :class:`keel.Execution`,
from the process that started it or from any other (``runner.find``).

Its RuntimeEvents (started, waiting, its steps' ``flow.step.*`` events, stream items, the end)
are also published on the bus of the runtime that follows it (``publish``), as a local
execution's are: ``keel_on_runtime_event`` observers (DevTools' recorder, keel-otel) see a
Temporal execution like any other. They carry the execution's trace (``stepevents.trace_of``),
each step's events its attempt's span, as the local runner's do."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
from pydantic_core import to_jsonable_python

from keel import ConflictError, EventLog, ExecutionStatus, RuntimeEvent
from keel_runner_temporal.errors import TemporalExecutionFailed, TemporalRunnerError
from keel_runner_temporal.stepevents import step_span, trace_of

__all__ = ["TemporalExecution"]


_CLOSED = {"COMPLETED": ExecutionStatus.COMPLETED, "CANCELED": ExecutionStatus.CANCELLED}
#: Temporal's workflow status -> keel's (FAILED, TERMINATED and TIMED_OUT are failures)
_STATUS = {**_CLOSED, "RUNNING": ExecutionStatus.RUNNING, "CONTINUED_AS_NEW": ExecutionStatus.RUNNING}
_LEVELS = {"flow.step.failed": "error", "flow.step.retry": "warning"}


class TemporalExecution:
    """A flow execution that Temporal runs, seen through :class:`keel.Execution`."""

    kind = "flow"
    running_here = False  # Temporal owns it: a closing runtime does not wait for it
    served_here = False  # whether this process's worker runs its chunks (keel flow signal follows it then)

    def __init__(
        self,
        handle: Any,
        flow: str,
        tenant: str,
        *,
        status: ExecutionStatus = ExecutionStatus.RUNNING,
        waiting: list[dict[str, Any]] | None = None,
        resolve: Callable[[Any], Awaitable[Any]] | None = None,
        publish: Callable[[RuntimeEvent], Any] | None = None,
        started: dict[str, Any] | None = None,
        trace: dict[str, Any] | None = None,
    ):
        """:param publish: where each event goes besides :meth:`events` (the runtime's bus).
        :param started: more of the ``execution.started`` payload (the ``input``, when this
            process started it; ``followed: true`` when it only follows one started elsewhere).
        :param trace: the caller's trace it was started in (the start's memo: ``trace_id``, ``parent``)."""
        self.id: str = handle.id
        self.flow = flow
        self.tenant = tenant
        # the same in every process that follows it: the caller's trace (from the memo), or its own
        self.trace_id, self.span_id = trace_of(self.id, trace)
        self._parent_span: str | None = str((trace or {}).get("parent") or "") or None
        self._handle = handle
        self._status = status  # what Temporal said when this object was made (found: maybe finished)
        self._pending: dict[str, dict[str, Any]] = {}  # interrupt id -> the wait this object knows of
        self._shown: set[str] = set()  # the interrupt ids of the waits and answers it has shown
        self._running: set[str] = set()  # the paths of the steps started and not ended (store records)
        self._pauses: dict[str, dict[str, Any]] = {}  # interrupt id -> its pause_for step's started payload
        self._resolve = resolve  # a result passed by reference, read back from the stack's store
        self._log: EventLog[RuntimeEvent] = EventLog()
        self._done = anyio.Event()
        self._result: Any = None
        self._error: BaseException | None = None
        self._cancel_reason: str | None = None
        self._sent: dict[str, dict[str, Any]] = {}  # request id -> the signal this object delivered
        self._publish = publish
        self._stream_seq = 0  # the last stream item relayed from the stack's store (the runner relays them)
        self._drain: Callable[[], Awaitable[None]] | None = None  # relays the rest, before the end event
        self._caught_up = anyio.Event()  # the relay has shown what the store held when it began
        #: writes a record to the execution's store stream, which every follower relays (the runner's)
        self._record: Callable[[dict[str, Any]], Awaitable[bool]] | None = None
        self._found_waiting = list(waiting or ())  # the memo's waits, for :meth:`_found`
        self._event("execution.started", {"flow": flow, "runner": "temporal", **(started or {})})
        if self._found_waiting:
            self._status = ExecutionStatus.WAITING  # its events follow the store's (see _found)
            self._pending = {str(i["id"]): i for i in self._found_waiting}

    def _found(self) -> None:
        """Found waiting, once the relay has caught up with the store: the waits the memo names
        that no record there has shown (a worker from before waits were stored)."""
        for interrupt in self._found_waiting:
            if str(interrupt["id"]) not in self._shown:
                self._now_waiting(interrupt)

    @property
    def status(self) -> ExecutionStatus:
        return self._status

    def _event(self, kind: str, payload: dict[str, Any], *, span: str | None = None, **more: Any) -> None:
        """:param span: a step attempt's span (a child of the execution's); ``more``: ``time``, ``level``."""
        event = RuntimeEvent(
            kind=kind, execution_id=self.id, seq=len(self._log) + 1, tenant=self.tenant, source="temporal",
            payload=payload, trace_id=self.trace_id, span_id=span or self.span_id,
            parent_span_id=self.span_id if span else self._parent_span, **more,
        )  # fmt: skip
        self._log.append(event)
        if self._publish is not None:
            self._publish(event)  # never blocks: a full bus drops and counts

    async def _watch(self) -> None:
        from temporalio.client import WorkflowFailureError
        from temporalio.exceptions import CancelledError as TemporalCancelled

        try:
            result = await self._handle.result()
            await self._drained()
            self._timed_out(None)  # a wait it went on from unanswered: on_timeout = "continue"
            self._result = result if self._resolve is None else await self._resolve(result)
            self._status = ExecutionStatus.COMPLETED
            self._event("execution.completed", {"output": to_jsonable_python(self._result, fallback=repr)})
        except WorkflowFailureError as err:
            await self._drained()
            cause: Any = err.cause
            while getattr(cause, "cause", None) is not None:
                cause = cause.cause
            cancelled = isinstance(err.cause, TemporalCancelled)
            self._status = ExecutionStatus.CANCELLED if cancelled else ExecutionStatus.FAILED
            message = getattr(cause, "message", None) or str(cause or err)  # without the error type's prefix
            if getattr(cause, "type", None) == "WaitTimeout":  # a wait's timeout failed it
                self._timed_out({"type": "WaitTimeout", "message": message})
            reason = (self._cancel_reason or "cancelled") if cancelled else message
            self._error = TemporalExecutionFailed(
                f"execution {self.id!r} {'was cancelled' if cancelled else 'failed'} on Temporal: {reason}"
            )
            self._event(
                "execution.cancelled" if cancelled else "execution.failed",
                {"reason": reason, "code": "execution.cancelled" if cancelled else self._error.code},
            )
        finally:
            self._done.set()
            self._log.notify()

    async def _drained(self) -> None:
        """The stream items its steps stored and this object has not shown yet: before the end."""
        if self._drain is not None:
            await self._drain()

    async def result(self) -> Any:
        await self._done.wait()
        if self._error is not None:
            raise self._error
        return self._result

    def events(self, since: int = 0) -> AsyncIterator[RuntimeEvent]:
        return self._log.follow(since, lambda: self._done.is_set())

    async def stream(self, since: int = 0) -> AsyncIterator[Any]:
        """The items chunks put with ``ctx.put_into_stream`` (events of kind ``flow.stream``), as on
        the local runner, in any process that follows the execution (relayed from the stack's store)."""
        async for event in self.events(since):
            if event.kind == "flow.stream":
                yield event.payload["item"]

    def _stored(self, record: dict[str, Any]) -> None:
        """One record of the execution's store stream: a stream item or a step's event
        (``stepevents``) a worker wrote, a wait it reached, or an answer a process gave; with the
        time and span the writer gave it. Every follower shows them in the store's order, so
        their events are the same, seq for seq."""
        kind = record.get("event")
        when: dict[str, Any] = {"time": float(record["time"])} if isinstance(record.get("time"), (int, float)) else {}
        if kind is None:
            self._event("flow.stream", {"path": record["path"], "item": record["item"]})
        elif kind == "execution.waiting" and isinstance(record.get("interrupt"), dict):
            interrupt = dict(record["interrupt"])
            path = str(interrupt.get("path") or "")
            if path not in self._running and str(interrupt["id"]) not in self._shown:  # not a chunk's own wait
                self._pause_step(interrupt, "flow.step.started", **when)
            self._now_waiting(interrupt, **when)
        elif kind == "flow.signal" and isinstance(record.get("payload"), dict):
            self._answered(dict(record["payload"]), str(record.get("name") or ""), **when)
        elif isinstance(kind, str) and kind.startswith("flow.step."):
            payload = dict(record.get("payload") or {})
            if kind == "flow.step.started":
                self._running.add(str(payload.get("path")))
            else:
                self._running.discard(str(payload.get("path")))
            self._event(kind, payload, span=record.get("span") or None, level=_LEVELS.get(kind, "info"), **when)

    def _timed_out(self, error: dict[str, Any] | None) -> None:
        """The pause steps still open at the end: their waits timed out (``flow.wait.timeout``, as
        on the local runner), then the step ends: failed with ``error``, or went on (``None``)."""
        for key in list(self._pauses):
            name = self._pauses[key]["step"].partition(":")[2]
            self._event("flow.wait.timeout", {"interrupt": key, "name": name})
            if error is None:
                self._pause_step({"id": key}, "flow.step.completed")
            else:
                self._pause_step({"id": key}, "flow.step.failed", more={"error": error})

    def _pause_step(
        self, interrupt: dict[str, Any], kind: str, *, more: dict[str, Any] | None = None, **when: Any
    ) -> None:
        """A ``pause_for`` node is a step on the local runner (``pause_for:<name>``, the wait inside
        it): the same events here, started with its wait, completed with its answer (or at the end
        of an execution that went on past it), so the two runners' recordings line up."""
        key = str(interrupt["id"])
        if kind == "flow.step.started":
            step = self._pauses[key] = {
                "path": str(interrupt.get("path") or ""),
                "step": f"pause_for:{interrupt['name']}",
            }
            shown = {**step, "attempt": 1}
        else:
            found = self._pauses.pop(key, None)
            if found is None:
                return
            step, shown = found, {**found, **(more or {})}
        level = _LEVELS.get(kind, "info")
        self._event(kind, shown, span=step_span(self.id, step["path"], 1), level=level, **when)

    async def position(self) -> dict[str, Any]:
        """The workflow's own answer to where it is (a Temporal query): ``step``, ``steps``, ``chunk``."""
        answer: dict[str, Any] = await self._handle.query("keel.position")
        return answer

    async def describe(self) -> ExecutionStatus:
        """Temporal's status of the workflow, mapped to keel's (also when another process runs it)."""
        described = await self._handle.describe()
        name = described.status.name if described.status is not None else "RUNNING"
        return _CLOSED.get(name, ExecutionStatus.RUNNING if name == "RUNNING" else ExecutionStatus.FAILED)

    def _now_waiting(self, interrupt: dict[str, Any], **when: Any) -> None:
        key = str(interrupt["id"])
        if key in self._shown:
            return  # shown already: from the store, the memo or the worker, whichever came first
        self._shown.add(key)
        self._status = ExecutionStatus.WAITING
        self._pending[key] = interrupt
        self._event("execution.waiting", {"interrupts": [interrupt]}, **when)

    def _answered(self, payload: dict[str, Any], name: str, **when: Any) -> None:
        """An answer to a wait (this process's or another's): ``flow.signal``, as the local runner
        records it (a replay answers the wait with it)."""
        key = payload.get("interrupt")
        if key is None:  # the answering process had not seen the wait: the first one of that name
            key = next((k for k, i in self._pending.items() if i["name"] == name), None)
        if key is not None:
            self._pending.pop(str(key), None)
            self._shown.add(str(key))  # a record of its wait that comes after the answer shows nothing
        if self._status is ExecutionStatus.WAITING and not self._pending:
            self._status = ExecutionStatus.RUNNING
        self._event("flow.signal", payload, **when)
        if key is not None:
            self._pause_step({"id": key}, "flow.step.completed", **when)

    async def refresh(self) -> None:
        """Re-read where it is from Temporal (the workflow's ``keel_waiting`` memo, no worker needed):
        what ``runtime.find_execution`` calls on a held copy, so a wait another process's worker
        reached, or an answer another process gave, shows here."""
        from keel_runner_temporal._workflow import WAITING_MEMO

        if self._done.is_set():
            return
        described = await self._handle.describe()
        if described.status is None or described.status.name != "RUNNING":
            return  # ended: _watch learns how
        waits = (await described.memo()).get(WAITING_MEMO) or []
        waits = [waits] if isinstance(waits, dict) else waits
        known = set(self._pending)
        self._pending = {str(i["id"]): i for i in waits if str(i["id"]) in known}
        for interrupt in waits:
            if str(interrupt["id"]) not in known:
                self._now_waiting(interrupt)
        if not self._pending:
            self._status = ExecutionStatus.RUNNING

    def get_pending_interrupts(self) -> list[dict[str, Any]]:
        """The waits this object knows of (``id``, ``name``, ``payload``, ``path``, ``deadline``)."""
        return [dict(i) for i in self._pending.values()] if self._status is ExecutionStatus.WAITING else []

    async def signal(self, name: str, payload: Any = None, *, request_id: str | None = None) -> None:
        """Deliver ``name`` as a Temporal workflow update: the same ``request_id`` twice is a no-op,
        with another payload a :class:`keel.ConflictError`."""
        from temporalio.client import WorkflowUpdateFailedError
        from temporalio.service import RPCError

        from keel_runner_temporal._workflow import SIGNAL_UPDATE

        call = {"name": name, "payload": to_jsonable_python(payload), "request_id": request_id}
        if request_id is not None and request_id in self._sent:
            if self._sent[request_id] != call:  # known here: no round trip (the workflow checks it too)
                raise ConflictError(
                    f"execution {self.id!r}: request id {request_id!r} was already used for another signal"
                )
            return  # delivered already, maybe to a workflow that has closed since
        given = time.time()  # its record's time: the next step may start (and be stored) before it
        try:
            await self._handle.execute_update(SIGNAL_UPDATE, call)
        except RPCError as err:
            raise TemporalRunnerError(f"execution {self.id!r} did not take signal {name!r}: {err}") from None
        except WorkflowUpdateFailedError as err:
            if getattr(err.cause, "type", None) == "Conflict":
                raise ConflictError(f"execution {self.id!r}: {err.cause}") from None
            raise TemporalRunnerError(f"execution {self.id!r} did not take signal {name!r}: {err.cause}") from None
        if request_id is not None:
            self._sent[request_id] = call
        answered = next((k for k, i in self._pending.items() if i["name"] == name), None)
        payload = {"interrupt": answered, "request_id": request_id, "value": call["payload"]}
        record = {"event": "flow.signal", "name": name, "payload": payload, "time": given}
        if self._record is None or not await self._record(record):  # else shown when the relay reads it
            self._answered(payload, name, time=given)
        if answered is not None:
            self._pending.pop(answered, None)  # answered now, whenever the relay shows it
        if self._status is ExecutionStatus.WAITING and not self._pending:
            self._status = ExecutionStatus.RUNNING

    async def emit(self, event: str, value: Any = None) -> None:
        """Deliver an external event to the running execution's ``when(event)`` chains (a Temporal
        workflow update), as the local runner's ``execution.emit``."""
        from pydantic import BaseModel
        from temporalio.client import WorkflowUpdateFailedError
        from temporalio.service import RPCError

        from keel_runner_temporal._workflow import EMIT_UPDATE
        from keel_runner_temporal.activities import wrapped

        if self._done.is_set():
            raise TemporalRunnerError(f"execution {self.id!r} has ended; events can only reach a running execution")
        # a pydantic value reaches the chains as the model (as a pydantic output does), as on the local runner
        model = f"{type(value).__module__}:{type(value).__qualname__}" if isinstance(value, BaseModel) else None
        sent = wrapped(model, to_jsonable_python(value))
        try:
            await self._handle.execute_update(EMIT_UPDATE, {"event": event, "value": sent})
        except (RPCError, WorkflowUpdateFailedError) as err:
            raise TemporalRunnerError(f"execution {self.id!r} did not take event {event!r}: {err}") from None

    async def cancel(self, reason: str = "cancelled") -> None:
        """Ask Temporal to cancel the workflow and return once it has ended (cancelled, or finished
        first); after the end it changes nothing. A chunk running then is abandoned by the workflow."""
        if self._done.is_set():
            return
        self._cancel_reason = reason
        await self._handle.cancel()
        await self._done.wait()

    def __repr__(self) -> str:
        return f"TemporalExecution({self.id!r}, flow={self.flow!r}, status={self._status.value})"
