"""``keel mcp serve``: chosen Keel actions as an MCP server, every call under Keel's policy and audit.

Each ``tools/call`` goes through :meth:`keel.Runtime.call_action`: scope, ``keel_check_action``
policy, approval (no approver configured: an ``irreversible`` action is denied — fail closed) and
the ``action.*`` audit events, exactly as for an agent's own tool call.

Over HTTP, callers are identified as the gateway identifies them (:mod:`keel.credentials`, from
``[settings.mcp]``): an API key or a token names the tenant each call is recorded under, and a
server with no credentials configured refuses any address but loopback unless ``--insecure``.
The ``action.*`` records also go to a JSON-lines file (``audit_log``), so they are kept even when
no observer plugin is installed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import mcp_types
from mcp.server import Server
from pydantic import Field

import keel
from keel.credentials import Authenticator, AuthError, CredentialSettings, FailureThrottle, Principal

__all__ = ["SCOPES", "JsonLinesAudit", "ServeSettings", "build_server", "selected", "serve_http", "serve_stdio"]

#: what an MCP caller's credential must allow (``*`` allows everything)
SCOPES = ("call",)


class ServeSettings(CredentialSettings):
    """``[settings.mcp]``: who may call ``keel mcp serve --http``, and where the audit goes."""

    audit_log: str = Field(
        default=".keel/audit/mcp-serve.jsonl",
        description="JSON lines of every action.* record (relative to the working folder); '' = none",
    )


def selected(
    runtime: keel.Runtime, names: Iterable[str], tags: Iterable[str], agent: str | None
) -> list[keel.ActionSpec]:
    """The actions chosen by name or tag, among those the calling agent may see."""
    return runtime.actions.visible(agent, _wanted(names, tags))


def _wanted(names: Iterable[str], tags: Iterable[str]) -> list[str] | None:
    wanted = [*names, *(f"tag:{t}" for t in tags)]
    return wanted or None


def build_server(
    runtime: keel.Runtime,
    *,
    names: Iterable[str] = (),
    tags: Iterable[str] = (),
    agent: str | None = "mcp-client",
    approver: keel.Approver | None = None,
    approval_timeout: float | None = 300.0,
    audit: Callable[[keel.RuntimeEvent], None] | None = None,
) -> Server[Any]:
    """An MCP server offering the selected actions (chosen again at every listing, so actions of
    environments that start later appear once they are ready)."""
    names, tags = list(names), list(tags)

    async def list_tools(ctx: Any, params: mcp_types.PaginatedRequestParams | None) -> mcp_types.ListToolsResult:
        return mcp_types.ListToolsResult(tools=[_tool(spec) for spec in selected(runtime, names, tags, agent)])

    async def call_tool(ctx: Any, params: mcp_types.CallToolRequestParams) -> mcp_types.CallToolResult:
        principal = _principal_of(ctx)
        context = keel.ActionContext(agent=agent, tenant=principal.tenant if principal else "default")

        def emit(kind: str, payload: dict[str, Any]) -> None:
            event = keel.RuntimeEvent(kind=kind, tenant=context.tenant, payload=payload)
            if audit is not None:
                audit(event)
            runtime.publish(event)

        # what runtime.call_action does, plus the selection: a name outside it is an unknown action
        outcome = await keel.call_action(
            runtime.actions, params.name, dict(params.arguments or {}), context=context,
            check=runtime.check_action, approver=approver, approval_timeout=approval_timeout, emit=emit,
            visible=_wanted(names, tags),
        )  # fmt: skip
        text = outcome.for_model()
        structured = outcome.result if outcome.ok and isinstance(outcome.result, dict) else None
        if not outcome.ok:
            structured = {"error": outcome.error}
        return mcp_types.CallToolResult(
            content=[mcp_types.TextContent(text=text)], structured_content=structured, is_error=not outcome.ok
        )

    return Server(
        "keel",
        instructions="Keel actions; every call is checked by the stack's policy and recorded in its audit log.",
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


def _principal_of(ctx: Any) -> Principal | None:
    """The caller our HTTP middleware identified (stdio has none: the local user)."""
    request = getattr(ctx, "request", None)
    scope = getattr(request, "scope", None)
    found = scope.get("state", {}).get("keel_principal") if isinstance(scope, dict) else None
    return found if isinstance(found, Principal) else None


class JsonLinesAudit:
    """Writes each ``action.*`` record of ``keel mcp serve`` to a JSON-lines file as it happens
    (before the call's answer is sent), so the trail exists without any observer plugin."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = self.path.open("a", encoding="utf-8")

    def __call__(self, event: keel.RuntimeEvent) -> None:
        self._handle.write(event.model_dump_json() + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


class _Authenticate:
    """ASGI middleware: identify the caller of every HTTP request (401/403/429 otherwise)."""

    def __init__(self, app: Any, settings: ServeSettings):
        self.app = app
        self.auth = Authenticator(settings, SCOPES, server="mcp")
        self.failures = FailureThrottle(settings)
        self.open = settings.open

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        client = (scope.get("client") or ("unknown", 0))[0]
        credential = headers.get("x-api-key")
        scheme, _, value = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            credential = value.strip()
        try:
            if not self.open:
                self.failures.check(client)
            try:
                principal = self.auth.authenticate(credential)
            except AuthError as err:
                if err.status == 401:
                    self.failures.failed(client)
                raise
            principal.require("call")
        except AuthError as err:
            from starlette.responses import JSONResponse

            extra = {"WWW-Authenticate": "Bearer"} if err.status == 401 else {}
            if err.status == 429:
                extra = {"Retry-After": str(int(err.retry_after or 0) + 1)}
            body = {
                "error": {
                    "code": {401: "unauthorized", 403: "forbidden"}.get(err.status, "rate_limited"),
                    "message": str(err),
                }
            }
            await JSONResponse(body, status_code=err.status, headers=extra)(scope, receive, send)
            return
        scope.setdefault("state", {})["keel_principal"] = principal
        await self.app(scope, receive, send)


def _tool(spec: keel.ActionSpec) -> mcp_types.Tool:
    return mcp_types.Tool(
        name=spec.name,
        description=spec.description or spec.name,
        input_schema=spec.parameters,
        annotations=mcp_types.ToolAnnotations(
            read_only_hint=spec.risk == "read",
            destructive_hint=spec.risk == "irreversible",
        ),
    )


async def serve_stdio(server: Server[Any]) -> None:
    from mcp.server.stdio import stdio_server

    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


async def serve_http(
    server: Server[Any], host: str, port: int, path: str = "/mcp", settings: ServeSettings | None = None
) -> None:
    """Serve over streamable HTTP, every request identified by ``settings``' credentials."""
    import uvicorn

    app = _Authenticate(server.streamable_http_app(streamable_http_path=path, host=host), settings or ServeSettings())
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    await uvicorn.Server(config).serve()
