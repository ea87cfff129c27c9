"""``OpenAIModel``: one OpenAI-compatible endpoint behind Keel's :class:`keel.Model` protocol.

Design choices:

- ONE ``AsyncOpenAI`` client (so one connection pool) per model instance, built on first use and
  closed by :meth:`OpenAIModel.aclose`; a request costs no client construction.
- Retries are the SDK's own (``max_retries``): it retries connection errors, timeouts, 408/409/429
  and 5xx with jittered exponential backoff and honours ``Retry-After``/``retry-after-ms`` (up to
  two minutes). Re-implementing that would only add a second, less tested retry loop. A stream that
  breaks after text was yielded is never retried (the caller already saw the text): it raises
  :class:`~keel_model_openai.errors.ModelStreamError`.
- Structured output: ``response_format = json_schema`` when the endpoint takes it; when the endpoint
  refuses it (400/422), the same request is sent again with the schema in the system prompt, the
  answer is parsed for its JSON object, and the instance remembers to use the prompt from then on.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import anyio

import keel
from keel_model_openai.errors import (
    ModelAuthError,
    ModelConfigError,
    ModelConnectionError,
    ModelError,
    ModelNotFoundError,
    ModelRateLimitError,
    ModelRequestError,
    ModelServerError,
    ModelStreamError,
    ModelTimeoutError,
)
from keel_model_openai.plugin import CAPABILITIES

if TYPE_CHECKING:
    import openai

__all__ = ["OPENAI_URL", "OpenAIModel", "Timing", "extract_json"]

OPENAI_URL = "https://api.openai.com/v1"
#: options the driver consumes; every other option goes to the endpoint in the request body
DRIVER_OPTIONS = frozenset(
    {
        "alias",
        "timeout",
        "connect_timeout",
        "max_retries",
        "structured_output",
        "strict",
        "include_usage",
        "headers",
        "check_model",
        "stream",
    }
)
#: how an output schema is sent, strongest first; "auto" starts at json_schema and steps down the list
#: each time the endpoint refuses one (remembered per instance)
STRUCTURED_MODES = ("json_schema", "json_object", "prompt")
_SCHEMA_NAME = re.compile(r"[^A-Za-z0-9_-]")


class Timing:
    """Latency of the last call: seconds to the first event and to the end of the stream."""

    __slots__ = ("first_event_s", "total_s")

    def __init__(self, first_event_s: float | None = None, total_s: float | None = None):
        self.first_event_s = first_event_s
        self.total_s = total_s

    def __repr__(self) -> str:
        return f"Timing(first_event_s={self.first_event_s}, total_s={self.total_s})"


class OpenAIModel:
    """A :class:`keel.Model` on an OpenAI-compatible chat completions endpoint."""

    capabilities = CAPABILITIES

    def __init__(self, config: keel.ModelConfig):
        options: dict[str, Any] = {**(config.model_extra or {}), **config.options}
        self.base_url = (config.base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_URL).rstrip("/")
        self.model = config.model or os.environ.get("OPENAI_MODEL") or ""
        alias = config.alias or options.get("alias")
        self.alias = repr(alias) if alias else f"{self.model or '?'!r} (provider {config.provider!r})"
        self._table = f"[models.{alias}]" if alias else "the stack's [models.<alias>] table"
        if not self.model:
            raise ModelConfigError(
                self.alias,
                self.base_url,
                "no model name is set",
                f'add model = "<name the server serves>" to {self._table} (or set OPENAI_MODEL)',
            )
        self.api_key_env = config.api_key_env or "OPENAI_API_KEY"
        key = os.environ.get(self.api_key_env, "")
        if not key and (config.api_key_env or self.base_url == OPENAI_URL):
            raise ModelConfigError(
                self.alias,
                self.base_url,
                f"the API key variable {self.api_key_env} is not set",
                f"export {self.api_key_env}=<your key>, or set api_key_env in {self._table} "
                "to the variable that holds it",
            )
        # servers on your own machine (llama.cpp, vLLM, Ollama) usually take no key: send a placeholder
        self._api_key = key or "no-key"
        self.timeout = float(options.get("timeout", 60.0))
        self.connect_timeout = float(options.get("connect_timeout", min(10.0, self.timeout)))
        self.max_retries = int(options.get("max_retries", 2))
        self.structured = str(options.get("structured_output", "auto"))
        if self.structured not in ("auto", *STRUCTURED_MODES):
            raise ModelConfigError(
                self.alias,
                self.base_url,
                f"structured_output = {self.structured!r} is not a mode",
                f"use one of {', '.join(repr(m) for m in ('auto', *STRUCTURED_MODES))}",
            )
        self.strict = bool(options.get("strict", False))
        self.include_usage = bool(options.get("include_usage", True))
        self.headers: dict[str, str] = dict(options.get("headers", {}))
        # some servers (llama-cpp-python's) answer any model name with the model they have loaded:
        # before the first request, look the name up in GET /models (skipped when that fails)
        self.check_model = bool(options.get("check_model", True))
        #: stream answers (instant events while the model writes); false = one plain request
        self.streaming = bool(options.get("stream", True))
        self._model_checked = False
        self.params = {k: v for k, v in options.items() if k not in DRIVER_OPTIONS}
        self.name = f"openai:{self.model}"
        #: the structured-output mode in use (``auto`` steps down when the endpoint refuses one)
        self.json_mode = "json_schema" if self.structured == "auto" else self.structured
        self.last_timing = Timing()
        self._client: openai.AsyncOpenAI | None = None

    # ------------------------------------------------------------------------------ client

    def client(self) -> openai.AsyncOpenAI:
        """The instance's one client (built on first use)."""
        if self._client is None:
            import openai

            self._client = openai.AsyncOpenAI(
                api_key=self._api_key,
                base_url=self.base_url,
                timeout=openai.Timeout(self.timeout, connect=self.connect_timeout),
                max_retries=self.max_retries,
                default_headers=self.headers or None,
            )
        return self._client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with anyio.CancelScope(shield=True):
                await client.close()

    # ----------------------------------------------------------------------------- request

    def body(self, request: keel.ModelRequest, mode: str) -> dict[str, Any]:
        """The keyword arguments of ``chat.completions.create`` for a request."""
        messages = [_message(m) for m in request.messages]
        body: dict[str, Any] = {"model": self.model, "stream": self.streaming}
        if self.include_usage and self.streaming:
            body["stream_options"] = {"include_usage": True}
        if request.tools:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
                }
                for t in request.tools
            ]
        schema = request.output_schema
        if schema is not None:
            if mode == "json_schema":
                body["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {
                        "name": _SCHEMA_NAME.sub("_", request.output_name)[:64] or "output",
                        "schema": schema,
                        "strict": self.strict,
                    },
                }
            else:
                messages = _with_schema_prompt(messages, schema)
                if mode == "json_object":
                    # JSON mode; llama.cpp's servers also constrain decoding to the "schema" given here
                    body["response_format"] = {"type": "json_object", "schema": schema}
        body["messages"] = messages
        extra = {**self.params, **request.options}
        if extra:
            body["extra_body"] = extra
        return body

    async def stream(self, request: keel.ModelRequest) -> AsyncIterator[keel.ModelEvent]:
        import openai

        started = time.perf_counter()
        self.last_timing = timing = Timing()
        wants_json = request.output_schema is not None
        mode = self.json_mode if wants_json else "text"
        if self.check_model and not self._model_checked:
            await self._check_model_name()
        response, mode = await self._create(request, mode, wants_json)

        if not self.streaming:
            async for event in self._whole(response, mode, timing, started):
                yield event
            return

        await self._require_event_stream(response)

        buffer = mode == "prompt"
        parts: list[str] = []
        calls: dict[int, dict[str, Any]] = {}
        usage: keel.Usage | None = None
        finish: str | None = None
        served_by: str | None = None
        chunks = 0
        try:
            async for chunk in response:
                chunks += 1
                if timing.first_event_s is None:
                    timing.first_event_s = time.perf_counter() - started
                served_by = chunk.model or served_by
                if chunk.usage is not None:
                    usage = keel.Usage(
                        input_tokens=chunk.usage.prompt_tokens or 0, output_tokens=chunk.usage.completion_tokens or 0
                    )
                for choice in chunk.choices:
                    if choice.index != 0:
                        continue
                    if choice.finish_reason:
                        finish = choice.finish_reason
                    delta = choice.delta
                    if delta is None:
                        continue
                    if delta.content:
                        if buffer:
                            parts.append(delta.content)
                        else:
                            yield keel.TextDelta(text=delta.content)
                    for piece in delta.tool_calls or []:
                        _merge_tool_call(calls, piece)
        except openai.OpenAIError as err:
            raise self._stream_broke(err, chunks) from err
        finally:
            with anyio.CancelScope(shield=True):
                await response.close()

        if finish is None:
            raise ModelStreamError(
                self.alias,
                self.base_url,
                f"the stream ended after {chunks} chunks without a finish reason (the answer is incomplete)",
                "retry the request; if it keeps happening, check the server's logs and any proxy in between",
            )
        for index in sorted(calls):
            yield keel.ToolCallEvent(call=_tool_call(calls[index], index))
        if buffer:
            text = "".join(parts)
            yield keel.TextDelta(text=extract_json(text) or text)
        timing.total_s = time.perf_counter() - started
        # usage is None when the server reports none (llama.cpp's Python server ignores stream_options)
        yield keel.ModelDone(finish_reason=finish, usage=usage, model=served_by or self.model)

    async def _create(self, request: keel.ModelRequest, mode: str, wants_json: bool) -> tuple[Any, str]:
        """Send the request; when the endpoint refuses a structured ``response_format``, step down
        through :data:`STRUCTURED_MODES` and remember the one that worked. Returns the response and that mode."""
        import openai

        client = self.client()
        try:
            while True:
                try:
                    return await client.chat.completions.create(**self.body(request, mode)), mode
                except openai.APIStatusError as err:
                    if not (wants_json and self.structured == "auto" and _refuses_format(err)):
                        raise
                    if mode == STRUCTURED_MODES[-1]:
                        raise
                    # the endpoint refused this response_format: step down, and remember
                    self.json_mode = mode = STRUCTURED_MODES[STRUCTURED_MODES.index(mode) + 1]
        except openai.OpenAIError as err:
            raise await self._translate(err) from err

    async def _require_event_stream(self, response: Any) -> None:
        """A streamed answer that is not server-sent events is not an OpenAI-compatible endpoint."""
        content_type = response.response.headers.get("content-type", "")
        if "event-stream" not in content_type:
            await response.close()
            raise ModelConnectionError(
                self.alias,
                self.base_url,
                f"the server answered with {content_type or 'no content type'}, not a server-sent event stream, "
                "so it is not an OpenAI-compatible chat endpoint",
                "check base_url: OpenAI-compatible servers usually serve under /v1 (e.g. http://host:port/v1)",
            )

    def _stream_broke(self, err: Exception, chunks: int) -> keel.KeelError:
        """The error for a stream that stalled (timeout) or broke off after ``chunks`` chunks."""
        import openai

        if isinstance(err, openai.APITimeoutError):
            return ModelTimeoutError(
                self.alias,
                self.base_url,
                f"the stream stalled for more than {self.timeout:g}s after {chunks} chunks",
                "raise options.timeout, or check the server's load",
            )
        return ModelStreamError(
            self.alias,
            self.base_url,
            f"the answer's stream broke off after {chunks} chunks ({_describe(err)})",
            "retry the request; if it keeps happening, check the server's logs and any proxy in between",
        )

    async def _whole(self, response: Any, mode: str, timing: Timing, started: float) -> AsyncIterator[keel.ModelEvent]:
        """The events of a non-streamed answer (``stream = false``): the same shapes, all at once."""
        timing.first_event_s = timing.total_s = time.perf_counter() - started
        choice = response.choices[0] if response.choices else None
        if choice is None:
            raise ModelStreamError(self.alias, self.base_url, "the answer had no choices", "check the server's logs")
        message = choice.message
        for index, call in enumerate(message.tool_calls or []):
            slot = {"id": call.id or "", "name": call.function.name, "arguments": [call.function.arguments or ""]}
            yield keel.ToolCallEvent(call=_tool_call(slot, index))
        text = message.content or ""
        if mode == "prompt":
            text = extract_json(text) or text
        if text:
            yield keel.TextDelta(text=text)
        usage = None
        if response.usage is not None:
            usage = keel.Usage(
                input_tokens=response.usage.prompt_tokens or 0, output_tokens=response.usage.completion_tokens or 0
            )
        yield keel.ModelDone(
            finish_reason=choice.finish_reason or "stop", usage=usage, model=response.model or self.model
        )

    # ------------------------------------------------------------------------------ errors

    async def _translate(self, err: openai.OpenAIError) -> ModelError:
        import openai

        alias, url = self.alias, self.base_url
        if isinstance(err, openai.APITimeoutError):
            return ModelTimeoutError(
                alias,
                url,
                f"no answer within {self.timeout:g}s ({_tries(self.max_retries)})",
                "check that the server is up and not overloaded, or raise options.timeout",
            )
        if isinstance(err, openai.APIConnectionError):
            return ModelConnectionError(
                alias,
                url,
                f"cannot connect ({_describe(err)}; {_tries(self.max_retries)})",
                f"start the server, or correct base_url in {self._table}",
            )
        if not isinstance(err, openai.APIStatusError):
            return ModelError(alias, url, _describe(err), "see the cause below")
        status, detail = err.status_code, _describe(err)
        if isinstance(err, (openai.AuthenticationError, openai.PermissionDeniedError)):
            return ModelAuthError(
                alias,
                url,
                f"the server refused the API key from ${self.api_key_env} ({status}: {detail})",
                f"put a valid key in {self.api_key_env}, or set api_key_env in {self._table} to the variable "
                "that holds the key for this server",
                status,
            )
        if isinstance(err, openai.NotFoundError):
            if "model" in detail.lower():
                served = await self._served_models()
                listing = f"; it serves: {', '.join(served)}" if served else ""
                return ModelNotFoundError(
                    alias,
                    url,
                    f"the server does not know the model {self.model!r} ({detail})",
                    f"set model in {self._table} to a name the server serves{listing}",
                    status,
                )
            return ModelNotFoundError(
                alias,
                url,
                f"there is no chat completions route at {url}/chat/completions (404: {detail})",
                f"correct base_url in {self._table}: OpenAI-compatible servers usually serve under /v1 "
                "(e.g. http://host:port/v1)",
                status,
            )
        if isinstance(err, openai.RateLimitError):
            return ModelRateLimitError(
                alias,
                url,
                f"still rate limited (429) after {self.max_retries} retries ({detail})",
                "lower the request rate, or raise options.max_retries",
                status,
            )
        if status >= 500:
            return ModelServerError(
                alias,
                url,
                f"the server failed ({status}: {detail}) after {self.max_retries} retries",
                "check the server's logs; retry later",
                status,
            )
        return ModelRequestError(
            alias,
            url,
            f"the server refused the request ({status}: {detail})",
            f"check the options in {self._table} and the request's messages and tools",
            status,
        )

    async def _check_model_name(self) -> None:
        served = await self._served_models()
        self._model_checked = True
        if served and not any(name == self.model or name.startswith(f"{self.model}:") for name in served):
            raise ModelNotFoundError(
                self.alias,
                self.base_url,
                f"the server does not serve the model {self.model!r} (its /models lists: {', '.join(served)})",
                f"set model in {self._table} to one of those names (or check_model = false to skip this check)",
            )

    async def _served_models(self) -> list[str]:
        """The names the server lists at /models, best effort (a short, unretried call)."""
        try:
            with anyio.fail_after(min(5.0, self.timeout)):
                page = await self.client().with_options(max_retries=0).models.list()
                return sorted(m.id for m in page.data)[:20]
        except Exception:
            return []


