"""Strict JSON for everything a client sends: no NaN or Infinity, bounded nesting, ASCII seqs.

Python's ``json`` accepts ``NaN``, ``Infinity`` and ``1e999`` (which become ``null`` on the way
out, or crash a runnable that sleeps for them) and raises ``RecursionError`` on deep nesting; an
event id like ``²`` passes ``str.isdigit()`` and then fails ``int()``. Each of these is the
client's mistake, so each is a 4xx with a message that names it.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["InputError", "JsonGuard", "parse_seq", "strict_json"]

_SEQ = re.compile(r"[0-9]{1,18}")


class InputError(ValueError):
    """A request's body or parameter is malformed (a 422)."""


def _no_constant(name: str) -> Any:
    raise InputError(f"{name} is not allowed in JSON input (send null, a number or a string)")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InputError(f"the number {text[:40]} is out of range (it would become Infinity)")
    return value


def strict_json(raw: bytes | str, max_depth: int) -> Any:
    """Parse JSON, refusing ``NaN``/``Infinity``, out-of-range numbers and nesting past ``max_depth``."""
    try:
        value = json.loads(raw, parse_constant=_no_constant, parse_float=_finite)
    except InputError:
        raise
    except RecursionError:
        raise InputError(f"the JSON is nested deeper than {max_depth} levels") from None
    except ValueError as err:
        raise InputError(f"the body is not JSON: {err}") from None
    _check_depth(value, max_depth)
    return value


def _check_depth(value: Any, max_depth: int) -> None:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth > max_depth:
                raise InputError(f"the JSON is nested deeper than {max_depth} levels")
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children)


def parse_seq(value: str, what: str) -> int:
    """A product event's seq as a client sends it back (``Last-Event-ID``, ``?after=``): ASCII digits."""
    text = value.strip()
    if not _SEQ.fullmatch(text):
        raise InputError(f"{what} must be a product event's seq (up to 18 digits 0-9); got {value[:40]!r}")
    return int(text)


class JsonGuard:
    """Check every request body (POST, PUT, PATCH) as strict JSON before any route reads it.

    Sits inside the body-size limit, so what it buffers is bounded; a body it accepts is handed
    on unchanged.
    """

    def __init__(self, app: ASGIApp, max_depth: int):
        self.app = app
        self.max_depth = max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message], receive), send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body.strip():
            try:
                strict_json(body, self.max_depth)
            except InputError as err:
                from starlette.responses import JSONResponse

                response = JSONResponse({"error": {"code": "invalid_request", "message": str(err)}}, status_code=422)
                await response(scope, receive, send)
                return
        await self.app(scope, _replay([{"type": "http.request", "body": body, "more_body": False}], receive), send)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed
