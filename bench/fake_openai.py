"""An instant OpenAI-compatible chat-completions server for the benchmarks (stdlib only, 127.0.0.1).

``python bench/fake_openai.py --port 0 --answer '{"k": "v"}'`` prints ``listening http://127.0.0.1:PORT``
and answers every ``POST /v1/chat/completions`` at once with the fixed answer:

- as message content (JSON text) when the request offers no tools, or as a call of the first tool
  with the answer as its arguments when it does (PydanticAI's default tool output);
- non-streamed, or streamed as SSE: a role delta, the text in 8 deltas, a finish chunk with usage,
  ``[DONE]`` — sent with a Content-Length so HTTP/1.1 keep-alive works;

``GET /_stats`` returns ``{"requests": n, "handle_ms": total}``: the server's own handling time from
a complete request to the response written, which the figures subtract from the client's time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

STATE = {"requests": 0, "handle_ms": 0.0}


def completion(body: dict[str, Any], answer: str) -> tuple[bytes, str]:
    model = str(body.get("model", "fake-model"))
    tools = body.get("tools") or []
    use_tool = bool(tools) and body.get("tool_choice") != "none"
    tool_name = tools[0].get("function", {}).get("name", "tool") if use_tool else ""
    usage = {"prompt_tokens": 50, "completion_tokens": 60, "total_tokens": 110}
    base = {"id": "chatcmpl-bench", "created": 1700000000, "model": model}
    if not body.get("stream"):
        message: dict[str, Any] = {"role": "assistant", "content": None if use_tool else answer}
        if use_tool:
            message["tool_calls"] = [
                {"id": "call_1", "type": "function", "function": {"name": tool_name, "arguments": answer}}
            ]
        payload = {
            **base,
            "object": "chat.completion",
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if use_tool else "stop"}],
            "usage": usage,
        }
        return json.dumps(payload).encode(), "application/json"
    chunks: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
    if use_tool:
        chunks.append(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": tool_name, "arguments": answer},
                    }
                ]
            }
        )
    else:
        step = max(1, -(-len(answer) // 8))
        chunks += [{"content": answer[i : i + step]} for i in range(0, len(answer), step)]
    events = [
        {**base, "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": d, "finish_reason": None}]}
        for d in chunks
    ]
    events.append(
        {
            **base,
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls" if use_tool else "stop"}],
            "usage": usage,
        }
    )
    text = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
    return text.encode(), "text/event-stream"


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, answer: str) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            t0 = time.perf_counter()
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
            length = int(headers.get("content-length", "0") or 0)
            raw = await reader.readexactly(length) if length else b""
            if method == "GET" and path.startswith("/_stats"):
                data, ctype, count = json.dumps(STATE).encode(), "application/json", False
            elif method == "POST" and path.rstrip("/").endswith("/chat/completions"):
                data, ctype = completion(json.loads(raw or b"{}"), answer)
                count = True
            else:
                data, ctype, count = b'{"error": {"message": "not found"}}', "application/json", False
            status = "200 OK" if data[:9] != b'{"error":' else "404 Not Found"
            writer.write(
                f"HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {len(data)}\r\n"
                f"connection: keep-alive\r\n\r\n".encode()
                + data
            )
            await writer.drain()
            if count:
                STATE["requests"] += 1
                STATE["handle_ms"] += (time.perf_counter() - t0) * 1000.0
            if headers.get("connection", "").lower() == "close":
                break
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def serve(port: int, answer: str) -> None:
    server = await asyncio.start_server(lambda r, w: handle(r, w, answer), "127.0.0.1", port)
    bound = server.sockets[0].getsockname()[1]
    print(f"listening http://127.0.0.1:{bound}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--answer", default='{"ok": true}', help="the JSON answer, as text")
    opts = parser.parse_args()
    try:
        asyncio.run(serve(opts.port, opts.answer))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
