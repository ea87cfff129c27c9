"""``ScriptedModel``: a model driver that answers from a script, for tests and offline demos.

It streams like a real driver (text in chunks of any size, tool calls, one final ``ModelDone``),
and records every request it received so a test can assert on prompts.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

import anyio

from keel.errors import KeelError
from keel.refs import load_ref
from keel.types import (
    ModelCapabilities,
    ModelConfig,
    ModelDone,
    ModelEvent,
    ModelRequest,
    TextDelta,
    ToolCall,
    ToolCallEvent,
    Usage,
)

__all__ = ["Reply", "ScriptedModel", "scripted_factory"]


@dataclass
class Reply:
    """One scripted answer: text, tool calls, or both.

    :param chunks: how to cut the text: a chunk size, or explicit sizes (cycled); default 16.
    :param delay: seconds to sleep before each chunk (to exercise timeouts and cancellation).
    """

    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    chunks: int | Sequence[int] = 16
    delay: float = 0.0
    usage: Usage | None = None


Responder = Callable[[ModelRequest], "str | Reply | Awaitable[str | Reply]"]


class ScriptedModel:
    """Answers each request with the next scripted reply, or with ``respond(request)``.

    >>> model = ScriptedModel(['{"name": "Ada"}'], chunks=1)   # one character per chunk
    """

    name = "scripted"

    def __init__(
        self,
        script: Iterable[str | Reply] | Responder | None = None,
        *,
        chunks: int | Sequence[int] | None = None,
        capabilities: ModelCapabilities | None = None,
    ):
        self._respond: Responder | None = None
        self._script: list[str | Reply] = []
        if callable(script):
            self._respond = script
        elif script is not None:
            self._script = list(script)
        self._chunks = chunks
        self.capabilities = capabilities or ModelCapabilities(streaming=True, tools=True, json_schema=False)
        self.requests: list[ModelRequest] = []
        self.closed = False

    def add(self, *replies: str | Reply) -> ScriptedModel:
        self._script.extend(replies)
        return self

    async def _next_reply(self, request: ModelRequest) -> Reply:
        if self._respond is not None:
            answer = self._respond(request)
            if inspect.isawaitable(answer):
                answer = await answer
        elif self._script:
            answer = self._script.pop(0)
        else:
            raise KeelError(
                f"ScriptedModel ran out of replies after {len(self.requests)} request(s); "
                "add more with ScriptedModel([...]) or .add(...), or pass a function"
            )
        reply = answer if isinstance(answer, Reply) else Reply(text=str(answer))
        if self._chunks is not None:
            reply = Reply(reply.text, reply.tool_calls, self._chunks, reply.delay, reply.usage)
        return reply

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        self.requests.append(request)
        reply = await self._next_reply(request)
        for piece in _cut(reply.text, reply.chunks):
            if reply.delay:
                await anyio.sleep(reply.delay)
            yield TextDelta(text=piece)
        for call in reply.tool_calls:
            yield ToolCallEvent(call=call)
        prompt_words = sum(len(m.content.split()) for m in request.messages)
        usage = reply.usage or Usage(input_tokens=prompt_words, output_tokens=len(reply.text.split()))
        yield ModelDone(finish_reason="tool_calls" if reply.tool_calls else "stop", usage=usage, model=self.name)

    async def aclose(self) -> None:
        self.closed = True


def _cut(text: str, chunks: int | Sequence[int]) -> Iterable[str]:
    if not text:
        return
    sizes = [chunks] if isinstance(chunks, int) else list(chunks)
    if not sizes or any(s < 1 for s in sizes):
        raise ValueError(f"chunk sizes must be positive integers, got {chunks!r}")
    pos, i = 0, 0
    while pos < len(text):
        size = sizes[i % len(sizes)]
        yield text[pos : pos + size]
        pos += size
        i += 1


def scripted_factory(config: ModelConfig) -> ScriptedModel:
    """Build a ScriptedModel from a stack's ``[models.<alias>]`` table.

    ``replies = ["...", ...]`` scripts the answers; ``respond = "module:function"`` names a
    responder function; ``chunks = N`` sets the chunk size.
    """
    options = {**config.options, **(config.model_extra or {})}
    chunks = options.get("chunks")
    if "respond" in options:
        responder = load_ref(str(options["respond"]), what="scripted model: respond =")
        return ScriptedModel(responder, chunks=chunks)
    return ScriptedModel(list(options.get("replies", [])), chunks=chunks)
