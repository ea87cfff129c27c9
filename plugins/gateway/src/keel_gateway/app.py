"""``create_app(runtime)``: the FastAPI app over a runtime's runnables and executions.

The app only validates, calls and projects: it checks the caller and the input against the
runnable's JSON schema, starts the runnable or talks to the execution through the kernel's
``Execution`` protocol, and shows product events, never RuntimeEvents. Every lookup is scoped to
the caller's tenant, so another tenant's execution is a 404 like one that does not exist.
"""

from __future__ import annotations

import copy
import json
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import anyio
from fastapi import Depends, FastAPI, Header, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, RedirectResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keel import ConflictError, Execution, ExecutionStatus, KeelError, NotFoundError, ProductEvent, Runnable, Runtime
from keel_gateway.auth import Authenticator, AuthError, FailureThrottle, Principal, RateLimiter
from keel_gateway.channels import ChannelDispatcher
from keel_gateway.inputs import InputError, JsonGuard, parse_seq, strict_json
from keel_gateway.product import ProductHub, failure_code, jsonable
from keel_gateway.settings import GatewaySettings

__all__ = ["ErrorBody", "ExecutionView", "create_app"]

log = logging.getLogger("keel_gateway")

Status = Literal["pending", "running", "waiting", "completed", "failed", "cancelled"]
_FAILURE_TEXT = {
    "timeout": "the task took too long and was stopped",
    "invalid_output": "the answer did not match the expected format",
    "cancelled": "the task was cancelled",
    "error": "the task failed",
}


# ------------------------------------------------------------------------------------ wire types


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorInfo(_Model):
    code: str = Field(description="not_found, unauthorized, forbidden, conflict, invalid_request, ...")
    message: str


class ErrorBody(_Model):
    """Every error response."""

    error: ErrorInfo


class Links(_Model):
    self: str
    events: str = Field(description="SSE of product events; resume with Last-Event-ID")
    ws: str
    signals: str = Field(description="POST {signals}/{name} to answer a waiting state")
    cancel: str


class TaskError(_Model):
    code: Literal["timeout", "invalid_output", "cancelled", "error"]
    message: str


class ExecutionView(_Model):
    """An execution as a client sees it."""

    id: str
    kind: str = Field(description="agent, flow, ...")
    runnable: str | None = Field(default=None, description="the runnable it was started from, when known")
    status: Status
    output: Any = Field(default=None, description="the validated output, once completed")
    error: TaskError | None = None
    waiting_for: dict[str, Any] | None = Field(default=None, description="what is awaited and how to answer")
    last_seq: int = Field(description="the last product event's sequence number so far")
    links: Links


class RunnableView(_Model):
    name: str
    kind: str
    description: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]


class SignalRequest(_Model):
    payload: Any = Field(default=None, description="the answer; must match the schema task.waiting gave")
    request_id: str | None = Field(
        default=None, min_length=1, max_length=200, description="the same id twice is delivered once"
    )


class SignalAccepted(_Model):
    execution_id: str
    signal: str
    request_id: str | None
    status: Status


class CancelRequest(_Model):
    reason: str = Field(default="cancelled by the caller", max_length=500)


class Health(_Model):
    status: Literal["ok", "unavailable"]
    detail: str = Field(default="ok", description="why the service cannot start work, when it cannot")


# ---------------------------------------------------------------------------------------- errors


class _ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"code": code, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in {
        401: "no or unknown credential",
        403: "the credential lacks a scope",
        404: "no such runnable or execution (for this tenant)",
        413: "request body too large",
        422: "invalid input",
        429: "rate limit exceeded; see Retry-After",
    }.items()
}


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413, by Content-Length or as they stream."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_large = int(value) > self.limit
                except ValueError:
                    too_large = False
                if too_large:
                    await _error(413, "too_large", f"request body over {self.limit} bytes")(scope, receive, send)
                    return
        received = 0
        started = False

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _TooLarge
            return message

        async def tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited, tracking)
        except _TooLarge:
            if not started:
                await _error(413, "too_large", f"request body over {self.limit} bytes")(scope, receive, send)