# ------------------------------------------------------------------------------------ helpers


def _tries(retries: int) -> str:
    return "1 attempt" if retries == 0 else f"{retries + 1} attempts"


def _refuses_format(err: Any) -> bool:
    """Did the endpoint refuse the request's response_format? (400/422; llama-cpp-python says 500)"""
    status = getattr(err, "status_code", 0)
    return status in (400, 422) or (status >= 500 and "response_format" in str(getattr(err, "message", "")))


def _describe(err: BaseException) -> str:
    """The error's own message, one line; a connection error adds its cause (refused, unknown host)."""
    message = getattr(err, "message", None) or str(err)
    cause = err.__cause__ or err.__context__
    if not hasattr(err, "status_code") and cause is not None and str(cause) and str(cause) not in message:
        # the SDK's "Connection error." says less than its cause ("ConnectError: ... refused")
        generic = message.rstrip(".").lower() in ("connection error", "request timed out")
        message = f"{type(cause).__name__}: {cause}" if generic else f"{message}: {type(cause).__name__}: {cause}"
    return " ".join(message.split())[:300]


def _message(message: keel.Message) -> dict[str, Any]:
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id or "", "content": message.content}
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.role == "assistant" and message.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": json.dumps(c.arguments)}}
            for c in message.tool_calls
        ]
        out["content"] = message.content or None
    if message.name and message.role == "user":
        out["name"] = message.name
    return out


