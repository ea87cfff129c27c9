"""The gateway's routes: thin ``APIRouter`` handlers over :class:`keel_gateway.service.Gateway`.

- :data:`service`: ``/healthz`` and ``/v1/runnables``;
- :func:`add_start_route`: one documented ``POST /v1/runnables/{name}/executions`` per runnable,
  with its input schema as the request body (the generic route serves runnables added later);
- :data:`executions`: the generic start route, then ``/v1/executions/{id}`` with its events (SSE),
  signals, cancel and WebSocket.

The caller comes from :func:`require`, the gateway from ``app.state`` (:func:`gateway_of`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import anyio
from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request, WebSocket
from fastapi.responses import JSONResponse, StreamingResponse
from sse_starlette import EventSourceResponse, ServerSentEvent

from keel import NotFoundError, Runnable
from keel_gateway.auth import Principal
from keel_gateway.inputs import InputError, parse_seq
from keel_gateway.openapi import SSE_EVENT, start_route_docs
from keel_gateway.product import ProductLog
from keel_gateway.schemas import (
    ERRORS,
    RECONNECT_MESSAGE,
    ApiError,
    CancelRequest,
    ErrorBody,
    ExecutionView,
    Health,
    RunnableView,
    SignalAccepted,
    SignalRequest,
)
from keel_gateway.service import Gateway, client_of, credential_of
from keel_gateway.websocket import follow

__all__ = ["add_start_route", "executions", "gateway_of", "reconnect_frame", "require", "service"]


def gateway_of(request: Request) -> Gateway:
    """The gateway the app was built with."""
    return request.app.state.gateway  # type: ignore[no-any-return]


def require(scope: str | None = None) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency: the authenticated caller (401/429 otherwise), holding ``scope`` when given (403)."""

    async def dependency(request: Request) -> Principal:
        gateway = gateway_of(request)
        principal = gateway.principal(credential_of(request, gateway.settings.allow_query_token), client_of(request))
        if scope is not None:
            principal.require(scope)
        return principal

    return dependency


caller = require()
reader = require("read")

service = APIRouter()
executions = APIRouter()


@service.get(
    "/healthz",
    response_model=Health,
    responses={503: {"model": Health, "description": "the runtime cannot start work (restart the process)"}},
    tags=["service"],
)
async def healthz(gateway: Gateway = Depends(gateway_of)) -> JSONResponse:
    """Liveness: the process answers and its runtime can start work (503 when it cannot)."""
    ok, detail = gateway.runtime.health()
    body = Health(status="ok" if ok else "unavailable", detail=detail)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


@service.get("/v1/runnables", response_model=list[RunnableView], responses=ERRORS, tags=["runnables"])
async def list_runnables(
    principal: Principal = Depends(reader), gateway: Gateway = Depends(gateway_of)
) -> list[RunnableView]:
    """Every runnable, with its input and output JSON schemas."""
    return [
        RunnableView(
            name=r.name,
            kind=r.kind,
            description=r.description,
            input_schema=r.input_schema(),
            output_schema=r.output_schema(),
        )
        for r in gateway.runtime.runnables
    ]


def add_start_route(app: FastAPI, runnable: Runnable, extra: dict[str, Any]) -> None:
    """``POST /v1/runnables/{name}/executions`` for one runnable, documented with its schemas."""
    name = runnable.name
    responses, body = start_route_docs(name, runnable.input_schema(), runnable.output_schema(), extra)

    async def start(
        request: Request,
        wait: bool = Query(False, description="wait until it finishes (200) or waits for a signal (202)"),
        timeout: float = Query(300.0, gt=0, le=3600, description="seconds to wait with wait=true"),
        idempotency_key: str | None = Header(None, max_length=200, description="the same key starts one execution"),
        principal: Principal = Depends(caller),
    ) -> JSONResponse:
        return await gateway_of(request).start(runnable, request, principal, wait, timeout, idempotency_key)

    start.__doc__ = f"Start {runnable.kind} {name!r}: {runnable.description}".strip()
    app.add_api_route(
        f"/v1/runnables/{name}/executions",
        start,
        methods=["POST"],
        name=f"start_{name}",
        operation_id=f"start_{name.replace('-', '_').replace('.', '_')}",
        tags=["runnables"],
        status_code=202,
        response_class=JSONResponse,
        responses=responses,
        openapi_extra=body,
    )


@executions.post(
    "/v1/runnables/{name}/executions",
    include_in_schema=False,  # runnables registered after the app was built; documented ones have their own route
)
async def start_any(
    name: str,
    request: Request,
    wait: bool = Query(False),
    timeout: float = Query(300.0, gt=0, le=3600),
    idempotency_key: str | None = Header(None, max_length=200),
    principal: Principal = Depends(caller),
    gateway: Gateway = Depends(gateway_of),
) -> JSONResponse:
    try:
        runnable = gateway.runtime.runnables.get(name)
    except NotFoundError:
        raise ApiError(404, "not_found", f"no runnable {name!r}") from None
    return await gateway.start(runnable, request, principal, wait, timeout, idempotency_key)


