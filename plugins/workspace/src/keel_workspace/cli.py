"""``keel workspace ls|show|export``: read the workspaces in the store the stack resolves.

Imported when ``keel workspace`` runs (``keel_commands`` adds it by reference); the models load inside the commands.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import click

import keel

T = TypeVar("T")

_tenant = click.option("--tenant", default="default", show_default=True, help="whose workspaces")
_as_json = click.option("--json", "as_json", is_flag=True, help="machine-readable output")


def _runtime(ctx: click.Context) -> keel.Runtime:
    """A runtime over the host and stack the ``keel`` command already loaded (or the stack in force)."""
    obj = ctx.find_root().obj
    host, stack = getattr(obj, "host", None), getattr(obj, "stack", None)
    if isinstance(host, keel.PluginHost) and isinstance(stack, keel.Stack):
        return keel.Runtime(host, stack)
    return keel.Runtime.from_stack()


def _with_store(ctx: click.Context, work: Callable[[keel.Store], Awaitable[T]]) -> T:
    async def run() -> T:
        async with _runtime(ctx) as runtime:
            return await work(runtime.store())

    return anyio.run(run)


@click.group()
def workspace() -> None:
    """Inspect workspaces: observations, artifacts, decisions, checkpoints."""


@workspace.command("ls")
@_tenant
@_as_json
@click.pass_context
def ls_cmd(ctx: click.Context, tenant: str, as_json: bool) -> None:
    """List workspace scopes with their number of entries."""
    from keel_workspace.workspace import list_scopes

    scopes = _with_store(ctx, lambda store: list_scopes(store, tenant))
    if as_json:
        click.echo(json.dumps([{"scope": s, "entries": n} for s, n in scopes.items()], indent=2))
    elif not scopes:
        click.echo(f"no workspaces for tenant {tenant!r}")
    else:
        for scope, count in scopes.items():
            click.echo(f"{scope:<48} {count:>6} entries")


async def _dump(store: keel.Store, tenant: str, scope: str, children: bool) -> dict[str, Any]:
    from keel_workspace.workspace import PREFIX, Workspace, list_scopes

    if scope not in await list_scopes(store, tenant) and not await store.list_keys(tenant, f"{PREFIX}{scope}"):
        raise keel.NotFoundError(f"no workspace {scope!r} for tenant {tenant!r}: see `keel workspace ls`")
    ws = Workspace(store, scope, tenant=tenant)
    entries = await ws.entries(include_children=children)
    checkpoints = {name: await ws.restore(name) for name in await ws.checkpoints()}
    return {
        "scope": scope,
        "tenant": tenant,
        "entries": [e.model_dump(mode="json") for e in entries],
        "checkpoints": checkpoints,
    }


@workspace.command("show")
@click.argument("scope")
@_tenant
@click.option("--children", is_flag=True, help="include child workspaces")
@_as_json
@click.pass_context
def show_cmd(ctx: click.Context, scope: str, tenant: str, children: bool, as_json: bool) -> None:
    """Show a workspace's entries, oldest first (artifacts as refs)."""
    dump = _with_store(ctx, lambda store: _dump(store, tenant, scope, children))
    if as_json:
        click.echo(json.dumps(dump["entries"], indent=2))
        return
    from keel_workspace.context import render_entry
    from keel_workspace.workspace import _ENTRY

    click.echo(f"workspace {scope} (tenant {tenant}): {len(dump['entries'])} entries")
    for data in dump["entries"]:
        entry = _ENTRY.validate_python(data)
        where = f" [{entry.scope}]" if entry.scope != scope else ""
        click.echo(f"  {entry.seq:>4}{where} {render_entry(entry)}")


@workspace.command("export")
@click.argument("scope")
@_tenant
@click.option("--children", is_flag=True, help="include child workspaces")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="write to a file")
@_as_json
@click.pass_context
def export_cmd(ctx: click.Context, scope: str, tenant: str, children: bool, output: Path | None, as_json: bool) -> None:
    """Export a workspace as JSON: entries, artifact refs and checkpoint states (always JSON)."""
    dump = _with_store(ctx, lambda store: _dump(store, tenant, scope, children))
    text = json.dumps(dump, indent=2, ensure_ascii=False)
    if output is None:
        click.echo(text)
    else:
        output.write_text(text + "\n", encoding="utf-8")
        if not as_json:
            click.echo(f"wrote {len(dump['entries'])} entries of {scope} to {output}", err=True)