class _TooLarge(Exception):
    pass


# ------------------------------------------------------------------------------- schema plumbing

#: one server-sent event (OpenAPI 3.1: the schema of a text/event-stream response describes each event)
_SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["data", "event"],
    "properties": {
        "event": {
            "type": "string",
            "enum": ["task.started", "task.progress", "task.partial", "task.waiting", "task.completed", "task.failed"],
        },
        "id": {"type": "string", "pattern": "^[0-9]+$", "description": "the product event's seq"},
        "retry": {"type": "integer"},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {"$ref": "#/components/schemas/ProductEvent"},
        },
    },
}


def _hoist(schema: dict[str, Any], prefix: str, components: dict[str, Any]) -> dict[str, Any]:
    """Move a JSON schema's ``$defs`` into OpenAPI components (named ``<prefix><Def>``), rewriting refs."""
    schema = copy.deepcopy(schema)
    defs = schema.pop("$defs", None) or schema.pop("definitions", None) or {}
    renamed = {name: f"{prefix}{name}" for name in defs}

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                for marker in ("#/$defs/", "#/definitions/"):
                    if ref.startswith(marker) and ref[len(marker) :] in renamed:
                        node = {**node, "$ref": f"#/components/schemas/{renamed[ref[len(marker) :]]}"}
            return {k: rewrite(v) for k, v in node.items()}
        if isinstance(node, list):
            return [rewrite(v) for v in node]
        return node

    for name, body in defs.items():
        components[renamed[name]] = rewrite(body)
    return rewrite(schema)  # type: ignore[no-any-return]


def _camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.replace("-", "_").replace(".", "_").split("_") if part)


# ------------------------------------------------------------------------------------- the gateway


