"""``/v1/executions/{id}/ws``: product events as JSON text frames; the client may send signals and a cancel.

A browser cannot read a refused handshake (it is an opaque 403), so a bad credential, an unknown
execution or a bad ``after`` is accepted and then closed with ``4000 + status`` and the reason.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from fastapi import WebSocket, WebSocketDisconnect

from keel import Execution
from keel_gateway.auth import AuthError, Principal
from keel_gateway.inputs import InputError, parse_seq, strict_json
from keel_gateway.schemas import RECONNECT_MESSAGE, ApiError, SignalRequest
from keel_gateway.service import Gateway, client_of, credential_of

__all__ = ["follow"]


async def follow(gateway: Gateway, websocket: WebSocket, execution_id: str) -> None:
    """Product events as JSON text frames; the client may send signals and a cancel."""
    try:
        principal = gateway.principal(
            credential_of(websocket, gateway.settings.allow_query_token), client_of(websocket)
        )
        principal.require("read")
        execution = await gateway.execution(execution_id, principal)
    except AuthError as err:
        # accept, then close with a code a browser can read (a refused handshake is an opaque 403)
        await websocket.accept()
        await websocket.close(code=4000 + err.status, reason=str(err)[:120])
        return
    except ApiError as err:
        await websocket.accept()
        await websocket.close(code=4000 + err.status, reason=err.message[:120])
        return
    try:
        since = parse_seq(websocket.query_params.get("after", "0"), "after")
    except InputError as err:
        await websocket.accept()
        await websocket.close(code=4422, reason=str(err)[:120])
        return
    await websocket.accept()
    product = gateway.hub.log(execution)
    lock = anyio.Lock()

    async def send(text: str) -> None:
        async with lock:
            await websocket.send_text(text)

    async def receive() -> None:
        while True:
            try:
                text = await websocket.receive_text()
            except (WebSocketDisconnect, KeyError, RuntimeError):
                return
            try:
                message = strict_json(text, gateway.settings.max_json_depth)
            except InputError as err:
                await send(
                    json.dumps({"type": "error", "request_id": None, "code": "invalid_request", "message": str(err)})
                )
                continue
            await _command(gateway, execution, principal, message, send)

    async with anyio.create_task_group() as tg:

        async def reader() -> None:
            await receive()
            tg.cancel_scope.cancel()

        tg.start_soon(reader)
        try:
            with gateway.following():
                sent = since
                async for frame in product.follow(since, stop=lambda: gateway.draining):
                    await send(frame.json)
                    sent += 1
                if product.finished:
                    await websocket.close(code=1000)
                else:  # shutting down: say so, then 1012 (service restart)
                    await send(json.dumps({"type": "reconnect", "after": sent, "message": RECONNECT_MESSAGE}))
                    await websocket.close(code=1012)
        except (WebSocketDisconnect, RuntimeError):
            pass
        tg.cancel_scope.cancel()


async def _command(
    gateway: Gateway, execution: Execution, principal: Principal, message: Any, send: Callable[[str], Awaitable[None]]
) -> None:
    kind = message.get("type") if isinstance(message, dict) else None
    request_id = message.get("request_id") if isinstance(message, dict) else None
    try:
        if kind == "signal":
            body = SignalRequest(payload=message.get("payload"), request_id=request_id)
            name = message.get("name")
            if not isinstance(name, str) or not name:
                raise ApiError(422, "invalid_request", "a signal needs a name")
            accepted = await gateway.signal(execution, name, body, principal)
            reply: dict[str, Any] = {"type": "ack", "request_id": request_id, "status": accepted.status}
        elif kind == "cancel":
            reason = str(message.get("reason") or "cancelled by the caller")[:500]
            view = await gateway.cancel(execution, reason, principal)
            reply = {"type": "ack", "request_id": request_id, "status": view.status}
        else:
            raise ApiError(
                422, "invalid_request", "send {'type': 'signal', 'name': ..., 'payload': ...} or {'type': 'cancel'}"
            )
    except ApiError as err:
        reply = {"type": "error", "request_id": request_id, "code": err.code, "message": err.message}
    except AuthError as err:
        reply = {"type": "error", "request_id": request_id, "code": "forbidden", "message": str(err)}
    except Exception as err:  # pydantic errors on a bad request id, ...
        reply = {"type": "error", "request_id": request_id, "code": "invalid_request", "message": str(err)[:300]}
    await send(json.dumps(reply))
