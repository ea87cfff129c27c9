"""RuntimeEvent, and the bus that carries it to subscribers and observers.

Publishing never blocks and never raises: each subscriber and the observer dispatcher has a
bounded buffer; when one is full its events are dropped and counted in :attr:`EventBus.dropped`.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from pydantic import BaseModel, ConfigDict, Field

from keel.errors import KeelError
from keel.types import new_id

__all__ = [
    "EventBus",
    "RuntimeEvent",
    "Subscription",
    "TraceParent",
    "continuing_trace",
    "current_trace",
    "inline_observer",
    "new_span_id",
    "new_trace_id",
]

log = logging.getLogger("keel.events")


def new_trace_id() -> str:
    """A 128-bit trace id in hex, as OpenTelemetry spells it."""
    return os.urandom(16).hex()


def new_span_id() -> str:
    """A 64-bit span id in hex."""
    return os.urandom(8).hex()


_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")


@dataclass(frozen=True)
class TraceParent:
    """A caller's trace, from a W3C ``traceparent`` header: executions started while it is current
    (:func:`continuing_trace`) put their events in ``trace_id``, their own span a child of
    ``span_id``, so an OpenTelemetry exporter continues the caller's trace."""

    trace_id: str
    span_id: str

    @classmethod
    def parse(cls, header: str | None) -> TraceParent | None:
        """The trace a ``traceparent`` header names, or ``None`` when it is absent or invalid (W3C
        Trace Context: an invalid header is ignored and a new trace starts)."""
        match = _TRACEPARENT.match((header or "").strip())
        if match is None:
            return None
        version, trace_id, span_id, _flags, rest = match.groups()
        if version == "ff" or (version == "00" and rest) or set(trace_id) == {"0"} or set(span_id) == {"0"}:
            return None
        return cls(trace_id=trace_id, span_id=span_id)


_CURRENT_TRACE: ContextVar[TraceParent | None] = ContextVar("keel_trace_parent", default=None)


@contextmanager
def continuing_trace(parent: TraceParent | None) -> Iterator[None]:
    """Executions started inside continue ``parent``'s trace (``None``: each starts its own)."""
    token = _CURRENT_TRACE.set(parent)
    try:
        yield
    finally:
        _CURRENT_TRACE.reset(token)


def current_trace() -> TraceParent | None:
    """The trace an execution started now continues (see :func:`continuing_trace`), if any."""
    return _CURRENT_TRACE.get()


