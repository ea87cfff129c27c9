"""The span bookkeeping under :class:`keel_otel.spans.SpanMapper`: which spans are open, starting
one with the kernel's ids pinned, ending it at its event's time, and the bounds on memory (at most
``max_open`` open spans, a ``ttl`` after which a span whose end never came is ended as abandoned);
plus the pure helpers that turn event payloads into GenAI attributes.

Split from ``spans.py`` (issue 17): the mapper subclasses :class:`SpanBook`; its handlers are bound
once in ``__init__``, so the split adds no lookup per event.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    Tracer,
    set_span_in_context,
)
from pydantic import BaseModel

import keel
from keel_otel import semconv as sc

__all__ = ["Key", "PinnedIds", "SpanBook"]

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_ROOT = Context()  # never the dispatcher's current span: our traces are the kernel's
_SWEEP_EVERY = 1.0  # seconds of event time between two sweeps for abandoned spans

Key = tuple[str, str | None, str | None]


class PinnedIds(IdGenerator):
    """The ids the mapper pins for the next span (the kernel's), else random ones."""

    def __init__(self) -> None:
        self.span: int | None = None
        self.trace: int | None = None
        self._random = RandomIdGenerator()

    def generate_span_id(self) -> int:
        value, self.span = self.span, None
        return value if value is not None else self._random.generate_span_id()

    def generate_trace_id(self) -> int:
        value, self.trace = self.trace, None
        return value if value is not None else self._random.generate_trace_id()

    def is_trace_id_random(self) -> bool:
        return True  # the kernel's trace ids are os.urandom, as the SDK's are


class _Open:
    __slots__ = ("answered", "calls", "execution", "span", "started")

    def __init__(self, span: Span, started: float, execution: str | None):
        self.span = span
        self.started = started
        self.execution = execution
        self.answered: float | None = None  # a chat span: when the model's answer ended
        self.calls: list[dict[str, Any]] = []  # a chat span, content captured: the tool calls asked for


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


def _hex(value: str | None, digits: int) -> int | None:
    if not value or len(value) != digits:
        return None
    try:
        number = int(value, 16)
    except ValueError:
        return None
    return number or None


def _derived_span_id(*parts: str | None) -> int:
    digest = hashlib.blake2b("\x1f".join(p or "" for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") or 1


def _split_model(name: Any) -> tuple[str, str]:
    """Model drivers name themselves ``provider:model`` (``openai:gpt-4o``); the scripted one ``scripted``."""
    text = str(name or "unknown")
    provider, sep, model = text.partition(":")
    return (provider, model) if sep and provider and model else (text, text)


def _error_type(text: Any) -> str:
    """``'OutputValidationError: ...'`` -> ``'OutputValidationError'``; anything else -> ``_OTHER``."""
    head = str(text or "").split(":", 1)[0].strip()
    return head if head.isidentifier() else "_OTHER"


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _text_part(content: str) -> dict[str, Any]:
    return {"type": "text", "content": content}


def _plain(value: Any) -> Any:
    """An execution's input or output as the model saw it: text as is, a pydantic object as JSON."""
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    return value


_PARAMETERS: dict[str, tuple[str, type]] = {
    "temperature": (sc.GEN_AI_REQUEST_TEMPERATURE, float),
    "max_tokens": (sc.GEN_AI_REQUEST_MAX_TOKENS, int),
    "top_p": (sc.GEN_AI_REQUEST_TOP_P, float),
    "seed": (sc.GEN_AI_REQUEST_SEED, int),
    "frequency_penalty": (sc.GEN_AI_REQUEST_FREQUENCY_PENALTY, float),
    "presence_penalty": (sc.GEN_AI_REQUEST_PRESENCE_PENALTY, float),
}


def _request_parameters(options: Mapping[str, Any]) -> dict[str, Any]:
    """The request's sampling options under their GenAI names (not content: always recorded)."""
    out: dict[str, Any] = {}
    for option, (name, kind) in _PARAMETERS.items():
        value = options.get(option)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if kind is int and isinstance(value, float) and not value.is_integer():
                continue
            out[name] = kind(value)
    stop = options.get("stop")
    if isinstance(stop, str):
        out[sc.GEN_AI_REQUEST_STOP_SEQUENCES] = [stop]
    elif isinstance(stop, list) and all(isinstance(item, str) for item in stop):
        out[sc.GEN_AI_REQUEST_STOP_SEQUENCES] = list(stop)
    return out


def _scalars(payload: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {
        prefix + key: value
        for key, value in payload.items()
        if isinstance(value, (str, bool, int, float)) and key != "value"  # a signal's answer is content
    }


_STEP_EVENTS = frozenset({"flow.step.started", "flow.step.completed", "flow.step.failed", "flow.step.retry"})
#: the kinds of span that belong to an execution and end with it at the latest
_CHILDREN = frozenset({"m", "t", "s"})


class SpanBook:
    """The open spans of one mapper and the operations on them (see :class:`~keel_otel.spans.SpanMapper`)."""

    def __init__(
        self,
        tracer: Tracer,
        ids: PinnedIds,
        *,
        capture_content: bool = False,
        max_content_chars: int = 16_384,
        max_open: int = 10_000,
        ttl: float = 3600.0,
    ):
        self._tracer = tracer
        self._ids = ids
        self.capture_content = capture_content
        self._max_chars = max_content_chars
        self._max_open = max_open
        self._ttl = ttl
        self._open: OrderedDict[Key, _Open] = OrderedDict()
        self._children: dict[str, set[Key]] = {}  # execution id -> its open model/tool/step spans
        self._answered: dict[str, Key] = {}  # execution id -> its chat span waiting for a verdict
        self._lock = threading.Lock()  # one mapper may serve runtimes in several threads
        self._swept = 0.0
        #: spans ended by keel-otel because their end never came (or the open-span limit was hit)
        self.abandoned = 0

    @property
    def open_spans(self) -> int:
        """How many spans are open now."""
        return len(self._open)

    def close_all(self, now: float) -> None:
        """End every open span as abandoned (the process is going away)."""
        with self._lock:
            for key in list(self._open):
                self._abandon(key, now)

    # ---------------------------------------------------------------------------- plumbing

    def _start(
        self,
        key: Key,
        name: str,
        kind: SpanKind,
        event: keel.RuntimeEvent,
        attributes: dict[str, Any],
        *,
        trace_id: int | None,
        span_id: int | None,
        parent: int | None,
    ) -> _Open:
        if key in self._open:  # a start for a span already open (a resumed run): the old one ends here
            self._abandon(key, event.time)
        context = _ROOT
        if trace_id is not None and parent is not None:
            parent_context = SpanContext(trace_id, parent, is_remote=False, trace_flags=_SAMPLED)
            context = set_span_in_context(NonRecordingSpan(parent_context), _ROOT)
        else:
            self._ids.trace = trace_id
        self._ids.span = span_id
        try:
            span = self._tracer.start_span(
                name, context=context, kind=kind, attributes=attributes, start_time=_ns(event.time)
            )
        finally:
            self._ids.span = self._ids.trace = None
        record = self._open[key] = _Open(span, event.time, key[1] if key[0] in _CHILDREN else None)
        if record.execution is not None:
            self._children.setdefault(record.execution, set()).add(key)
        if len(self._open) > self._max_open:
            self._abandon(next(iter(self._open)), event.time)
        return record

    def _pop(self, key: Key) -> _Open | None:
        record = self._open.pop(key, None)
        if record is not None and record.execution is not None:
            children = self._children.get(record.execution)
            if children is not None:
                children.discard(key)
                if not children:
                    del self._children[record.execution]
            if self._answered.get(record.execution) == key:
                del self._answered[record.execution]
        return record

    def _end(
        self,
        key: Key,
        when: float,
        attributes: Mapping[str, Any] | None = None,
        *,
        error: str | None = None,
        message: str = "",
    ) -> None:
        record = self._pop(key)
        if record is None:
            return
        span = record.span
        if attributes:
            span.set_attributes(attributes)
        if error is not None:
            span.set_attribute(sc.ERROR_TYPE, error)
            span.set_status(Status(StatusCode.ERROR, message or error))
        span.end(end_time=_ns(max(when, record.started)))

    def _abandon(self, key: Key, now: float) -> None:
        record = self._open.get(key)
        if record is None:
            return
        if record.answered is not None:  # a chat span whose verdict never came is complete anyway
            self._close_answered(key[1] or "", key)
            return
        self.abandoned += 1
        self._end(
            key,
            now,
            {sc.KEEL_OTEL_ABANDONED: True},
            error="abandoned",
            message="keel-otel ended this span: its end event never came (open_span_ttl or max_open_spans)",
        )

    def _sweep(self, now: float) -> None:
        self._swept = now
        limit = now - self._ttl
        while self._open:
            key, record = next(iter(self._open.items()))
            if record.started > limit:
                break
            self._abandon(key, now)

    def _trace(self, event: keel.RuntimeEvent) -> int | None:
        return _hex(event.trace_id, 32)

    def _execution_span(self, event: keel.RuntimeEvent) -> int | None:
        """The execution's span id: the one its events carry (a flow step's events carry their own
        span and the execution's as parent), else one derived from the trace and execution ids."""
        if event.execution_id is None:
            return None
        own = _hex(event.parent_span_id if event.kind in _STEP_EVENTS else event.span_id, 16)
        return own if own is not None else _derived_span_id(event.trace_id, event.execution_id)

    def _content(self, value: Any) -> str:
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
        if len(text) > self._max_chars:
            return text[: self._max_chars] + f"... ({len(text)} chars)"
        return text

    def _bounded(self, value: Any) -> Any:
        """A structured content value as is, unless its JSON is too long: then the cut text."""
        text = json.dumps(value, ensure_ascii=False, default=str)
        return value if len(text) <= self._max_chars else self._content(text)

    def _message(self, message: keel.Message) -> dict[str, Any]:
        """A kernel message in the GenAI input-messages schema."""
        if message.role == "tool":
            parts = [
                {"type": "tool_call_response", "id": message.tool_call_id, "result": self._content(message.content)}
            ]
        else:
            parts = [_text_part(self._content(message.content))] if message.content else []
            parts.extend(
                {"type": "tool_call", "id": c.id, "name": c.name, "arguments": self._bounded(c.arguments)}
                for c in message.tool_calls
            )
        return {"role": message.role, "parts": parts}

    def _note(self, key: Key, name: str, event: keel.RuntimeEvent, attributes: Mapping[str, Any]) -> None:
        record = self._open.get(key)
        if record is not None:
            record.span.add_event(name, dict(attributes), timestamp=_ns(event.time))

    # --------------------------------------------------------------------------- executions

    def _close_answered(self, execution: str, key: Key | None = None) -> None:
        key = key or self._answered.get(execution)
        if key is None:
            return
        record = self._open.get(key)
        if record is not None:
            self._end(key, record.answered if record.answered is not None else record.started)
        self._answered.pop(execution, None)