def _with_schema_prompt(messages: list[dict[str, Any]], schema: dict[str, Any]) -> list[dict[str, Any]]:
    instruction = (
        "Answer with one JSON object and nothing else (no prose, no code fence). "
        f"It must match this JSON schema:\n{json.dumps(schema, separators=(',', ':'))}"
    )
    if messages and messages[0]["role"] == "system":
        first = {**messages[0], "content": f"{messages[0]['content']}\n\n{instruction}".strip()}
        return [first, *messages[1:]]
    return [{"role": "system", "content": instruction}, *messages]


def extract_json(text: str) -> str | None:
    """The first JSON object or array in a model's text (code fences and prose around it ignored)."""
    decoder = json.JSONDecoder()
    for start, char in enumerate(text):
        if char in "{[":
            try:
                value, _end = decoder.raw_decode(text, start)
            except ValueError:
                continue
            return json.dumps(value, ensure_ascii=False)
    return None


def _merge_tool_call(calls: dict[int, dict[str, Any]], piece: Any) -> None:
    """Fold one streamed tool-call delta into the call it continues (by index)."""
    index = piece.index if piece.index is not None else len(calls) - (0 if piece.id else 1)
    slot = calls.setdefault(max(index, 0), {"id": "", "name": "", "arguments": []})
    if piece.id:
        slot["id"] = piece.id
    function = piece.function
    if function is not None:
        if function.name and function.name != slot["name"]:
            slot["name"] += function.name
        if function.arguments:
            slot["arguments"].append(function.arguments)


def _tool_call(slot: dict[str, Any], index: int) -> keel.ToolCall:
    raw = "".join(slot["arguments"]).strip()
    try:
        arguments = json.loads(raw) if raw else {}
    except ValueError:
        arguments = None
    if not isinstance(arguments, dict):
        # keep what the model sent: the action's input check refuses it with a message the model can read
        arguments = {"__raw_arguments__": raw}
    return keel.ToolCall(id=slot["id"] or f"call_{index}", name=slot["name"], arguments=arguments)
