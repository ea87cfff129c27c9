"""Product events: what UIs and IM channels see of an execution.

A :class:`Projection` maps one execution's RuntimeEvents (and, when the execution offers
``instant()``, its instant events) to :class:`keel.ProductEvent` objects. The projection keeps user
text and drops everything internal: RuntimeEvent payloads, parser paths, chunk and step names,
model names, exception texts. A :class:`ProductLog` holds one execution's product events numbered
from 1 (the ``seq`` that SSE's ``Last-Event-ID`` resumes from), each encoded once for every reader;
the :class:`ProductHub` runs one projector per followed execution.

Schema of ``data`` per type (stable; see docs/interaction.md):

- ``task.started``: ``null``.
- ``task.progress``: ``null``; ``message`` is human-readable, ``percent`` is set where known.
- ``task.partial``: ``{"field": name, "delta": text, "value": so_far, "complete": bool}``, or
  ``{"reset": true}`` when the answer is being redone and every shown field must be dropped (an
  agent's own, or a flow chunk's ``ctx.put_into_stream({"partial": {...}})`` with the same keys).
- ``task.waiting``: ``null``; ``waiting_for`` says what is awaited and how to answer.
- ``task.completed``: the validated output.
- ``task.failed``: ``{"code": "timeout" | "invalid_output" | "budget" | "cancelled" | "error"}``; ``message`` is safe.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from pydantic_core import to_jsonable_python

from keel import (
    ConflictError,
    EventLog,
    Execution,
    ExecutionStatus,
    KeelError,
    ProductEvent,
    Progress,
    RuntimeEvent,
    error_code,
)
from keel_gateway.repeats import Repeats

if TYPE_CHECKING:
    from keel import Runtime
    from keel_gateway.state import GatewayState

__all__ = ["FAILURE_TEXT", "TERMINAL", "Frame", "ProductHub", "ProductLog", "Projection", "jsonable"]

log = logging.getLogger("keel_gateway.product")

TERMINAL = frozenset({"execution.completed", "execution.failed", "execution.cancelled"})
_SEGMENT = re.compile(r'^(\.[A-Za-z_][A-Za-z0-9_]*|\[\d+\]|\["(?:[^"\\]|\\.)*"\])$')
_DECODER = json.JSONDecoder()
#: a product event on its way to the store, with the seq of the RuntimeEvent it was projected from
_Kept = tuple[ProductEvent, int | None]

#: the one table of what a client is told when a task fails, by failure code (also the view's error)
FAILURE_TEXT = {
    "timeout": "the task took too long and was stopped",
    "invalid_output": "the answer did not match the expected format",
    "budget": "the task reached its budget (tokens, cost, requests, calls or time) and was stopped",
    "cancelled": "the task was cancelled",
    "error": "the task failed",
}


def jsonable(value: Any) -> Any:
    """A JSON-compatible copy of a value (pydantic models included)."""
    return to_jsonable_python(value, fallback=str)


def _event(kind: str, execution_id: str, **fields: Any) -> ProductEvent:
    return ProductEvent(type=kind, task_id=execution_id, execution_id=execution_id, **fields)  # type: ignore[arg-type]


def failure_code(error: Any) -> str:
    """The product's failure code (``timeout``, ``invalid_output``, ``budget``, ``cancelled``, ``error``) of an
    exception, by its machine-readable ``KeelError.code`` (``keel.error_code``), or of the record an
    execution reported (its ``code``). Never by the class name: a renamed class changes nothing."""
    if isinstance(error, BaseException):
        if isinstance(error, TimeoutError) and not isinstance(error, KeelError):
            return "timeout"  # the standard library's and anyio's own deadline
        code = error_code(error)
        cause = error.__cause__
        while cause is not None:  # a flow's step failed because a budget refused a call in it
            if error_code(cause) == "budget.exceeded":
                code = "budget.exceeded"
                break
            cause = cause.__cause__
    elif isinstance(error, dict):
        code = str(error.get("code") or "")
    else:
        code = ""
    if code == "execution.cancelled":
        return "cancelled"
    if code == "output.invalid":
        return "invalid_output"
    if code == "budget.exceeded":
        return "budget"
    if code.endswith((".timeout", "_timeout")):  # agent.timeout, flow.wait_timeout, ...
        return "timeout"
    return "error"


def _top(path: str) -> tuple[str, str] | None:
    """Split an instant path into its top-level field and the rest (``items[2].t`` -> items, [2].t)."""
    if not path:
        return None
    if path[0] == "[":
        try:
            key, end = _DECODER.raw_decode(path, 1)
        except ValueError:
            return None
        return str(key), path[end + 1 :]
    m = re.match(r"[A-Za-z_][A-Za-z0-9_]*", path)
    if m is None:
        return None
    return m.group(0), path[m.end() :]


class Projection:
    """RuntimeEvents and instant events of one execution -> product events (``seq`` unset)."""

    def __init__(self, execution_id: str, *, signal_path: Callable[[str], str] | None = None):
        self.execution_id = execution_id
        self.steps = 0
        self._fields: dict[str, Any] = {}
        self._signal_path = signal_path or (lambda name: f"/v1/executions/{execution_id}/signals/{name}")

    # ---------------------------------------------------------------------------- runtime events

    def runtime(self, event: RuntimeEvent) -> ProductEvent | None:
        kind, payload, eid = event.kind, event.payload, self.execution_id
        if kind == "execution.started":
            resumed = bool(payload.get("resumed"))
            return _event("task.started", eid, message="resumed" if resumed else "started")
        if kind == "execution.waiting":
            return self.waiting(payload.get("interrupts") or [])
        if kind == "model.request":
            return _event("task.progress", eid, message="working") if payload.get("attempt", 0) == 0 else None
        if kind == "output.retry":
            return _event("task.progress", eid, message="the answer needed a correction; retrying")
        if kind == "flow.step.completed":
            self.steps += 1
            return _event("task.progress", eid, message=f"{self.steps} step{'s' if self.steps > 1 else ''} done")
        if kind == "flow.signal":
            return _event("task.progress", eid, message="answer received; continuing")
        if kind == "flow.wait.timeout":
            return _event("task.progress", eid, message="no answer came in time; continuing")
        if kind == "flow.stream":
            # a flow chunk's ``ctx.put_into_stream({"message": ..., "percent": ...})`` is its progress;
            # any other stream item is the flow's own business and stays inside
            item = payload.get("item")
            if isinstance(item, dict) and isinstance(item.get("partial"), dict):
                return self._flow_partial(item["partial"])
            if isinstance(item, dict) and isinstance(item.get("message"), str):
                return self._progress(item)
            return None
        if kind.endswith(".progress"):
            return self._progress(payload)
        return None

    def _flow_partial(self, partial: dict[str, Any]) -> ProductEvent | None:
        """``ctx.put_into_stream({"partial": {...}})``: a flow step passing on the fields an agent it
        runs streams (same ``data`` as an agent's own ``task.partial``), so a page following the
        flow, also from another process, shows them."""
        eid = self.execution_id
        if partial.get("reset") is True:
            return _event("task.partial", eid, message="redoing the answer", data={"reset": True})
        field = partial.get("field")
        if not isinstance(field, str):
            return None
        delta = partial.get("delta")
        data = {
            "field": field,
            "delta": delta if isinstance(delta, str) else "",
            "value": jsonable(partial.get("value")),
            "complete": bool(partial.get("complete")),
        }
        return _event("task.partial", eid, data=data)

    def _progress(self, payload: dict[str, Any]) -> ProductEvent:
        progress = Progress.read(payload)  # the kernel's convention: message, percent in 0..100
        return _event("task.progress", self.execution_id, message=progress.message, percent=progress.percent)

    def waiting(self, interrupts: list[Any]) -> ProductEvent:
        """``task.waiting``: each awaited signal with its question and answer schema, and how to answer."""
        signals: list[dict[str, Any]] = []
        for item in interrupts:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                continue
            name: str = item["name"]
            payload = item.get("payload")
            entry: dict[str, Any] = {"name": name, "message": "", "schema": None}
            if isinstance(payload, str):
                entry["message"] = payload
            elif isinstance(payload, dict):
                text = payload.get("message", payload.get("question", payload.get("prompt")))
                entry["message"] = text if isinstance(text, str) else ""
                schema = payload.get("schema")
                entry["schema"] = schema if isinstance(schema, dict) else None
                details = {k: v for k, v in payload.items() if k not in ("message", "question", "prompt", "schema")}
                if details:
                    entry["details"] = jsonable(details)
            if isinstance(item.get("deadline"), int | float):
                entry["deadline"] = item["deadline"]
            entry["answer"] = {
                "method": "POST",
                "path": self._signal_path(name),
                "body": {"payload": "<an answer matching schema>", "request_id": "<unique per answer>"},
            }
            signals.append(entry)
        names = ", ".join(s["name"] for s in signals) or "a signal"
        first = next((s["message"] for s in signals if s["message"]), "")
        return _event(
            "task.waiting",
            self.execution_id,
            message=first or f"waiting for {names}",
            waiting_for={"signals": signals},
        )

    def failed(self, code: str, detail: str = "") -> ProductEvent:
        message = FAILURE_TEXT.get(code, FAILURE_TEXT["error"])
        if detail:
            message = f"{message}: {detail}"
        return _event("task.failed", self.execution_id, message=message, data={"code": code})

    def completed(self, data: Any) -> ProductEvent:
        return _event("task.completed", self.execution_id, message="completed", percent=100.0, data=data)

    # ---------------------------------------------------------------------------- instant events

    def instant(self, event: Any) -> ProductEvent | None:
        """``task.partial`` for an instant event (``keel.InstantEvent``), or ``None`` when it adds nothing."""
        eid = self.execution_id
        if getattr(event, "kind", "field") == "reset":
            self._fields.clear()
            return _event("task.partial", eid, message="redoing the answer", data={"reset": True})
        path: str = event.path
        if path == "":
            if event.is_complete:
                return None  # the root closed: task.completed carries the validated whole
            if isinstance(event.delta, str) and event.delta:
                # a plain-text answer: deltas only (join them); the value arrives with task.completed
                return _event(
                    "task.partial", eid, data={"field": "", "delta": event.delta, "value": None, "complete": False}
                )
            return None
        split = _top(path)
        if split is None:
            return None
        key, rest = split
        if rest == "":
            value = event.value
            if isinstance(value, dict | list):
                self._fields[key] = value
                if not event.is_complete:
                    return None
                value = json.loads(json.dumps(value, default=str))
            data = {
                "field": key,
                "delta": event.delta if isinstance(event.delta, str) else "",
                "value": jsonable(value),
                "complete": bool(event.is_complete),
            }
            return _event("task.partial", eid, data=data)
        # a nested value completed: show the top-level field as it stands now
        if not event.is_complete or not _SEGMENT.match(rest) or key not in self._fields:
            return None
        snapshot = json.loads(json.dumps(self._fields[key], default=str))
        return _event("task.partial", eid, data={"field": key, "delta": "", "value": snapshot, "complete": False})


class Frame(NamedTuple):
    """One product event, encoded once for every reader."""

    event: ProductEvent
    json: str  #: the event as JSON: a WebSocket message
    sse: bytes  #: the event as an SSE frame (``id``, ``event``, ``data``)


class ProductLog:
    """One execution's product events, numbered from 1, each encoded once for every reader: a
    :class:`keel.EventLog` of :class:`Frame` (``frames``), finished when the execution is."""

    def __init__(self, tenant: str, execution_id: str):
        self.tenant = tenant
        self.execution_id = execution_id
        self.frames: EventLog[Frame] = EventLog()
        self.finished = False
        self.waiting_for: dict[str, Any] | None = None
        self.finished_at: float | None = None
        self.ready = anyio.Event()  # set once the events a previous process kept are restored
        self.stored = 0  # records in the store's product stream (the next append expects this)
        self.restored = 0  # events put back from the store (a previous process's)
        self.sources: dict[int, ProductEvent] = {}  # source RuntimeEvent seq -> the restored event of it
        self.persisting = True  # False once another process writes the stream, or the store failed

    def __len__(self) -> int:
        return len(self.frames)

    def restore(self, events: list[ProductEvent], sources: list[int | None] | None = None) -> None:
        """Put back the events kept in the store, with their seqs (and ``sources``: the seq of the
        RuntimeEvent each was projected from, where known). A seq that was not kept (a
        ``task.partial``: agents' answers, which no restart continues) becomes a placeholder."""
        pairs = list(zip(events, sources or [None] * len(events), strict=True))
        for event, source in sorted(pairs, key=lambda pair: pair[0].seq or 0):
            while event.seq is not None and len(self.frames) + 1 < event.seq:
                self.append(_event("task.progress", self.execution_id, message="(not kept)"))
            self.append(event)
            if source is not None:
                self.sources[source] = event
        self.stored = len(events)
        self.restored = len(self.frames)

    def append(self, event: ProductEvent) -> ProductEvent:
        event.seq = len(self.frames) + 1
        text = event.model_dump_json()
        if event.type == "task.waiting":
            self.waiting_for = event.waiting_for
        elif event.type != "task.partial":
            self.waiting_for = None
        self.frames.append(Frame(event, text, f"id: {event.seq}\nevent: {event.type}\ndata: {text}\n\n".encode()))
        return event

    def close(self) -> None:
        self.finished = True
        self.finished_at = time.monotonic()
        self.frames.notify()

    def wake(self) -> None:
        """Wake every reader waiting in :meth:`changed` (to look at something else, e.g. a shutdown)."""
        self.frames.notify()

    async def changed(self) -> None:
        """Wait for the next event, :meth:`close` or :meth:`wake`."""
        await self.frames.changed()

    def follow(self, since: int = 0, *, stop: Callable[[], bool] | None = None) -> AsyncIterator[Frame]:
        """The frames of the events with ``seq > since``, live until the log is finished, or until
        ``stop()`` says so once the events so far are out (checked on every :meth:`wake`)."""
        return self.frames.follow(since, lambda: self.finished or (stop is not None and stop()))

    async def settled(self) -> None:
        """Wait until the execution has finished or is waiting for a signal."""
        while not self.finished and self.waiting_for is None:
            await self.changed()

    @property
    def last(self) -> ProductEvent | None:
        return self.frames[-1].event if self.frames else None


class ProductHub:
    """Product logs of the executions being followed, one projector each, in the runtime's task group.

    Finished logs beyond ``keep_finished`` are dropped oldest first; following such an execution
    again projects it again from its events.
    """

    def __init__(self, runtime: Runtime, *, keep_finished: int = 1000, state: GatewayState | None = None):
        self.runtime = runtime
        self.keep_finished = keep_finished
        self.state = state  # where product events are kept across restarts (None: in memory only)
        self._logs: OrderedDict[tuple[str, str], ProductLog] = OrderedDict()
        self.listeners: list[Callable[[Execution, ProductLog], None]] = []

    def log(self, execution: Execution, *, new: bool = False) -> ProductLog:
        """The execution's product log, projected from here on; unless ``new`` (just started here),
        the events a previous process kept come first (wait for ``log.ready``)."""
        key = (execution.tenant, execution.id)
        found = self._logs.get(key)
        if found is not None:
            self._logs.move_to_end(key)
            return found
        product = self._logs[key] = ProductLog(execution.tenant, execution.id)
        self.runtime.task_group.start_soon(
            self._project, execution, product, new, name=f"keel gateway project {execution.id}"
        )
        self._evict()
        return product

    def __contains__(self, execution: object) -> bool:
        """Whether this hub holds a log of ``execution`` (an :class:`keel.Execution`)."""
        key = (getattr(execution, "tenant", None), getattr(execution, "id", None))
        return key in self._logs

    def wake_all(self) -> None:
        """Wake every reader of every log (see :meth:`ProductLog.wake`)."""
        for product in list(self._logs.values()):
            product.wake()

    def _evict(self) -> None:
        finished = [k for k, v in self._logs.items() if v.finished]
        for key in finished[: max(0, len(finished) - self.keep_finished)]:
            del self._logs[key]

    async def _restore(self, execution: Execution, product: ProductLog) -> bool:
        """Restore the kept events; ``True`` when they already end the execution."""
        if self.state is None:
            return False
        try:
            kept = await self.state.kept_products(execution.tenant, execution.id)
            product.restore([event for event, _ in kept], [source for _, source in kept])
        except Exception:
            log.warning("the kept product events of %s could not be read", execution.id, exc_info=True)
            product.persisting = False  # do not write over what could not be read
            return False
        last = product.last
        return last is not None and last.type in ("task.completed", "task.failed")

    async def _keep(self, product: ProductLog, batch: list[_Kept]) -> None:
        """Write events to the store (all but ``task.partial``), each with its source RuntimeEvent's
        seq, for the next process."""
        batch = [(event, source) for event, source in batch if event.type != "task.partial"]
        if self.state is None or not product.persisting or not batch:
            return
        events, sources = [event for event, _ in batch], [source for _, source in batch]
        try:
            await self.state.append_products(product.tenant, product.execution_id, events, product.stored, sources)
            product.stored += len(events)
        except ConflictError:
            product.persisting = False  # another process projects it too: its copy is kept
            log.info("product events of %s are kept by another process", product.execution_id)
        except Exception:
            product.persisting = False
            log.warning("keeping product events of %s failed", product.execution_id, exc_info=True)

    async def _keeper(self, product: ProductLog, queued: MemoryObjectReceiveStream[_Kept]) -> None:
        """Keep the log's events in the store, in order, behind the projection (those that came
        during a write go together in the next). The log itself never waits for the store: an
        execution found after a restart, whose events up to its wait are all there at once, shows
        that wait as soon as it is projected, not one store round trip (an fsync) per event later."""
        with queued:
            async for item in queued:
                batch = [item]
                while True:
                    try:
                        batch.append(queued.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                await self._keep(product, batch)

    @staticmethod
    def _add(
        product: ProductLog, event: ProductEvent, keep: MemoryObjectSendStream[_Kept] | None, source: int | None
    ) -> None:
        product.append(event)
        if keep is not None:
            keep.send_nowait((event, source))  # never blocks: the stream has no bound

    async def _project(self, execution: Execution, product: ProductLog, new: bool = False) -> None:
        projection = Projection(execution.id)
        instant = getattr(execution, "instant", None)
        instant_done = anyio.Event()
        try:
            ended = False if new else await self._restore(execution, product)
            product.ready.set()
            if ended:
                return
            repeats = Repeats(product.sources, product.last)  # what it kept: not said again
            async with anyio.create_task_group() as tg:
                keep: MemoryObjectSendStream[_Kept] | None = None
                if self.state is not None:  # what the log gets is kept behind it (see _keeper)
                    keep, queued = anyio.create_memory_object_stream[_Kept](math.inf)
                    tg.start_soon(self._keeper, product, queued)
                if callable(instant):
                    tg.start_soon(self._partials, instant, projection, product, instant_done)
                else:
                    instant_done.set()
                terminal: RuntimeEvent | None = None
                try:
                    async for event in execution.events():
                        if event.kind in TERMINAL:
                            terminal = event
                            continue
                        try:
                            found = projection.runtime(event)
                        except Exception:
                            log.exception("projecting %s of %s failed", event.kind, execution.id)
                            continue
                        waiting = execution.status is ExecutionStatus.WAITING
                        if found is not None and not repeats.repeat(event.seq, found, waiting=waiting):
                            self._add(product, found, keep, event.seq)
                    await instant_done.wait()
                    final = await self._final(execution, projection, terminal)
                    self._add(product, final, keep, terminal.seq if terminal is not None else None)
                finally:
                    if keep is not None:
                        keep.close()  # the keeper writes what is queued, then ends
        except Exception:
            log.exception("the projector of execution %s failed", execution.id)
            if not (product.last and product.last.type in ("task.completed", "task.failed")):
                product.append(projection.failed("error", "its progress could not be followed"))
        finally:
            product.ready.set()
            product.close()
            self._evict()
            for listener in list(self.listeners):
                try:
                    listener(execution, product)
                except Exception:
                    log.exception("a product-log listener failed")

    @staticmethod
    async def _partials(instant: Any, projection: Projection, product: ProductLog, done: anyio.Event) -> None:
        try:
            async for event in instant():
                try:
                    found = projection.instant(event)
                except Exception:
                    log.exception("projecting an instant event of %s failed", projection.execution_id)
                    continue
                if found is not None:
                    product.append(found)
        finally:
            done.set()

    @staticmethod
    async def _final(execution: Execution, projection: Projection, terminal: RuntimeEvent | None) -> ProductEvent:
        status = execution.status
        kind = terminal.kind if terminal is not None else f"execution.{status.value}"
        if kind == "execution.completed":
            try:
                return projection.completed(jsonable(await execution.result()))
            except Exception as err:
                return projection.failed(failure_code(err))
        if kind == "execution.cancelled" or status is ExecutionStatus.CANCELLED:
            return projection.failed("cancelled")
        try:
            await execution.result()
        except Exception as err:  # what it failed with: its KeelError.code says how
            return projection.failed(failure_code(err))
        return projection.failed(failure_code(terminal.payload if terminal is not None else {}))