class RuntimeEvent(BaseModel):
    """A fact about the runtime: what happened, to which execution, in which trace."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    id: str = Field(default_factory=lambda: new_id("ev"))
    kind: str = Field(description="dotted name: execution.started, model.delta, action.call, ...")
    time: float = Field(default_factory=time.time)
    execution_id: str | None = None
    seq: int | None = Field(default=None, description="position in the execution's own event sequence")
    trace_id: str | None = None
    span_id: str | None = None
    parent_span_id: str | None = None
    source: str = "keel"
    level: str = "info"
    tenant: str = "default"
    payload: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def unchecked(cls, fields: dict[str, Any]) -> RuntimeEvent:
        """A RuntimeEvent from ``fields`` (every field, each valid by construction), unvalidated.

        The one fast builder for executions' hot paths (one event per streamed chunk): pydantic's
        validation costs about 5 us an event and ``model_construct`` about 8 us; filling the
        instance directly, as ``model_construct`` does, costs under 1 us. ``fields`` becomes the
        event's ``__dict__`` (do not reuse it). A dict without every field is a ``KeelError``;
        the values are the caller's to get right (tests compare with validated twins).
        """
        if len(fields) != _FIELD_COUNT:
            missing = sorted(set(cls.model_fields) - set(fields))
            raise KeelError(
                f"RuntimeEvent.unchecked needs every field; missing {missing}, extra {sorted(set(fields) - set(cls.model_fields))}"
            )
        event = cls.__new__(cls)
        _setattr(event, "__dict__", fields)
        _setattr(event, "__pydantic_fields_set__", set(_FIELD_NAMES))  # its own: assignment adds to it
        _setattr(event, "__pydantic_extra__", None)
        _setattr(event, "__pydantic_private__", None)
        return event


_FIELD_NAMES = frozenset(RuntimeEvent.model_fields)
_FIELD_COUNT = len(_FIELD_NAMES)
_setattr = object.__setattr__

Observer = Callable[[RuntimeEvent], Any]


def inline_observer(function: Any = None, *, bind: Callable[[Any], Observer | None] | None = None) -> Any:
    """Mark a ``keel_on_runtime_event`` implementation as *inline*: the bus calls it from
    :meth:`EventBus.publish`, on the execution's own path, in publish order, instead of from the
    dispatcher task one loop turn later. Saves the per-event hop through a queue and the event loop
    (about 3 us an event on the bench's workload), for an observer that only hands the event on.

    The contract: it must not block, must not await (it returns ``None``), and should cost well
    under a microsecond (append to a bounded queue, and return). One that raises or returns
    anything but ``None`` is disabled for that runtime's bus, logged and counted in
    :attr:`EventBus.dropped` (``observer:<plugin>``) and :attr:`EventBus.disabled`; the execution
    goes on. Put ``@keel.inline_observer`` under ``@keel.hookimpl``::

        @keel.hookimpl
        @keel.inline_observer
        def keel_on_runtime_event(event):
            QUEUE.append(event)

    ``bind``: a function of the runtime, called once when the runtime's bus is built, that returns
    the callable its bus calls with each event (``callable(event)``, the same contract), or
    ``None`` to observe nothing of that runtime. The bus then calls that callable directly: no
    wrapper passing ``runtime``, no per-event look-up of what the runtime is configured for (a
    recorder's ``queue.append``, say, one C call an event). The hook function itself stays what a
    plain ``pm.hook.keel_on_runtime_event(...)`` call runs. A ``bind`` that raises leaves the
    observer out of that runtime: logged, and shown as the observer disabled on its first event::

        @keel.hookimpl
        @keel.inline_observer(bind=lambda runtime: QUEUE.append if wanted(runtime) else None)
        def keel_on_runtime_event(event):
            QUEUE.append(event)
    """
    if function is None:
        return lambda function: inline_observer(function, bind=bind)
    function.keel_inline = True
    if bind is not None:
        function.keel_bind = bind
    return function


class BoundObserver:
    """What an inline observer's ``bind`` returned for one runtime: the bus calls :attr:`call`
    itself (a builtin such as ``deque.append`` cannot carry the inline mark)."""

    __slots__ = ("call",)
    keel_inline = True

    def __init__(self, call: Observer):
        self.call = call

    def __call__(self, event: RuntimeEvent) -> Any:
        return self.call(event)


def is_inline(observer: Any) -> bool:
    """Whether ``observer`` was marked with :func:`inline_observer`."""
    return getattr(observer, "keel_inline", False) is True


class Subscription:
    """An async iterator over the events published after it was opened."""

    def __init__(self, bus: EventBus, name: str, receive: MemoryObjectReceiveStream[RuntimeEvent]):
        self._bus = bus
        self.name = name
        self._receive = receive

    def __aiter__(self) -> AsyncIterator[RuntimeEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[RuntimeEvent]:
        async for event in self._receive:
            yield event

    def drain(self) -> list[RuntimeEvent]:
        """The events already delivered to this subscription, taken without waiting (for a
        consumer that reads after the fact, as eval does when a run has ended)."""
        taken: list[RuntimeEvent] = []
        while True:
            try:
                taken.append(self._receive.receive_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                return taken

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._bus._unsubscribe(self.name)
        self._receive.close()


class EventBus:
    """Fan-out of RuntimeEvents to subscribers (memory streams) and observers (one dispatcher task).

    :param observers: callables invoked, one by one, by :meth:`run_observers`; each is isolated
        from the others' failures. Those marked with :func:`inline_observer` are called from
        :meth:`publish` instead, in order; one that fails is disabled (:attr:`disabled`).
    :param buffer: how many events each subscriber and the dispatcher may hold before dropping.
    """

    def __init__(self, observers: list[tuple[str, Observer]] | None = None, buffer: int = 1024):
        every = list(observers or [])
        self._inline = [
            (plugin, observer.call if isinstance(observer, BoundObserver) else observer)
            for plugin, observer in every
            if is_inline(observer)
        ]
        self._observers = [(plugin, observer) for plugin, observer in every if not is_inline(observer)]
        self._buffer = buffer
        self._subs: dict[str, MemoryObjectSendStream[RuntimeEvent]] = {}
        self._observer_send: MemoryObjectSendStream[RuntimeEvent] | None = None
        self._observer_receive: MemoryObjectReceiveStream[RuntimeEvent] | None = None
        if self._observers:
            self._observer_send, self._observer_receive = anyio.create_memory_object_stream[RuntimeEvent](buffer)
        self.dropped: dict[str, int] = {}
        #: inline observers turned off because they raised or returned something: plugin -> why
        self.disabled: dict[str, str] = {}
        self.published = 0

    @property
    def has_listeners(self) -> bool:
        """Whether anything would receive an event: producers may skip building costly ones."""
        return bool(self._subs) or self._observer_send is not None or bool(self._inline)

    def publish(self, event: RuntimeEvent) -> None:
        """Hand an event to the inline observers, every subscriber and the dispatcher; never blocks."""
        self.published += 1
        for plugin, observer in self._inline:
            try:
                result = observer(event)
            except Exception as err:  # an observer must never break the runtime
                self._disable(plugin, observer, event, f"raised {type(err).__name__}: {err}")
                continue
            if result is not None:
                if inspect.iscoroutine(result):
                    result.close()  # never awaited: say why, not "coroutine was never awaited"
                self._disable(
                    plugin, observer, event, f"returned {type(result).__name__}, not None (it must not await)"
                )
        for name, send in list(self._subs.items()):
            self._offer(name, send, event)
        if self._observer_send is not None:
            self._offer("observers", self._observer_send, event)

    def _disable(self, plugin: str, observer: Observer, event: RuntimeEvent, why: str) -> None:
        self._inline = [pair for pair in self._inline if pair[1] is not observer]
        self.disabled[plugin] = why
        self.dropped[f"observer:{plugin}"] = self.dropped.get(f"observer:{plugin}", 0) + 1
        log.error(
            "inline runtime-event observer %r %s on %s; it is disabled for this runtime (an inline "
            "observer must only enqueue: see keel.inline_observer)",
            plugin,
            why,
            event.kind,
            exc_info=why.startswith("raised"),
        )

    def _offer(self, name: str, send: MemoryObjectSendStream[RuntimeEvent], event: RuntimeEvent) -> None:
        try:
            send.send_nowait(event)
        except anyio.WouldBlock:
            self.dropped[name] = self.dropped.get(name, 0) + 1
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            self._subs.pop(name, None)

    def subscribe(self, name: str | None = None, buffer: int | None = None) -> Subscription:
        """Open a subscription; close it (or use ``async with``) when done."""
        name = name or new_id("sub")
        send, receive = anyio.create_memory_object_stream[RuntimeEvent](buffer or self._buffer)
        self._subs[name] = send
        return Subscription(self, name, receive)

    def _unsubscribe(self, name: str) -> None:
        send = self._subs.pop(name, None)
        if send is not None:
            send.close()

    async def run_observers(self) -> None:
        """Deliver events to observers until :meth:`close`; run it in a task group."""
        receive = self._observer_receive
        if receive is None:
            return
        async for event in receive:
            await self._deliver(event)
            # then everything already queued, without a trip through the event loop per event: an
            # execution emits a burst of events per turn of the loop, and a dispatcher that took
            # one per turn would fall behind and drop them even when its observers are instant
            while True:
                try:
                    event = receive.receive_nowait()
                except anyio.WouldBlock:
                    break
                except anyio.EndOfStream:
                    return
                await self._deliver(event)

    async def _deliver(self, event: RuntimeEvent) -> None:
        for plugin, observer in self._observers:
            try:
                result = observer(event)
                if inspect.isawaitable(result):
                    await result
            except Exception:  # an observer must never break the runtime
                self.dropped[f"observer:{plugin}"] = self.dropped.get(f"observer:{plugin}", 0) + 1
                log.exception("runtime-event observer %r failed on %s", plugin, event.kind)

    def close(self) -> None:
        """End every subscription and the observer dispatcher (after it drains)."""
        for name in list(self._subs):
            self._unsubscribe(name)
        if self._observer_send is not None:
            self._observer_send.close()
