"""Following an execution that another process runs: its events and status, live, from the store.

An execution found with :meth:`keel.Runtime.find_execution` (``_adopt``) in a process that does
not run it is a copy of its history. While it is not finished and this process does not take it
over, one task of the runtime follows its history in the store (``Store.subscribe``: the store's
own notification; the SQLite store polls for other processes' appends every ``poll_interval``,
0.25 s by default) and turns each new record into what a reader in the owner's process sees:

- a step's completion -> ``flow.step.completed`` (and its ``flow.emit``), a retried or failed
  attempt -> ``flow.step.retry`` / ``flow.step.failed``;
- the items its steps put with ``ctx.put_into_stream`` -> ``flow.stream`` (read from the
  execution's ``/stream`` log, which the owner writes within ~0.05 s of the put, and at the latest
  in the same transaction as the records after it: so an item never comes after its step's end);
- a wait -> ``execution.waiting`` (status ``waiting``), an answer -> ``flow.signal`` or
  ``flow.wait.timeout``;
- the end record -> ``execution.completed`` / ``.failed`` / ``.cancelled``, and ``result()`` returns.

These events are for the copy's readers (``events()``, the gateway): they are not published on
this process's bus, since the owner's process publishes the run to its own observers. The copy's
tables are updated as the records come (a signal sent through it is judged against
what the owner did); the follower stops at the end, when this process takes the execution over
(its lease is free: a signal, a cancel or an expired owner), or when the runtime stops.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import anyio

from keel import ExecutionStatus
from keel_triggerflow._history import items_name, stream_name
from keel_triggerflow.types import FlowError

if TYPE_CHECKING:
    from keel_triggerflow._engine import FlowExecution

log = logging.getLogger("keel_triggerflow")

__all__ = ["catch_up", "follow", "start_following"]


def start_following(execution: FlowExecution) -> None:
    """Follow ``execution`` in the runtime's task group, once, unless it has ended, runs here or
    keeps no history (``durability='none'``)."""
    x = execution
    if x._following or x._status.finished or x.running_here or x.durability == "none" or not x.runtime.started:
        return
    x._following = True
    _tell(x, "execution.started", {"flow": x.flow.name, "followed": True, "input": x._input})
    x.runtime.task_group.start_soon(follow, x, name=f"keel triggerflow follow {x.id}")


def _owned_here(x: FlowExecution) -> bool:
    return x.running_here or x._journal.history is not None or x._started


async def follow(x: FlowExecution) -> None:
    """Apply the records another process appends to ``x``'s history, as events, until it ends."""
    store = x._journal.store or x.runtime.store()
    changed = [anyio.Event()]

    async def watch(stream: str, after: int) -> None:
        # the store's subscription only wakes the loop below; catch_up reads what is new
        async for _record in store.subscribe(x.tenant, stream, after=after):
            changed[0].set()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch, stream_name(x.id), x._replay.length)
            tg.start_soon(watch, items_name(x.id), x._items_after)  # items come live, between records
            while True:
                await changed[0].wait()
                changed[0] = anyio.Event()
                if not await catch_up(x):
                    tg.cancel_scope.cancel()
                    return
    except Exception:
        log.exception("following execution %s from the store failed; find it again to see it", x.id)
    finally:
        x._following = False
        x._events.notify()


async def catch_up(x: FlowExecution) -> bool:
    """Apply what is new in ``x``'s history (and its stream items) now; ``False`` once there is
    nothing more to follow (it ended, or this process runs it)."""
    store = x._journal.store or x.runtime.store()
    async with x._journal.opening:  # not while a signal takes the lease for this object
        if x._status.finished or _owned_here(x):
            return False
        # items first: an item is written with the records after it, so its records are there too
        items = await store.read(x.tenant, items_name(x.id), after=x._items_after)
        records = await store.read(x.tenant, stream_name(x.id), after=x._replay.length)
        if items:
            x._items_after = items[-1].seq
        for record in records:
            while items and int(items[0].data.get("h", 0)) < record.seq:
                _item(x, items.pop(0).data)
            apply(x, record.seq, record.data)
            if x._status.finished:
                return False
        for item in items:
            _item(x, item.data)
    return True


def _item(x: FlowExecution, item: Any) -> None:
    _tell(x, "flow.stream", {"path": item.get("p", ""), "item": item.get("item")})


def apply(x: FlowExecution, seq: int, data: Any) -> None:
    """One record another process appended: into the copy's tables, and out as events."""
    replay = x._replay
    replay.add(data)
    replay.length = seq
    kind = data.get("t")
    path = data.get("p", "")
    if kind == "c":
        x.steps_completed += 1
        step = _step_name(x, path)
        for event, _value in data.get("e") or []:
            _tell(x, "flow.emit", {"event": event, "path": path})
        _tell(x, "flow.step.completed", {"path": path, "step": step})
    elif kind == "x":
        info = {"path": path, "step": _step_name(x, path), "attempt": data.get("a"), "error": data.get("err")}
        _tell(x, "flow.step.retry", info, level="warning")
    elif kind == "f":
        _tell(x, "flow.step.failed", {"path": path, "step": _step_name(x, path), "error": data.get("err")}, "error")
    elif kind == "w":
        x._status = ExecutionStatus.WAITING
        x._settled.set()
        _tell(x, "execution.waiting", {"interrupts": [i.model_dump() for i in x.get_pending_interrupts()]})
    elif kind == "sig":
        iid = data.get("i")
        if data.get("to"):
            wait = replay.waits.get(str(iid))
            name = wait["n"] if wait is not None else None
            _tell(x, "flow.wait.timeout", {"interrupt": iid, "name": name})
        else:
            _tell(x, "flow.signal", {"interrupt": iid, "request_id": data.get("r"), "value": data.get("v")})
        if not x.get_pending_interrupts() and x._status is ExecutionStatus.WAITING:
            x._status = ExecutionStatus.RUNNING
            x._settled = anyio.Event()
    elif kind == "end":
        _ended(x, data)


def _ended(x: FlowExecution, end: dict[str, Any]) -> None:
    status = ExecutionStatus(end["status"])
    x._status = status
    x._result = end.get("o")
    x._final_state = end.get("state", {})
    payload: dict[str, Any] = {"flow": x.flow.name, "steps": x.steps_completed}
    if status is ExecutionStatus.COMPLETED:
        x._error = None
        payload["output"] = x._result
    else:
        x._error = FlowError(end.get("error") or status.value)
        payload["error"] = f"FlowError: {x._error}"
        payload["reason"] = str(x._error)
    _tell(x, f"execution.{status.value}", payload, level="error" if x._error else "info")
    x._finished.set()
    x._settled.set()


def _tell(x: FlowExecution, kind: str, payload: dict[str, Any], level: str = "info") -> None:
    """An event for this copy's readers only: the owner's process publishes the run to its own
    observers (DevTools, tracing), so this process's bus does not get it a second time."""
    x._events.add(kind, payload, level, publish=False)


def _step_name(x: FlowExecution, path: str) -> str:
    """The step's name, from the flow's definition (``thread@op id``); the op id when not found."""
    op_id = path.rsplit("@", 1)[-1]
    try:
        op = x.flow.compile().by_id.get(op_id)
    except Exception:  # an unresolved definition: the path is what there is
        op = None
    return str(getattr(op, "name", None) or op_id)