class Gateway:
    """The state behind the routes (held on ``app.state.gateway``)."""

    def __init__(self, runtime: Runtime, settings: GatewaySettings):
        self.runtime = runtime
        self.settings = settings
        self.auth = Authenticator(settings)
        self.limiter = RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst)
        self.failures = FailureThrottle(settings)
        self.hub = ProductHub(runtime, keep_finished=settings.keep_finished)
        self.dispatcher = ChannelDispatcher.from_stack(runtime, self.hub, settings.channels)
        self.runnable_of: OrderedDict[tuple[str, str], str] = OrderedDict()
        self.idempotent: OrderedDict[tuple[str, str], str] = OrderedDict()
        self.signals: OrderedDict[tuple[str, str, str], tuple[str, str]] = OrderedDict()
        self._validators: dict[str, Any] = {}

    # ---------------------------------------------------------------------------------- callers

    def principal(self, credential: str | None, client: str = "unknown") -> Principal:
        """The caller, or 401; a client address with too many recent failures gets 429 first,
        whatever it sends (keys cannot be guessed at speed)."""
        if not self.settings.open:
            self.failures.check(client)
        try:
            principal = self.auth.authenticate(credential)
        except AuthError as err:
            if err.status == 401:
                self.failures.failed(client)
            raise
        if self.settings.open:
            return principal  # development mode: one shared identity, so no per-key limit to apply
        wait = self.limiter.take(principal.key_id)
        if wait > 0:
            raise _ApiError(429, "rate_limited", "too many requests for this key", {"Retry-After": str(int(wait) + 1)})
        return principal

    async def execution(self, execution_id: str, principal: Principal) -> Execution:
        """The caller's execution, or 404 (only when it does not exist or belongs to another
        tenant). One that no live object holds (after a restart, or started by another process) is
        adopted from the store by the plugin that owns its kind (``runtime.find_execution``)."""
        try:
            execution = await self.runtime.find_execution(execution_id, principal.tenant)
        except NotFoundError:
            raise _ApiError(404, "not_found", f"no execution {execution_id!r}") from None
        return execution

    # --------------------------------------------------------------------------------- validation

    def validate(self, name: str, schema: dict[str, Any], value: Any) -> None:
        from jsonschema import Draft202012Validator

        validator = self._validators.get(name)
        if validator is None:
            validator = self._validators[name] = Draft202012Validator(schema)
        errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
        if errors:
            shown = "; ".join(f"{'/'.join(map(str, e.absolute_path)) or '(input)'}: {e.message}" for e in errors[:5])
            raise _ApiError(422, "invalid_request", f"the input does not match {name!r}'s schema: {shown}")

    # --------------------------------------------------------------------------------------- views

    async def view(self, execution: Execution) -> ExecutionView:
        status = execution.status
        product = self.hub.log(execution)
        if status is ExecutionStatus.WAITING and product.waiting_for is None:
            # just adopted (after a restart): its projector is replaying what it waits for
            with anyio.move_on_after(1.0):
                while product.waiting_for is None and execution.status is ExecutionStatus.WAITING:
                    await product.changed()
        output: Any = None
        error: TaskError | None = None
        if status is ExecutionStatus.COMPLETED:
            try:
                output = jsonable(await execution.result())
            except Exception as err:  # completed but unreadable: report, do not 500
                error = TaskError(code="error", message=_FAILURE_TEXT["error"])
                log.warning("execution %s completed but its result failed: %s", execution.id, err)
        elif status.finished:
            code = "cancelled" if status is ExecutionStatus.CANCELLED else "error"
            try:
                await execution.result()
            except Exception as err:
                code = "cancelled" if status is ExecutionStatus.CANCELLED else failure_code(err)
            error = TaskError(code=code, message=_FAILURE_TEXT[code])  # type: ignore[arg-type]
        base = f"/v1/executions/{execution.id}"
        return ExecutionView(
            id=execution.id,
            kind=execution.kind,
            runnable=self.runnable_of.get((execution.tenant, execution.id)),
            status=status.value,
            output=output,
            error=error,
            waiting_for=product.waiting_for if status is ExecutionStatus.WAITING else None,
            last_seq=len(product.events),
            links=Links(
                self=base, events=f"{base}/events", ws=f"{base}/ws", signals=f"{base}/signals", cancel=f"{base}/cancel"
            ),
        )

    # ------------------------------------------------------------------------------------ actions

    async def start(
        self, runnable: Runnable, request: Request, principal: Principal, wait: bool, timeout: float, key: str | None
    ) -> JSONResponse:
        principal.require("run")
        raw = await request.body()
        try:
            value = strict_json(raw, self.settings.max_json_depth) if raw.strip() else None
        except InputError as err:
            raise _ApiError(422, "invalid_request", str(err)) from None
        self.validate(runnable.name, runnable.input_schema(), value)
        execution: Execution | None = None
        if key is not None:
            known = self.idempotent.get((principal.tenant, key))
            if known is not None:
                try:
                    execution = await self.runtime.find_execution(known, principal.tenant)
                except NotFoundError:
                    execution = None
        if execution is None:
            # through the runtime: a task of this execution that raises fails this execution only
            execution = await self.runtime.start(runnable, value, tenant=principal.tenant)
            self.runnable_of[(execution.tenant, execution.id)] = runnable.name
            while len(self.runnable_of) > 100_000:
                self.runnable_of.popitem(last=False)
            if key is not None:
                self.idempotent[(principal.tenant, key)] = execution.id
                while len(self.idempotent) > 10_000:
                    self.idempotent.popitem(last=False)
            self.dispatcher.follow(execution)
        product = self.hub.log(execution)
        if wait:
            with anyio.move_on_after(timeout):
                await product.settled()
        view = await self.view(execution)
        finished = execution.status.finished
        headers = {"Location": view.links.self}
        return JSONResponse(
            view.model_dump(mode="json"), status_code=200 if wait and finished else 202, headers=headers
        )

    async def signal(
        self, execution: Execution, name: str, body: SignalRequest, principal: Principal
    ) -> SignalAccepted:
        principal.require("signal")
        accepted = SignalAccepted(execution_id=execution.id, signal=name, request_id=body.request_id, status="running")
        key = (execution.tenant, execution.id, body.request_id) if body.request_id else None
        fingerprint = (name, json.dumps(jsonable(body.payload), sort_keys=True))
        if key is not None and key in self.signals:
            # the same request again, even after the execution moved on: delivered once
            if self.signals[key] != fingerprint:
                raise _ApiError(
                    409, "conflict", f"request id {body.request_id!r} was used with another signal or payload"
                )
            return accepted.model_copy(update={"status": execution.status.value})
        if execution.status.finished:
            raise _ApiError(409, "conflict", f"execution {execution.id} has finished ({execution.status.value})")
        product = self.hub.log(execution)
        for entry in (product.waiting_for or {}).get("signals", []):
            if entry.get("name") == name and isinstance(entry.get("schema"), dict):
                self.validate(f"{execution.id}:{name}", entry["schema"], body.payload)
        if key is not None:
            self.signals[key] = fingerprint  # reserved before the await: a concurrent twin is a duplicate
            while len(self.signals) > 100_000:
                self.signals.popitem(last=False)
        try:
            await execution.signal(name, body.payload, request_id=body.request_id)
        except KeelError as err:
            if key is not None:
                self.signals.pop(key, None)
            code = "conflict" if isinstance(err, ConflictError | NotFoundError) else "rejected"
            raise _ApiError(409, code, str(err)) from None
        return accepted.model_copy(update={"status": execution.status.value})

    async def cancel(self, execution: Execution, reason: str, principal: Principal) -> ExecutionView:
        principal.require("cancel")
        with anyio.move_on_after(10):
            await execution.cancel(reason)
        return await self.view(execution)