@executions.get("/v1/executions/{execution_id}", response_model=ExecutionView, responses=ERRORS, tags=["executions"])
async def get_execution(
    execution_id: str, principal: Principal = Depends(reader), gateway: Gateway = Depends(gateway_of)
) -> ExecutionView:
    """An execution's status; its validated output once completed, a safe error once failed."""
    return await gateway.view(await gateway.execution(execution_id, principal))


@executions.get(
    "/v1/executions/{execution_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "server-sent events: `id` is the product event's seq, `event` its type, `data` its JSON",
            "content": {"text/event-stream": {"schema": SSE_EVENT}},
        },
        **ERRORS,
    },
    tags=["executions"],
)
async def stream_events(
    execution_id: str,
    after: int | None = Query(None, ge=0, description="resume after this seq (or send Last-Event-ID)"),
    last_event_id: str = Header(
        "", alias="Last-Event-ID", pattern=r"^([0-9]{1,18})?$", description="the last seq received"
    ),
    principal: Principal = Depends(reader),
    gateway: Gateway = Depends(gateway_of),
) -> EventSourceResponse:
    """Product events of an execution as SSE, from the start or after ``Last-Event-ID``; ends with
    ``task.completed`` or ``task.failed``, or, when the server shuts down, with a ``reconnect``
    event (reconnect with ``Last-Event-ID``: the events are kept in the store)."""
    execution = await gateway.execution(execution_id, principal)
    product = gateway.hub.log(execution)
    since = after or 0
    if last_event_id.strip():
        try:
            since = parse_seq(last_event_id, "Last-Event-ID")
        except InputError as err:
            raise ApiError(422, "invalid_request", str(err)) from None
    return EventSourceResponse(
        _sse(gateway, product, since),
        ping=gateway.settings.keepalive_seconds,
        ping_message_factory=lambda: ServerSentEvent(comment="keepalive"),
        headers={"Cache-Control": "no-cache"},
        # sse-starlette sees the server shut down (uvicorn's exit flag) and sets this "event":
        # every follower then gets its reconnect event (`keel serve` drains before that, too)
        shutdown_event=cast(anyio.Event, _DrainTrigger(gateway)),
        shutdown_grace_period=2.0,
    )


class _DrainTrigger:
    """Quacks like the ``anyio.Event`` sse-starlette sets on shutdown: setting it drains the gateway."""

    def __init__(self, gateway: Gateway):
        self._gateway = gateway

    def set(self) -> None:
        self._gateway.begin_drain()

    def is_set(self) -> bool:
        return self._gateway.draining


def reconnect_frame(after: int) -> bytes:
    """The last SSE event of a stream cut by a shutdown: no ``id`` (Last-Event-ID stays the last seq)."""
    data = json.dumps({"type": "reconnect", "after": after, "message": RECONNECT_MESSAGE})
    return f"event: reconnect\ndata: {data}\nretry: 1000\n\n".encode()


async def _sse(gateway: Gateway, product: ProductLog, since: int) -> AsyncIterator[bytes]:
    """The pre-encoded frames after ``since``, a batch per wake-up; a shutdown ends it with a reconnect event."""
    with gateway.following():
        yield b"retry: 2000\n\n"
        i = since
        while True:
            frames = product.frames
            if i < len(frames):
                batch = frames[i:]
                yield b"".join([frame.sse for frame in batch])
                i += len(batch)
                continue
            if product.finished:
                return
            if gateway.draining:
                yield reconnect_frame(i)
                return
            await product.changed()


@executions.post(
    "/v1/executions/{execution_id}/signals/{name}",
    status_code=202,
    response_model=SignalAccepted,
    responses={
        **ERRORS,
        409: {
            "model": ErrorBody,
            "description": "not waiting for it, finished, or a request id reused with another payload",
        },
    },
    tags=["executions"],
)
async def send_signal(
    execution_id: str,
    name: str,
    body: SignalRequest,
    principal: Principal = Depends(caller),
    gateway: Gateway = Depends(gateway_of),
) -> SignalAccepted:
    """Answer a waiting state (approve, answer, resume). The same ``request_id`` twice is delivered once."""
    return await gateway.signal(await gateway.execution(execution_id, principal), name, body, principal)


@executions.post(
    "/v1/executions/{execution_id}/cancel",
    status_code=202,
    response_model=ExecutionView,
    responses=ERRORS,
    tags=["executions"],
)
async def cancel_execution(
    execution_id: str,
    body: CancelRequest | None = None,
    principal: Principal = Depends(caller),
    gateway: Gateway = Depends(gateway_of),
) -> ExecutionView:
    """Cancel an execution; cancelling a finished one changes nothing."""
    reason = body.reason if body is not None else "cancelled by the caller"
    return await gateway.cancel(await gateway.execution(execution_id, principal), reason, principal)


@executions.websocket("/v1/executions/{execution_id}/ws")
async def follow_ws(websocket: WebSocket, execution_id: str) -> None:
    await follow(websocket.app.state.gateway, websocket, execution_id)
