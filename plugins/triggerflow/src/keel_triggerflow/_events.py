"""An execution's events: appended to a :class:`keel.EventLog`, built into RuntimeEvents lazily."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable
from threading import get_ident
from typing import TYPE_CHECKING, Any

import anyio.from_thread

from keel import EventLog, RuntimeEvent, current_trace

if TYPE_CHECKING:
    from keel.events import EventBus


class Pending:
    """An event nobody has received yet: built into a RuntimeEvent only when read (``events()``),
    so a run that nobody watches does not pay for building one per step."""

    __slots__ = ("built", "kind", "level", "payload", "seq", "span", "time")
    built: RuntimeEvent

    def __init__(self, kind: str, payload: dict[str, Any], seq: int, level: str, span: str | None = None):
        self.kind = kind
        self.payload = payload
        self.seq = seq
        self.level = level
        self.span = span  # a step attempt's own span id (its parent: the execution's)
        self.time = time.time()
        # 'built' (the RuntimeEvent, once read) is set on first read only: one store less per event


class FlowEvents:
    """The events of one execution, in order, with a seq from 1; published on the runtime's bus
    when it has listeners, else built only when :meth:`follow` reads them."""

    __slots__ = ("_append", "bus", "execution_id", "log", "loop_thread", "seq", "template")

    def __init__(self, execution_id: str, tenant: str, bus: EventBus):
        self.execution_id = execution_id
        self.bus = bus
        self.log: EventLog[RuntimeEvent | Pending] = EventLog()
        self._append = self.log.append
        self.seq = 0  # the last event's seq (= len(log), kept here: cheaper than asking the log)
        caller = current_trace()  # started for a caller with a traceparent: continue its trace
        self.template = RuntimeEvent(
            kind="flow", execution_id=execution_id, span_id=os.urandom(8).hex(), source="triggerflow", tenant=tenant,
            trace_id=caller.trace_id if caller is not None else os.urandom(16).hex(),
            parent_span_id=caller.span_id if caller is not None else None,
        )  # fmt: skip
        self.loop_thread = get_ident()  # the driver's thread (set when it starts)

    def __len__(self) -> int:
        return self.seq

    def continue_trace(self, trace_id: Any, span_id: Any) -> None:
        """A loaded execution goes on in the trace its start record names (another process may have
        started it): this run's span is a child of the first run's."""
        if isinstance(trace_id, str) and trace_id:
            parent = span_id if isinstance(span_id, str) and span_id else None
            self.template = self.template.model_copy(update={"trace_id": trace_id, "parent_span_id": parent})

    def trace_ids(self) -> tuple[str, str]:
        """The trace id and this run's span id, which a start record keeps for :meth:`continue_trace`."""
        return self.template.trace_id or "", self.template.span_id or ""

    def add(
        self, kind: str, payload: dict[str, Any], level: str = "info", span: str | None = None, publish: bool = True
    ) -> None:
        """Append an event; ``publish=False``: only for this execution's readers, not the bus (what a
        follower re-tells of another process's run: that process's observers record it already)."""
        if get_ident() != self.loop_thread:  # from a plain chunk in its worker thread
            anyio.from_thread.run_sync(self.add, kind, payload, level, span, publish)
            return
        self.seq = seq = self.seq + 1
        pending = Pending(kind, payload, seq, level, span)
        bus = self.bus
        if publish and bus.has_listeners:
            event = self.build(pending)
            self._append(event)
            bus.publish(event)
        else:  # nobody would receive it now: build it when events() reads it
            self._append(pending)

    def build(self, pending: Pending) -> RuntimeEvent:
        # a per-execution template's fields, updated: no validation on this hot path
        update = {
            "id": f"{self.execution_id}.{pending.seq}",
            "kind": pending.kind,
            "time": pending.time,
            "seq": pending.seq,
            "level": pending.level,
            "payload": pending.payload,
        }
        if pending.span is not None:
            update["span_id"] = pending.span
            update["parent_span_id"] = self.template.span_id
        return RuntimeEvent.unchecked({**self.template.__dict__, **update})  # the kernel's one fast builder

    def notify(self) -> None:
        self.log.notify()

    async def follow(self, since: int, finished: Callable[[], bool]) -> AsyncIterator[RuntimeEvent]:
        """The events after ``since`` (a negative one reads from the start), live until ``finished()``."""
        async for item in self.log.follow(max(since, 0), finished):
            if type(item) is Pending:
                built: RuntimeEvent | None = getattr(item, "built", None)
                if built is None:
                    built = item.built = self.build(item)
                yield built
            else:
                yield item  # type: ignore[misc]