def _client(request: Request | WebSocket) -> str:
    """The peer address (uvicorn puts the proxy's X-Forwarded-For there for trusted proxies)."""
    return request.client.host if request.client is not None else "unknown"


def _credential(request: Request | WebSocket, allow_query_token: bool = True) -> str | None:
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        return value.strip() if scheme.lower() == "bearer" else None
    key = request.headers.get("x-api-key")
    if key:
        return key
    # browsers cannot set headers on EventSource or WebSocket: accept the credential as a query
    # parameter, unless turned off (it ends up in access logs, proxies' logs and browser history)
    return request.query_params.get("access_token") if allow_query_token else None


def create_app(
    runtime: Runtime,
    settings: GatewaySettings | dict[str, Any] | None = None,
    *,
    title: str = "Keel gateway",
    adopt: bool = False,
) -> FastAPI:
    """Build the gateway app over ``runtime``.

    :param runtime: its runnables are served; if it is not started yet, the app's lifespan starts it
        (and closes it on shutdown).
    :param settings: default: the stack's ``[settings.gateway]``.
    :param adopt: on start-up, let the plugins take over the executions whose process is gone
        (``runtime.adopt_executions()``: running ones resume, timed waits get their timers);
        ``keel serve`` does. Waiting executions are adopted on demand whatever this says.
    """
    if settings is None:
        settings = GatewaySettings.model_validate(runtime.stack.settings("gateway"))
    elif isinstance(settings, dict):
        settings = GatewaySettings.model_validate(settings)
    gateway = Gateway(runtime, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            runtime.task_group  # noqa: B018 -- raises when not started
        except KeelError:
            async with runtime:
                try:
                    if adopt:
                        await runtime.adopt_executions()
                    yield
                finally:
                    await gateway.dispatcher.aclose()
            return
        try:
            if adopt:
                await runtime.adopt_executions()
            yield
        finally:
            await gateway.dispatcher.aclose()

    app = FastAPI(
        title=title,
        version="1",
        description="Start runnables, follow executions (SSE, WebSocket), answer waiting states.",
        lifespan=lifespan,
        responses={},
    )
    app.state.gateway = gateway
    app.add_middleware(JsonGuard, max_depth=settings.max_json_depth)  # inside the size limit
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    if settings.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "Last-Event-ID", "Idempotency-Key", "X-API-Key"],
            expose_headers=["Retry-After", "Location"],
            max_age=600,
        )

    @app.exception_handler(_ApiError)
    async def api_error(request: Request, err: _ApiError) -> JSONResponse:
        return _error(err.status, err.code, err.message, err.headers)

    @app.exception_handler(AuthError)
    async def auth_error(request: Request, err: AuthError) -> JSONResponse:
        if err.status == 429:
            wait = str(int(err.retry_after or 0) + 1)
            return _error(429, "rate_limited", str(err), {"Retry-After": wait})
        headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
        return _error(err.status, "unauthorized" if err.status == 401 else "forbidden", str(err), headers)

    @app.exception_handler(NotFoundError)
    async def not_found(request: Request, err: NotFoundError) -> JSONResponse:
        return _error(404, "not_found", str(err))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        shown = "; ".join(f"{'/'.join(map(str, e.get('loc', ())))}: {e.get('msg', '')}" for e in err.errors()[:5])
        return _error(422, "invalid_request", shown or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        if err.status_code == 400:  # a body FastAPI could not parse: invalid input, like any other
            return _error(422, "invalid_request", f"the body could not be read: {err.detail}")
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code, "http_error")
        return _error(err.status_code, code, str(err.detail), dict(err.headers or {}))

    async def caller(request: Request) -> Principal:
        return gateway.principal(_credential(request, settings.allow_query_token), _client(request))

    def require(scope: str) -> Callable[[Request], Awaitable[Principal]]:
        async def dependency(request: Request) -> Principal:
            principal = gateway.principal(_credential(request, settings.allow_query_token), _client(request))
            principal.require(scope)
            return principal

        return dependency

    # ----------------------------------------------------------------------------------- routes

    @app.get(
        "/healthz",
        response_model=Health,
        responses={503: {"model": Health, "description": "the runtime cannot start work (restart the process)"}},
        tags=["service"],
    )
    async def healthz() -> JSONResponse:
        """Liveness: the process answers and its runtime can start work (503 when it cannot)."""
        ok, detail = gateway.runtime.health()
        body = Health(status="ok" if ok else "unavailable", detail=detail)
        return JSONResponse(body.model_dump(), status_code=200 if ok else 503)

    @app.get("/v1/runnables", response_model=list[RunnableView], responses=_ERRORS, tags=["runnables"])
    async def list_runnables(principal: Principal = Depends(require("read"))) -> list[RunnableView]:
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

    extra: dict[str, Any] = {}
    for runnable in runtime.runnables:
        _add_start_route(app, gateway, runnable, caller, extra)

    @app.post(
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
    ) -> JSONResponse:
        try:
            runnable = gateway.runtime.runnables.get(name)
        except NotFoundError:
            raise _ApiError(404, "not_found", f"no runnable {name!r}") from None
        return await gateway.start(runnable, request, principal, wait, timeout, idempotency_key)

    @app.get("/v1/executions/{execution_id}", response_model=ExecutionView, responses=_ERRORS, tags=["executions"])
    async def get_execution(execution_id: str, principal: Principal = Depends(require("read"))) -> ExecutionView:
        """An execution's status; its validated output once completed, a safe error once failed."""
        return await gateway.view(await gateway.execution(execution_id, principal))

    @app.get(
        "/v1/executions/{execution_id}/events",
        response_class=StreamingResponse,
        responses={
            200: {
                "description": "server-sent events: `id` is the product event's seq, `event` its type, `data` its JSON",
                "content": {"text/event-stream": {"schema": _SSE_EVENT}},
            },
            **_ERRORS,
        },
        tags=["executions"],
    )
    async def stream_events(
        execution_id: str,
        after: int | None = Query(None, ge=0, description="resume after this seq (or send Last-Event-ID)"),
        last_event_id: str = Header(
            "", alias="Last-Event-ID", pattern=r"^([0-9]{1,18})?$", description="the last seq received"
        ),
        principal: Principal = Depends(require("read")),
    ) -> StreamingResponse:
        """Product events of an execution as SSE, from the start or after ``Last-Event-ID``; ends with
        ``task.completed`` or ``task.failed``."""
        execution = await gateway.execution(execution_id, principal)
        product = gateway.hub.log(execution)
        since = after or 0
        if last_event_id.strip():
            try:
                since = parse_seq(last_event_id, "Last-Event-ID")
            except InputError as err:
                raise _ApiError(422, "invalid_request", str(err)) from None
        keepalive = gateway.settings.keepalive_seconds

        async def body() -> AsyncIterator[bytes]:
            yield b"retry: 2000\n\n"
            i = since
            while True:
                frames = product.frames
                if i < len(frames):
                    end = len(frames)
                    yield b"".join(frames[i:end])
                    i = end
                    continue
                if product.finished:
                    return
                with anyio.move_on_after(keepalive) as idle:
                    await product.changed()
                if idle.cancelled_caught:
                    yield b": keepalive\n\n"

        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(body(), media_type="text/event-stream", headers=headers)

    @app.post(
        "/v1/executions/{execution_id}/signals/{name}",
        status_code=202,
        response_model=SignalAccepted,
        responses={
            **_ERRORS,
            409: {
                "model": ErrorBody,
                "description": "not waiting for it, finished, or a request id reused with another payload",
            },
        },
        tags=["executions"],
    )
    async def send_signal(
        execution_id: str, name: str, body: SignalRequest, principal: Principal = Depends(caller)
    ) -> SignalAccepted:
        """Answer a waiting state (approve, answer, resume). The same ``request_id`` twice is delivered once."""
        return await gateway.signal(await gateway.execution(execution_id, principal), name, body, principal)

    @app.post(
        "/v1/executions/{execution_id}/cancel",
        status_code=202,
        response_model=ExecutionView,
        responses=_ERRORS,
        tags=["executions"],
    )
    async def cancel_execution(
        execution_id: str, body: CancelRequest | None = None, principal: Principal = Depends(caller)
    ) -> ExecutionView:
        """Cancel an execution; cancelling a finished one changes nothing."""
        reason = body.reason if body is not None else "cancelled by the caller"
        return await gateway.cancel(await gateway.execution(execution_id, principal), reason, principal)

    @app.websocket("/v1/executions/{execution_id}/ws")
    async def follow_ws(websocket: WebSocket, execution_id: str) -> None:
        await _websocket(gateway, websocket, execution_id)

    if settings.static_dir or settings.console:
        from starlette.staticfiles import StaticFiles

        # a folder of the application's own, or the console page this package ships (in its wheel)
        folder = Path(settings.static_dir) if settings.static_dir else Path(__file__).parent / "web"
        if not folder.is_dir():
            raise KeelError(f"gateway: static_dir {str(folder)!r} is not a folder")
        app.mount("/ui", StaticFiles(directory=folder, html=True), name="ui")

        @app.get("/", include_in_schema=False)
        async def root() -> RedirectResponse:
            return RedirectResponse("/ui/")

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(extra)
            components["ProductEvent"] = _hoist(ProductEvent.model_json_schema(), "ProductEvent", components)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _add_start_route(
    app: FastAPI,
    gateway: Gateway,
    runnable: Runnable,
    caller: Callable[[Request], Awaitable[Principal]],
    extra: dict[str, Any],
) -> None:
    name = runnable.name
    prefix = _camel(name)
    input_schema = _hoist(runnable.input_schema(), f"{prefix}Input", extra)
    output_schema = _hoist(runnable.output_schema(), f"{prefix}Output", extra)
    extra[f"{prefix}Result"] = {
        "title": f"{prefix}Result",
        "description": f"an execution of {name!r} that has finished; output matches its output schema",
        "allOf": [
            {"$ref": "#/components/schemas/ExecutionView"},
            {"type": "object", "properties": {"output": {"anyOf": [output_schema, {"type": "null"}]}}},
        ],
    }

    async def start(
        request: Request,
        wait: bool = Query(False, description="wait until it finishes (200) or waits for a signal (202)"),
        timeout: float = Query(300.0, gt=0, le=3600, description="seconds to wait with wait=true"),
        idempotency_key: str | None = Header(None, max_length=200, description="the same key starts one execution"),
        principal: Principal = Depends(caller),
    ) -> JSONResponse:
        return await gateway.start(runnable, request, principal, wait, timeout, idempotency_key)

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
        responses={
            200: {
                "description": "with wait=true: finished",
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{prefix}Result"}}},
            },
            202: {"model": ExecutionView, "description": "started (or, with wait=true, waiting or still running)"},
            **_ERRORS,
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "description": f"the input of {name!r}",
                "content": {"application/json": {"schema": input_schema}},
            }
        },
    )


