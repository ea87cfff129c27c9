"""An execution's journal in the store: its history (opened under a lease), the lease's heartbeat,
the inbox other processes answer through, and the index row (see ``_history`` for the layout)."""

from __future__ import annotations

import logging
from threading import get_ident
from typing import TYPE_CHECKING, Any

import anyio
import anyio.from_thread

from keel import ConflictError, ExecutionStatus, Store, new_id
from keel_triggerflow._history import History, Lease, inbox_name, stream_name, write_index
from keel_triggerflow._part import ExecutionPart
from keel_triggerflow._records import HISTORY_FORMAT, Answer, StartRecord
from keel_triggerflow._values import jsonable
from keel_triggerflow.types import FlowError, LeaseError

if TYPE_CHECKING:
    from keel_triggerflow._engine import FlowExecution

_log = logging.getLogger("keel_triggerflow")

#: seconds a stream item waits before it is written for followers (the items put meanwhile join it)
ITEMS_DELAY = 0.05


class Journal(ExecutionPart):
    """The store side of one execution: ``history`` and ``lease`` while this process owns it."""

    def __init__(self, execution: FlowExecution, lease_ttl: float):
        super().__init__(execution)
        self.lease_ttl = lease_ttl
        self.store: Store | None = None
        self.history: History | None = None
        self.lease: Lease | None = None
        self.opening = anyio.Lock()
        self.answering = anyio.Lock()  # check the inbox and write to it as one step, in this process
        self.driver_tg: Any = None  # the task group of the heartbeat and the inbox reader
        self.inbox_reading = False
        self.indexed_waiting = False  # what the index row says: waiting
        self.items_due = False  # a write of the queued stream items is scheduled

    # ------------------------------------------------------------------ history and lease
    async def open(self, input: Any) -> bool:
        """Take the lease and open the history writer (a new execution writes its start record).

        ``True`` when the execution's state in this object was stale (another process wrote to the
        history since this object read it) and has been read again: the caller judges what it was
        doing against that. When the execution ended meanwhile, no history is open."""
        if self.x.durability == "none" or self.history is not None:
            return False
        async with self.opening:  # a signal and a resume may open it at once: one lease, one owner
            if self.history is None:
                return await self._take(input)
        return False

    async def _take(self, input: Any) -> bool:
        x = self.x
        store = self.store = self.store or x.runtime.store()
        lease = Lease(store, x.tenant, x.id, new_id("owner"), self.lease_ttl)
        await lease.acquire()  # only a lease actually held becomes this execution's
        seq = await store.last_seq(x.tenant, stream_name(x.id))
        known = x._replay.length  # where this object's copy of the history ends
        stale = seq != known and (x._replay.replaying or known > 0)
        if stale:
            # read (or released) at an earlier point, and another process has written since:
            # going on from here would run again what it ran (the two-server drill found this).
            # Read it again, under the lease now, so that nobody moves it meanwhile.
            x._reset()
            await x._load()
            if x._replay.end is not None:
                await lease.release()
                return True
        self.lease = lease
        self.history = History(store, x.tenant, x.id, seq, x.durability, self.lease)
        if seq == 0:
            flow = x.flow
            start: StartRecord = {
                "t": "start",
                "flow": flow.name,
                "input": jsonable(input),
                "dur": x.durability,
                "v": HISTORY_FORMAT,
            }
            start["trace"], start["span"] = x._events.trace_ids()  # a resume in another process stays in this trace
            if flow.ref:
                start["ref"] = flow.ref
            if flow.definition is not None:
                start["def"] = flow.definition
            # one transaction: no crash leaves a started execution out of the index
            await self.history.commit_with_index(start, flow=flow.name, status="running", ref=flow.ref)
        return stale

    async def release(self) -> None:
        """Write what is queued, give the lease back and close the history writer."""
        if self.lease is not None:
            with anyio.CancelScope(shield=True):
                if self.history is not None:
                    try:
                        await self.history.flush()
                    except Exception as err:  # the lease goes back all the same; say what was not written
                        _log.warning(
                            "execution %s: records queued for its history were not written (%s: %s); "
                            "a resume repeats the steps they described",
                            self.x.id, type(err).__name__, err,
                        )  # fmt: skip
                await self.lease.release()
            self.lease = None
            if self.history is not None:
                self.x._replay.length = self.history.seq
            self.history = None

    async def heartbeat(self) -> None:
        assert self.lease is not None
        x = self.x
        while True:
            await anyio.sleep(self.lease.ttl / 3)
            try:
                await self.lease.renew()
            except LeaseError as err:
                x._error = err
                if x._cancel_scope is not None:
                    x._cancel_reason = str(err)
                    x._cancel_scope.cancel()
                return

    # ------------------------------------------------------------------ stream items
    def stream_item(self, path: str, item: Any) -> None:
        """Keep a ``ctx.put_into_stream`` item for processes that follow the execution: written
        within ``ITEMS_DELAY`` seconds (items put meanwhile go in one append), so another process
        shows a long step's progress while it runs."""
        if get_ident() != self.x._events.loop_thread:  # from a plain chunk in its worker thread
            anyio.from_thread.run_sync(self.stream_item, path, item)
            return
        history = self.history
        if history is None:
            return
        history.add_item(path, item)
        if not self.items_due and self.driver_tg is not None:
            self.items_due = True
            self.driver_tg.start_soon(self._write_items)

    async def _write_items(self) -> None:
        try:
            await anyio.sleep(ITEMS_DELAY)
            if self.history is not None:
                await self.history.write_items()
        except Exception as err:  # they go with the next commit instead
            _log.warning("execution %s: stream items not written yet (%s: %s)", self.x.id, type(err).__name__, err)
        finally:
            self.items_due = False

    # ------------------------------------------------------------------ inbox
    def start_inbox(self) -> None:
        """Follow the inbox from the first wait on. Another process writes there only to answer a
        wait recorded in the history, so an execution that never waits never reads it (and does
        not re-read it after each of its own appends, which wake the store's subscribers)."""
        if not self.inbox_reading and self.history is not None and self.driver_tg is not None:
            self.inbox_reading = True
            self.driver_tg.start_soon(self._read_inbox)

    async def _read_inbox(self) -> None:
        """Apply answers other processes left for this execution while this process owns it."""
        assert self.store is not None
        x = self.x
        async for record in self.store.subscribe(x.tenant, inbox_name(x.id), after=x._replay.inbox_after):
            data = record.data
            try:
                await x.continue_with(data["i"], data.get("v"), request_id=data.get("r"), _inbox=record.seq)
            except (FlowError, ConflictError) as err:
                x._events.add("flow.signal.rejected", {"interrupt": data.get("i"), "reason": str(err)}, level="warning")

    async def answer_through_inbox(self, interrupt_id: str, request_id: str, value: Any) -> None:
        """Another live process owns the execution: leave the answer in its inbox."""
        x = self.x
        store = self.store or x.runtime.store()
        async with self.answering:  # a client's retries at once: one inbox record (another process
            # may still write a repeat: the owner skips it, as it applies each request id once)
            if not await self._answered_in_inbox(store, interrupt_id, request_id, value):
                await store.append(x.tenant, inbox_name(x.id), [{"i": interrupt_id, "r": request_id, "v": value}])
                # the row says 'running' from now on: a restart resumes it, and its inbox is applied
                seq = await store.last_seq(x.tenant, stream_name(x.id))
                await write_index(store, x.tenant, x.id, seq=seq, status="running")
        # not in the requests: if this object takes the execution over, its inbox reader
        # must apply the answer, not take it for a duplicate (a repeat is checked in the inbox)
        if x._adopted and x.runtime.started:
            # the owner may be a process that died a moment ago: take over once its lease expires
            from keel_triggerflow._adopt import resume_if_orphaned

            await resume_if_orphaned(x.runtime, x)

    async def _answered_in_inbox(self, store: Store, interrupt_id: str, request_id: str, value: Any) -> bool:
        """Check an answer against the ones already in the inbox, as the owner will: the same
        request id is a no-op with the same payload and a :class:`keel.ConflictError` with another,
        told to this caller (the owner only logs what it rejects). Another answer to the same
        interrupt, with another request id, is refused too."""
        x = self.x
        if request_id in x._replay.requests:  # applied by the owner already (a follower read it)
            x._check_duplicate(request_id, value)
            return True
        for record in await store.read(x.tenant, inbox_name(x.id), after=x._replay.inbox_after):
            data = record.data
            if data.get("r") == request_id:
                if data.get("v") != value or data.get("i") != interrupt_id:
                    raise ConflictError(
                        f"request id {request_id!r} was already used with another payload on execution {x.id}; "
                        "use a new request id for a new answer"
                    )
                return True
            if data.get("i") == interrupt_id:
                raise FlowError(
                    f"interrupt {interrupt_id!r} of execution {x.id} is not waiting (already answered by "
                    f"request {data.get('r')!r}, on its way to the process that runs it)"
                )
        return False

    # ------------------------------------------------------------------ index
    def index_if_waiting(self) -> None:
        """Mark the index row ``waiting`` (with the nearest deadline) once every running chunk is
        at a wait: start-up adoption resumes only ``running`` rows, so a row must not say
        ``waiting`` while another branch still has work to finish."""
        x = self.x
        interp = x._interp
        if (
            x._status is ExecutionStatus.WAITING
            and not self.indexed_waiting
            and (interp.active if interp is not None else 0) <= len(x._waits.waiting)
            and self.store is not None
            and self.history is not None
        ):
            self.indexed_waiting = True
            seq = self.history.seq  # taken now: the write runs later, maybe after newer ones
            self._in_background(write_index, self.store, x.tenant, x.id, seq=seq, **self.index_fields())

    def index_fields(self) -> dict[str, Any]:
        """The index row's status, and for a waiting execution its nearest deadline (start-up
        adoption arms one timer from these, without reading any history)."""
        x = self.x
        fields: dict[str, Any] = {"status": x._status.value}
        if x._status is ExecutionStatus.WAITING:
            deadlines = [i.deadline for i in x._waits.pending() if i.deadline is not None]
            if deadlines:
                fields["deadline"] = min(deadlines)
        return fields

    async def write_index_now(self) -> None:
        """Bring the index row to what the history says now (a drive that stops at a wait)."""
        if self.store is not None and self.history is not None:
            x = self.x
            await write_index(self.store, x.tenant, x.id, seq=self.history.seq, **self.index_fields())

    async def commit_answer(self, record: Answer) -> None:
        """Record an answer or a timeout; when the index says ``waiting``, it says ``running`` again
        in the same transaction (a crash from here on must leave the execution to resume)."""
        assert self.history is not None
        if self.indexed_waiting:
            self.indexed_waiting = False
            await self.history.commit_with_index(record, status="running")
        else:
            await self.history.commit(record, force=True)

    def _in_background(self, fn: Any, *args: Any, **kwargs: Any) -> None:
        interp = self.x._interp
        if interp is not None and interp.root.tg is not None:
            execution_id = self.x.id

            async def call() -> None:
                try:
                    await fn(*args, **kwargs)
                except Exception as err:  # the index is a convenience; the history is the truth
                    _log.warning(
                        "execution %s: its index row was not updated (%s: %s); the history is unchanged, "
                        "and the next write of the row corrects it",
                        execution_id, type(err).__name__, err,
                    )  # fmt: skip

            interp.root.tg.start_soon(call)
