"""``keel mcp serve``: chosen Keel actions as an MCP server, every call under Keel's policy and audit.

Each ``tools/call`` goes through :meth:`keel.Runtime.call_action`: scope, ``keel_check_action``
policy, approval (no approver configured: an ``irreversible`` action is denied — fail closed) and
the ``action.*`` audit events, exactly as for an agent's own tool call.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import mcp_types
from mcp.server import Server

import keel

__all__ = ["build_server", "selected", "serve_http", "serve_stdio"]


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
) -> Server[Any]:
    """An MCP server offering the selected actions (chosen again at every listing, so actions of
    environments that start later appear once they are ready)."""
    names, tags = list(names), list(tags)

    async def list_tools(ctx: Any, params: mcp_types.PaginatedRequestParams | None) -> mcp_types.ListToolsResult:
        return mcp_types.ListToolsResult(tools=[_tool(spec) for spec in selected(runtime, names, tags, agent)])

    async def call_tool(ctx: Any, params: mcp_types.CallToolRequestParams) -> mcp_types.CallToolResult:
        context = keel.ActionContext(agent=agent)

        def emit(kind: str, payload: dict[str, Any]) -> None:
            runtime.publish(keel.RuntimeEvent(kind=kind, tenant=context.tenant, payload=payload))

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


async def serve_http(server: Server[Any], host: str, port: int, path: str = "/mcp") -> None:
    import uvicorn

    app = server.streamable_http_app(streamable_http_path=path, host=host)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    await uvicorn.Server(config).serve()
