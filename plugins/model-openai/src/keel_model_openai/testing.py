"""A fault-injecting OpenAI-compatible HTTP server for tests and benchmarks (stdlib only).

It speaks the chat completions wire format (server-sent events, chunked transfer encoding) on
127.0.0.1 and does, request by request, what a script says: answer, fail with a status (and a
``Retry-After``), cut the stream, hang, or stream slowly and notice when the client hangs up.
Faults a real server will not produce on demand are tested against it, never by mocking the SDK::

    with FakeOpenAI() as server:
        server.script.append(Status(429, headers={"Retry-After": "1"}))
        ...  # point a model at server.url
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Cut", "FakeOpenAI", "Hang", "RejectResponseFormat", "Reply", "Slow", "Status"]


@dataclass
class Reply:
    """A streamed answer: text in ``chunks`` pieces and/or tool calls (each a (name, arguments) pair)."""

    text: str = "hello"
    chunks: int = 3
    tool_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    finish_reason: str | None = None


@dataclass
class Status:
    """An error status with an OpenAI-style error body."""

    code: int
    message: str = "fault injected"
    headers: dict[str, str] = field(default_factory=dict)
    error_code: str | None = None


@dataclass
class Cut:
    """Stream ``after`` chunks of ``reply``, then drop the connection mid-body."""

    after: int = 1
    reply: Reply = field(default_factory=lambda: Reply(text="one two three four", chunks=4))


@dataclass
class Hang:
    """Accept the request and answer nothing for ``seconds`` (or until the server stops)."""

    seconds: float = 30.0


@dataclass
class Slow:
    """Stream ``chunks`` pieces ``delay`` seconds apart; records in ``server.disconnects`` a client that hangs up."""

    chunks: int = 200
    delay: float = 0.05


@dataclass
class RejectResponseFormat:
    """``status`` when the request's ``response_format`` type is in ``types`` (as servers without that kind
    of structured output do; llama-cpp-python's server answers 500 to json_schema), else ``reply``."""

    reply: Reply = field(default_factory=Reply)
    types: tuple[str, ...] = ("json_schema", "json_object")
    status: int = 400


Behaviour = Reply | Status | Cut | Hang | Slow | RejectResponseFormat


class FakeOpenAI:
    """The server. ``script`` is consumed one behaviour per chat request; empty means ``default``."""

    def __init__(self, default: Behaviour | None = None, models: tuple[str, ...] = ("fake-model",)):
        self.default: Behaviour = default or Reply()
        self.models = models
        self.script: deque[Behaviour] = deque()
        self.requests: list[dict[str, Any]] = []
        self.disconnects = 0
        self.disconnected = threading.Event()
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-openai", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The base URL to configure: ``http://127.0.0.1:<port>/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -------------------------------------------------------------------------------- handler

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        return type("Handler", (_Handler,), {"fake": self})


class _Handler(BaseHTTPRequestHandler):
    """The fake's HTTP handler; :meth:`FakeOpenAI._handler` binds ``fake`` (the running fake) on a subclass."""

    fake: FakeOpenAI
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def setup(self) -> None:
        super().setup()
        # small event writes must not wait for delayed ACKs (Nagle): ~40 ms a request otherwise
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        if self.path.split("?")[0].rstrip("/") == "/v1/models":
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.fake.models]
            self._json(200, {"object": "list", "data": data})
        else:
            self._json(404, {"detail": "Not Found"})

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        self.fake.requests.append(
            {
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body,
                "time": time.time(),
            }
        )
        if self.path.split("?")[0] != "/v1/chat/completions":
            self._json(404, {"detail": "Not Found"})
            return
        behaviour = self.fake.script.popleft() if self.fake.script else self.fake.default
        model = str(body.get("model", "fake-model"))
        if isinstance(behaviour, Status):
            error = {"message": behaviour.message, "type": "fault", "code": behaviour.error_code}
            self._json(behaviour.code, {"error": error}, behaviour.headers)
        elif isinstance(behaviour, Hang):
            self.fake._stopping.wait(behaviour.seconds)
            self.close_connection = True
        elif isinstance(behaviour, RejectResponseFormat):
            kind = (body.get("response_format") or {}).get("type")
            if kind in behaviour.types:
                message = f"response_format type {kind!r} is not supported"
                self._json(behaviour.status, {"error": {"message": message, "type": "invalid"}})
            else:
                self._stream(model, behaviour.reply)
        elif isinstance(behaviour, Cut):
            self._stream(model, behaviour.reply, cut_after=behaviour.after)
        elif isinstance(behaviour, Slow):
            self._slow(model, behaviour)
        else:
            self._stream(model, behaviour)

    # ---------------------------------------------------------------------- writing

    def _json(self, code: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()

    def _event(self, payload: Any) -> None:
        data = f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n".encode()
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _end(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _stream(self, model: str, reply: Reply, cut_after: int | None = None) -> None:
        events = list(_events(model, reply))
        self._start_stream()
        for n, event in enumerate(events):
            if cut_after is not None and n >= cut_after:
                self.wfile.write(b'ff\r\ndata: {"trunc')  # half a chunk, then the connection drops
                self.wfile.flush()
                self.close_connection = True
                return
            self._event(event)
        self._end()

    def _slow(self, model: str, slow: Slow) -> None:
        self._start_stream()
        try:
            for n in range(slow.chunks):
                self._event(_chunk(model, {"content": f"w{n} "}))
                if self.fake._stopping.wait(slow.delay):
                    return
            self._event(_chunk(model, {}, "stop"))
            self._event("[DONE]")
            self._end()
        except (BrokenPipeError, ConnectionResetError):
            self.fake.disconnects += 1
            self.fake.disconnected.set()
            self.close_connection = True


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def _events(model: str, reply: Reply) -> list[Any]:
    events: list[Any] = [_chunk(model, {"role": "assistant", "content": ""})]
    text, n = reply.text, max(reply.chunks, 1)
    size = max(1, -(-len(text) // n))
    events += [_chunk(model, {"content": text[i : i + size]}) for i in range(0, len(text), size)]
    for index, (name, arguments) in enumerate(reply.tool_calls):
        raw = json.dumps(arguments)
        half = len(raw) // 2
        head = {"index": index, "id": f"call_{index}", "type": "function", "function": {"name": name, "arguments": ""}}
        events.append(_chunk(model, {"tool_calls": [head]}))
        events.append(_chunk(model, {"tool_calls": [{"index": index, "function": {"arguments": raw[:half]}}]}))
        events.append(_chunk(model, {"tool_calls": [{"index": index, "function": {"arguments": raw[half:]}}]}))
    finish = reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")
    events.append(_chunk(model, {}, finish))
    usage = {"prompt_tokens": 7, "completion_tokens": max(1, len(text.split())), "total_tokens": 0}
    events.append({**_chunk(model, {}), "choices": [], "usage": usage})
    events.append("[DONE]")
    return events
