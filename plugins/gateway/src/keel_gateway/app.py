"""``create_app(runtime)``: the FastAPI app over a runtime's runnables and executions.

The app only validates, calls and projects: it checks the caller and the input against the
runnable's JSON schema, starts the runnable or talks to the execution through the kernel's
``Execution`` protocol, and shows product events, never RuntimeEvents. Every lookup is scoped to
the caller's tenant, so another tenant's execution is a 404 like one that does not exist.

The pieces: :mod:`~keel_gateway.schemas` (wire types), :mod:`~keel_gateway.middleware` (body
limit), :mod:`~keel_gateway.openapi`, :mod:`~keel_gateway.service` (the state and the actions),
:mod:`~keel_gateway.routers` and :mod:`~keel_gateway.websocket` (the routes).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from keel import KeelError, NotFoundError, Runtime
from keel_gateway import openapi, routers
from keel_gateway.auth import AuthError
from keel_gateway.inputs import JsonGuard
from keel_gateway.middleware import BodyLimit
from keel_gateway.schemas import ApiError, ErrorBody, ExecutionView, error_response
from keel_gateway.service import Gateway
from keel_gateway.settings import GatewaySettings

__all__ = ["ErrorBody", "ExecutionView", "create_app"]


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
    runtime.serving.add("gateway")  # keel doctor: what else this process serves
    app = FastAPI(
        title=title,
        version="1",
        description="Start runnables, follow executions (SSE, WebSocket), answer waiting states.",
        lifespan=_lifespan(gateway, adopt),
        responses={},
    )
    app.state.gateway = gateway
    _middleware(app, settings)
    _error_handlers(app)
    app.include_router(routers.service)
    extra: dict[str, Any] = {}
    for runnable in runtime.runnables:
        routers.add_start_route(app, runnable, extra)
    app.include_router(routers.executions)
    if settings.static_dir or settings.console:
        _static(app, settings)
    openapi.install(app, extra)
    return app


def _lifespan(gateway: Gateway, adopt: bool) -> Any:
    runtime = gateway.runtime

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

    return lifespan


def _middleware(app: FastAPI, settings: GatewaySettings) -> None:
    app.add_middleware(JsonGuard, max_depth=settings.max_json_depth)  # inside the size limit
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    if settings.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "Last-Event-ID",
                "Idempotency-Key",
                "X-API-Key",
                "traceparent",
            ],
            expose_headers=["Retry-After", "Location"],
            max_age=600,
        )


def _error_handlers(app: FastAPI) -> None:
    """Every error, FastAPI's own included, answers with :class:`ErrorBody`."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError) -> JSONResponse:
        return error_response(err.status, err.code, err.message, err.headers)

    @app.exception_handler(AuthError)
    async def auth_error(request: Request, err: AuthError) -> JSONResponse:
        if err.status == 429:
            wait = str(int(err.retry_after or 0) + 1)
            return error_response(429, "rate_limited", str(err), {"Retry-After": wait})
        headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
        return error_response(err.status, "unauthorized" if err.status == 401 else "forbidden", str(err), headers)

    @app.exception_handler(NotFoundError)
    async def not_found(request: Request, err: NotFoundError) -> JSONResponse:
        return error_response(404, "not_found", str(err))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        shown = "; ".join(f"{'/'.join(map(str, e.get('loc', ())))}: {e.get('msg', '')}" for e in err.errors()[:5])
        return error_response(422, "invalid_request", shown or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        if err.status_code == 400:  # a body FastAPI could not parse: invalid input, like any other
            return error_response(422, "invalid_request", f"the body could not be read: {err.detail}")
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code, "http_error")
        return error_response(err.status_code, code, str(err.detail), dict(err.headers or {}))


def _static(app: FastAPI, settings: GatewaySettings) -> None:
    from starlette.staticfiles import StaticFiles

    # a folder of the application's own, or the console page this package ships (in its wheel)
    folder = Path(settings.static_dir) if settings.static_dir else Path(__file__).parent / "web"
    if not folder.is_dir():
        raise KeelError(f"gateway: static_dir {str(folder)!r} is not a folder")
    app.mount("/ui", StaticFiles(directory=folder, html=True), name="ui")

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/ui/")
