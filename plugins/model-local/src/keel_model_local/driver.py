"""``LocalModel``: llama.cpp in process through llama-cpp-python.

- The weights load lazily, on the first request, once per instance (in a worker thread).
- Every blocking llama call (loading, building the grammar, each decoding step) runs in a worker
  thread (``anyio.to_thread``): the event loop never blocks.
- Structured output is JSON-schema-constrained decoding: llama.cpp turns ``output_schema`` into a
  grammar, so even a 135M model answers with JSON the contract can parse.
- Cancelling the consumer stops generation within one token: the token generator is closed.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio

import keel
from keel_model_local.plugin import CAPABILITIES
from keel_model_local.weights import DEFAULT, LocalModelError, resolve

__all__ = ["SWITCH_HINT", "LocalModel"]

#: options the driver consumes; every other option goes to llama's create_chat_completion
DRIVER_OPTIONS = frozenset({"alias", "n_ctx", "n_threads", "n_batch", "quiet", "schema_hint"})
SWITCH_HINT = (
    "For a stronger model, one line in keel.toml:\n"
    '  model = "openai"                  # any OpenAI-compatible endpoint; reads OPENAI_API_KEY, OPENAI_MODEL, OPENAI_BASE_URL\n'
    'or models.local = { provider = "local", model = "/path/to/a-bigger-model.gguf" }. See docs/models.md.'
)
_announced: set[str] = set()
_END = object()


class LocalModel:
    """A :class:`keel.Model` running a GGUF model in this process."""

    capabilities = CAPABILITIES

    def __init__(self, config: keel.ModelConfig):
        options: dict[str, Any] = {**(config.model_extra or {}), **config.options}
        self.weights = config.model or DEFAULT
        alias = config.alias or options.get("alias")
        self.alias = repr(alias) if alias else "of provider 'local'"
        self.name = f"local:{Path(self.weights).stem if self.weights.endswith('.gguf') else self.weights}"
        self.n_ctx = int(options.get("n_ctx", 2048))
        # half the cores: on a shared 2-core machine a second busy OpenMP thread made decoding 10-20x slower
        self.n_threads = int(options.get("n_threads") or max(1, (os.cpu_count() or 1) // 2))
        self.n_batch = int(options.get("n_batch", 512))
        self.quiet = bool(options.get("quiet", False))
        # the grammar fixes the JSON's shape; naming the fields in the prompt fixes more of their content
        # (the invoice eval: 16/40 fields right without the hint, 24/40 with it, on SmolLM2-135M)
        self.schema_hint = bool(options.get("schema_hint", True))
        self.params: dict[str, Any] = {"temperature": 0.0, "max_tokens": 512, "seed": 0}
        self.params.update({k: v for k, v in options.items() if k not in DRIVER_OPTIONS})
        self.path: Path | None = None
        self.title = ""
        self.tokens_generated = 0  # decoding steps taken by this instance, all requests together
        self.last_timing: dict[str, float] = {}
        self._llama: Any = None
        self._lock: anyio.Lock | None = None
        # one llama context: one generation at a time. A semaphore, not a lock: a stream abandoned
        # without aclose() still holds it until the event loop finalises it, and the next request from
        # the same task must wait for that, not fail as a re-entrant lock acquisition would
        self._turn: anyio.Semaphore | None = None

    # ------------------------------------------------------------------------------- loading

    def _load_blocking(self) -> Any:
        path, self.title = resolve(self.weights, self.alias)
        # idle OpenMP workers sleep instead of spinning (read once, when llama.cpp's library loads)
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        try:
            from llama_cpp import Llama
        except ImportError as err:
            raise LocalModelError(
                self.alias, self.weights, f"llama-cpp-python cannot be imported ({err})", "pip install keel-model-local"
            ) from err
        try:
            llama = Llama(
                model_path=str(path),
                n_ctx=self.n_ctx,
                n_threads=self.n_threads,
                n_batch=self.n_batch,
                seed=int(self.params.get("seed", 0)),
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as err:
            raise LocalModelError(
                self.alias, str(path), f"llama.cpp could not load it ({err})", "check that the file is a GGUF model"
            ) from err
        self.path = path
        if not self.quiet and str(path) not in _announced:
            _announced.add(str(path))
            print(f"keel-model-local: {self.title}, in process ({path.name}). {SWITCH_HINT}", file=sys.stderr)
        return llama

    async def _model(self) -> Any:
        if self._lock is None:
            self._lock, self._turn = anyio.Lock(), anyio.Semaphore(1)
        if self._llama is None:
            async with self._lock:
                if self._llama is None:
                    self._llama = await anyio.to_thread.run_sync(self._load_blocking)
        return self._llama

    async def aclose(self) -> None:
        llama, self._llama = self._llama, None
        if llama is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(llama.close)

    # ------------------------------------------------------------------------------ requests

    def arguments(self, request: keel.ModelRequest) -> dict[str, Any]:
        """The keyword arguments of ``Llama.create_chat_completion`` for a request."""
        if request.tools:
            raise LocalModelError(
                self.alias,
                self.weights,
                f"this small local model does not call tools (asked with {len(request.tools)})",
                'give this agent a model that does, e.g. one line in keel.toml: model = "openai"',
            )
        messages = [{"role": "user" if m.role == "tool" else m.role, "content": m.content} for m in request.messages]
        arguments: dict[str, Any] = {**self.params, **request.options, "stream": True}
        if request.output_schema is not None:
            arguments["response_format"] = {"type": "json_object", "schema": request.output_schema}
            if self.schema_hint:
                messages = _with_field_hint(messages, request.output_schema)
        arguments["messages"] = messages
        return arguments

    async def stream(self, request: keel.ModelRequest) -> AsyncIterator[keel.ModelEvent]:
        arguments = self.arguments(request)
        llama = await self._model()
        assert self._turn is not None
        async with self._turn:
            started = time.perf_counter()
            first: float | None = None
            output = 0
            finish = "stop"
            # building the grammar and the prompt happens on the first step, in the worker thread
            chunks: Iterator[dict[str, Any]] = await anyio.to_thread.run_sync(
                lambda: iter(llama.create_chat_completion(**arguments))
            )
            try:
                while True:
                    chunk = await anyio.to_thread.run_sync(self._step, chunks)
                    if chunk is _END:
                        break
                    choice = chunk["choices"][0]
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
                    text = choice.get("delta", {}).get("content")
                    if text:
                        output += 1
                        if first is None:
                            first = time.perf_counter() - started
                        yield keel.TextDelta(text=text)
            finally:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(_close, chunks)
            prompt = max(int(getattr(llama, "n_tokens", 0)) - output, 0)
            self.last_timing = {"first_event_s": first or 0.0, "total_s": time.perf_counter() - started}
        yield keel.ModelDone(
            finish_reason=finish, usage=keel.Usage(input_tokens=prompt, output_tokens=output), model=self.name
        )

    def _step(self, chunks: Iterator[dict[str, Any]]) -> Any:
        chunk = next(chunks, _END)
        if chunk is not _END:
            self.tokens_generated += 1
        return chunk


def _with_field_hint(messages: list[dict[str, Any]], schema: dict[str, Any]) -> list[dict[str, Any]]:
    """The system message, plus one line per top-level field of the schema (with its description)."""
    properties = schema.get("properties")
    if not isinstance(properties, dict) or not properties:
        return messages
    lines = [
        f"- {name}: {spec.get('description', '')}".rstrip(": ")
        for name, spec in properties.items()
        if isinstance(spec, dict)
    ]
    hint = "Answer in JSON with these fields:\n" + "\n".join(lines)
    if messages and messages[0]["role"] == "system":
        return [{**messages[0], "content": f"{messages[0]['content']}\n\n{hint}"}, *messages[1:]]
    return [{"role": "system", "content": hint}, *messages]


def _close(chunks: Iterator[dict[str, Any]]) -> None:
    close = getattr(chunks, "close", None)
    if close is not None:
        close()
