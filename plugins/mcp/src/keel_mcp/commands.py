"""``keel mcp serve`` (``keel actions`` is the kernel's). Heavy imports (the mcp SDK, uvicorn) happen inside."""

from __future__ import annotations

import anyio
import click

import keel

__all__ = ["add_commands", "load_approver"]


def _state() -> tuple[keel.PluginHost, keel.Stack]:
    obj = click.get_current_context().find_root().obj
    return obj.host, obj.stack


def add_commands(cli: click.Group) -> None:
    cli.add_command(mcp_group)


@click.group("mcp")
def mcp_group() -> None:
    """MCP: serve Keel actions to any MCP client. (Hosted MCP servers are `[environments.*]`.)"""


@mcp_group.command("serve")
@click.option("--action", "names", multiple=True, metavar="NAME", help="offer this action (repeatable)")
@click.option("--tag", "tags", multiple=True, metavar="TAG", help="offer the actions with this tag (repeatable)")
@click.option("--all", "offer_all", is_flag=True, help="offer every action the agent may see")
@click.option("--agent", default="mcp-client", show_default=True, help="the caller's agent name, for scope and audit")
@click.option("--http", "http", is_flag=True, help="streamable HTTP instead of stdio")
@click.option("--host", default="127.0.0.1", show_default=True, help="HTTP: address to bind")
@click.option("--port", default=8765, show_default=True, type=int, help="HTTP: port")
@click.option("--path", default="/mcp", show_default=True, help="HTTP: endpoint path")
@click.option(
    "--approver", "approver_ref", metavar="MODULE:ATTR",
    help="who approves risky calls: an Approver object or a function(request) -> bool; none = deny (fail closed)",
)  # fmt: skip
@click.option(
    "--approval-timeout", default=300.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
    help="seconds (> 0); no answer = deny",
)  # fmt: skip
@click.option(
    "--insecure", is_flag=True,
    help="HTTP: serve with no credentials in [settings.mcp] on a non-loopback address (only behind an authenticating proxy)",
)  # fmt: skip
@click.option(
    "--audit-log", "audit_log", metavar="PATH", default=None,
    help="JSON lines of every action.* record (default: [settings.mcp] audit_log, .keel/audit/mcp-serve.jsonl); '' = none",
)  # fmt: skip
def serve_cmd(
    names: tuple[str, ...],
    tags: tuple[str, ...],
    offer_all: bool,
    agent: str,
    http: bool,
    host: str,
    port: int,
    path: str,
    approver_ref: str | None,
    approval_timeout: float,
    insecure: bool,
    audit_log: str | None,
) -> None:
    """Expose chosen Keel actions as an MCP server (stdio by default, or --http).

    Every call goes through the stack's policy, approval and audit, as an agent's would.
    """
    if not (names or tags or offer_all):
        raise click.UsageError("choose what to offer: --action NAME, --tag TAG (repeatable) or --all")
    host_, stack = _state()
    approver = load_approver(approver_ref) if approver_ref else None
    from keel.credentials import check_bind
    from keel_mcp.server import ServeSettings

    try:
        settings = ServeSettings.model_validate(stack.settings("mcp"))
        warning = check_bind(settings, host, insecure=insecure, server="mcp") if http else None
    except (keel.KeelError, ValueError) as err:
        raise click.UsageError(str(err)) from None
    if warning:
        click.secho(warning, err=True, fg="red", bold=True)
    audit_path = settings.audit_log if audit_log is None else audit_log

    async def run() -> None:
        from keel_mcp.server import JsonLinesAudit, build_server, selected, serve_http, serve_stdio

        audit = JsonLinesAudit(audit_path) if audit_path else None
        if audit is not None:
            click.echo(f"keel mcp serve: audit records go to {audit_path}", err=True)
        async with keel.Runtime(host_, stack) as runtime:
            server = build_server(
                runtime,
                names=names,
                tags=tags,
                agent=agent,
                approver=approver,
                approval_timeout=approval_timeout,
                audit=audit,
            )
            offered = [spec.name for spec in selected(runtime, names, tags, agent)]
            unknown = [n for n in names if n not in offered]
            where = f"http://{host}:{port}{path}" if http else "stdio"
            click.echo(f"keel mcp serve: {len(offered)} action(s) on {where}: {', '.join(offered) or 'none'}", err=True)
            if unknown:
                click.echo(
                    f"warning: not offered (unknown or not visible to {agent!r}): {', '.join(unknown)}", err=True
                )
            if http:
                await serve_http(server, host, port, path, settings)
            else:
                await serve_stdio(server)
        if audit is not None:
            audit.close()

    anyio.run(run)


def load_approver(ref: str) -> keel.Approver:
    """``module:attr`` naming an :class:`keel.Approver` (or a class of one) or a callback: loaded as
    the stack's ``approver`` is (:func:`keel.load_approver`), a bad one a usage error of ``--approver``."""
    try:
        return keel.load_approver(ref, what="--approver")
    except keel.KeelError as err:
        raise click.BadParameter(str(err), param_hint="--approver") from err
