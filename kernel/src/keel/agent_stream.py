"""A model turn's stream, read into its :class:`keel.agent_run.AgentExecution`, and the coalescing
that keeps a finished execution's streams small. Split from ``keel.agent`` (issue 17)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import anyio

from keel.errors import OutputLimitExceeded, ToolLoopLimit
from keel.events import RuntimeEvent
from keel.instant import InstantEvent, InstantParser
from keel.types import ModelDone, ModelEvent, TextDelta, ToolCall, ToolCallEvent

if TYPE_CHECKING:
    from keel.agent_run import AgentExecution

FEED_SLICE = 4_096  # characters the instant parser reads between two checkpoints (~2 ms of dense JSON)
_DELTAS_EACH = 256  # chunks of one model turn taken one by one; later ones are batched
_BATCH_CHARS = 1_024
_BATCH_SECONDS = 0.05
_DELTA_KEEP_CHARS = 65_536  # text a finished execution keeps in each model turn's coalesced model.delta

_event = RuntimeEvent.unchecked  # the kernel's one fast builder


class ModelTurn:
    """One model turn's stream, read into its execution: the text parts (fed to the instant parser,
    or shown as they come when the agent has no contract), the tool calls and the ``ModelDone``."""

    __slots__ = ("attempt", "calls", "chars", "done", "execution", "first", "limits", "parser", "parts", "span")

    def __init__(self, execution: AgentExecution, attempt: int, parser: InstantParser | None, span: str) -> None:
        self.execution, self.attempt, self.parser, self.span = execution, attempt, parser, span
        self.limits = execution.agent.limits
        self.parts: list[str] = []
        self.calls: list[ToolCall] = []
        self.chars = 0
        self.done: ModelDone | None = None
        self.first: float | None = None  # perf_counter of the first text delta

    async def take(self, piece: str) -> None:
        execution, parser, parts = self.execution, self.parser, self.parts
        parts.append(piece)
        self.chars += len(piece)
        if parser is not None:
            try:
                if len(piece) <= FEED_SLICE:
                    found = parser.feed(piece)
                    if found:
                        execution._instant.extend(found)
                        execution._attempt_has_instant = True
                else:
                    await execution._feed_slices(parser, piece)
            except OutputLimitExceeded as err:
                raise OutputLimitExceeded(err.limit, err.value, err.maximum, err.what, execution.agent.name) from None
        elif self.chars > self.limits.max_chars:
            maximum, name = self.limits.max_chars, execution.agent.name
            raise OutputLimitExceeded("max_chars", self.chars, maximum, "the answer's size", name)
        elif piece:
            execution._instant.append(InstantEvent("", piece, len(parts), False, self.attempt, parts=parts))
            execution._attempt_has_instant = True
        execution.emit("model.delta", {"attempt": execution._retry, "text": piece}, span_id=self.span)

    async def read(self, stream: AsyncIterator[ModelEvent]) -> None:
        """Read the whole stream, and close it whatever happens.

        Past ``_DELTAS_EACH`` chunks in one turn, tiny chunks are taken in batches (at least
        ``_BATCH_CHARS`` or ``_BATCH_SECONDS`` apart): a model streaming one character at a time
        then costs one event per batch, not one per character, and a slow one is not delayed."""
        try:
            pending: list[str] = []
            pending_chars = 0
            received = 0
            flushed = 0.0
            async for event in stream:
                if isinstance(event, TextDelta):
                    if self.first is None:
                        self.first = time.perf_counter()
                    received += 1
                    if received <= _DELTAS_EACH:
                        await self.take(event.text)
                        continue
                    pending.append(event.text)
                    pending_chars += len(event.text)
                    now = time.perf_counter()
                    if pending_chars >= _BATCH_CHARS or now - flushed >= _BATCH_SECONDS:
                        batch, pending, pending_chars, flushed = "".join(pending), [], 0, now
                        await self.take(batch)
                    continue
                if pending:
                    batch, pending, pending_chars = "".join(pending), [], 0
                    await self.take(batch)
                if isinstance(event, ToolCallEvent):
                    self._tool_call(event.call)
                elif isinstance(event, ModelDone):
                    self.done = event
            if pending:
                await self.take("".join(pending))
        finally:
            close = getattr(stream, "aclose", None)
            if close is not None:
                with anyio.CancelScope(shield=True):
                    await close()

    def _tool_call(self, call: ToolCall) -> None:
        execution, agent = self.execution, self.execution.agent
        self.calls.append(call)
        if len(self.calls) > agent.max_tool_calls:
            raise ToolLoopLimit(
                f"agent {agent.name!r}: the model asked for more than {agent.max_tool_calls} tool calls "
                "in one turn, and none of them ran; raise max_tool_calls if such turns are legitimate",
                "max_tool_calls",
            )
        execution.emit(
            "model.tool_call",
            {"attempt": execution._retry, "id": call.id, "name": call.name, "arguments": call.arguments},
            span_id=self.span,
        )


# ------------------------------------------------------------------------------ finished footprint


def _coalesce_deltas(events: list[RuntimeEvent]) -> list[RuntimeEvent]:
    """One ``model.delta`` per run of them in one span: the text joined (and cut), ``chunks`` counted."""
    out: list[RuntimeEvent] = []
    run: list[RuntimeEvent] = []

    def flush() -> None:
        if len(run) == 1 and len(run[0].payload.get("text", "")) <= _DELTA_KEEP_CHARS:
            out.append(run[0])
        elif run:
            last = run[-1]
            text = "".join(e.payload.get("text", "") for e in run)
            payload: dict[str, Any] = {**last.payload, "text": text[:_DELTA_KEEP_CHARS], "chunks": len(run)}
            if len(text) > _DELTA_KEEP_CHARS:
                payload["truncated"] = True
                payload["chars"] = len(text)
            out.append(_event({**last.__dict__, "payload": payload}))
        run.clear()

    for event in events:
        if event.kind == "model.delta":
            if run and run[-1].span_id != event.span_id:
                flush()
            run.append(event)
        else:
            flush()
            out.append(event)
    flush()
    return out


def _is_text(event: InstantEvent) -> bool:
    return event.kind == "field" and (event._parts is not None or isinstance(event._value, str))


def _place(event: InstantEvent) -> Any:
    """What identifies an event's field without building its path: its container frame and key."""
    return event._path if event._path is not None else (id(event._frame), event._seg)


def _coalesce_instant(events: list[InstantEvent]) -> list[InstantEvent]:
    """One event per run of a string field's events (same path and attempt): the deltas joined."""
    out: list[InstantEvent] = []
    i, n = 0, len(events)
    while i < n:
        event = events[i]
        j = i + 1
        if not event.is_complete and _is_text(event):
            place = _place(event)
            while j < n and _is_text(events[j]) and events[j].attempt == event.attempt and _place(events[j]) == place:
                j += 1
                if events[j - 1].is_complete:
                    break
        if j - i == 1:
            out.append(event)
        else:
            last = events[j - 1]
            delta = "".join(e.delta for e in events[i:j])
            out.append(InstantEvent(event.path, delta, last.value, last.is_complete, last.attempt))
        i = j
    return out