async def _websocket(gateway: Gateway, websocket: WebSocket, execution_id: str) -> None:
    """Product events as JSON text frames; the client may send signals and a cancel."""
    try:
        principal = gateway.principal(_credential(websocket, gateway.settings.allow_query_token), _client(websocket))
        principal.require("read")
        execution = await gateway.execution(execution_id, principal)
    except AuthError as err:
        # accept, then close with a code a browser can read (a refused handshake is an opaque 403)
        await websocket.accept()
        await websocket.close(code=4000 + err.status, reason=str(err)[:120])
        return
    except _ApiError as err:
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
            await _ws_command(gateway, execution, principal, message, send)

    async with anyio.create_task_group() as tg:

        async def reader() -> None:
            await receive()
            tg.cancel_scope.cancel()

        tg.start_soon(reader)
        try:
            async for i in product.follow(since):
                await send(product.json[i])
            await websocket.close(code=1000)
        except (WebSocketDisconnect, RuntimeError):
            pass
        tg.cancel_scope.cancel()


async def _ws_command(
    gateway: Gateway, execution: Execution, principal: Principal, message: Any, send: Callable[[str], Awaitable[None]]
) -> None:
    kind = message.get("type") if isinstance(message, dict) else None
    request_id = message.get("request_id") if isinstance(message, dict) else None
    try:
        if kind == "signal":
            body = SignalRequest(payload=message.get("payload"), request_id=request_id)
            name = message.get("name")
            if not isinstance(name, str) or not name:
                raise _ApiError(422, "invalid_request", "a signal needs a name")
            accepted = await gateway.signal(execution, name, body, principal)
            reply: dict[str, Any] = {"type": "ack", "request_id": request_id, "status": accepted.status}
        elif kind == "cancel":
            reason = str(message.get("reason") or "cancelled by the caller")[:500]
            view = await gateway.cancel(execution, reason, principal)
            reply = {"type": "ack", "request_id": request_id, "status": view.status}
        else:
            raise _ApiError(
                422, "invalid_request", "send {'type': 'signal', 'name': ..., 'payload': ...} or {'type': 'cancel'}"
            )
    except _ApiError as err:
        reply = {"type": "error", "request_id": request_id, "code": err.code, "message": err.message}
    except AuthError as err:
        reply = {"type": "error", "request_id": request_id, "code": "forbidden", "message": str(err)}
    except Exception as err:  # pydantic errors on a bad request id, ...
        reply = {"type": "error", "request_id": request_id, "code": "invalid_request", "message": str(err)[:300]}
    await send(json.dumps(reply))
