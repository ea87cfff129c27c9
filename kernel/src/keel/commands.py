"""The kernel's own ``keel`` sub-commands: ``version``, ``plugins``, ``stacks``, ``stack``, ``actions``.

They register through ``keel_commands`` like every plugin's (see :mod:`keel.builtins`), by
reference, so that ``keel plugins`` imports this module and nothing of the others. ``keel env`` is
in :mod:`keel.env_commands`, ``keel doctor`` in :mod:`keel.doctor`.
"""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING, Any

import click

from keel.errors import KeelError

if TYPE_CHECKING:
    from keel.cli import CliState
    from keel.types import ActionSpec

__all__ = ["actions", "plugins", "stack", "stacks", "version"]

_JSON = click.option("--json", "as_json", is_flag=True, help="machine-readable output")


@click.command()
def version() -> None:
    """Print the kernel's version."""
    from importlib.metadata import version as dist_version

    from keel.compat import CONTRACT_VERSION

    click.echo(f"keel-kernel {dist_version('keel-kernel')} (contract {CONTRACT_VERSION})")


@click.command()
@_JSON
@click.pass_obj
def plugins(state: CliState, as_json: bool) -> None:
    """List installed plugins, what they implement and what they registered."""
    infos = state.host.plugin_infos()
    problems = [str(p) for p in state.host.problems]
    if as_json:
        click.echo(json.dumps([i.as_dict() for i in infos], indent=2))
        for problem in problems:
            click.echo(f"problem: {problem}", err=True)
    else:
        for info in infos:
            dist = f"{info.distribution} {info.version}".strip()
            supports = f"  (keel-kernel{info.kernel_range})" if info.kernel_range else ""
            click.echo(f"{info.name:<24} {info.status:<12} {dist}{supports}")
            for family, names in sorted(info.registered.items()):
                click.echo(f"    {family}s: {', '.join(sorted(names))}")
            if info.hooks and not info.registered:
                click.echo(f"    hooks: {', '.join(info.hooks)}")
            if info.error:
                click.echo(f"    error: {info.error}")
        if problems:
            click.echo(f"\n{len(problems)} problem{'s' if len(problems) > 1 else ''}:")
            for problem in problems:
                click.echo(f"  - {problem}")
    if state.host.strict and problems:
        raise click.exceptions.Exit(1)  # KEEL_STRICT_PLUGINS: listed, and still an error


@click.command()
@_JSON
@click.pass_obj
def stacks(state: CliState, as_json: bool) -> None:
    """List the named stacks installed packages ship (entry-point group keel.stacks)."""
    rows = _named_stack_rows()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    elif not rows:
        click.echo("no named stacks installed: packages ship them in the entry-point group keel.stacks")
    for row in [] if as_json else rows:
        extends = f" (extends {row['extends']})" if row["extends"] else ""
        click.echo(f"{row['name']:<20} {row['status']:<9} {row['distribution']:<24} {row['target']}{extends}")
        if row["error"]:
            click.echo(f"    error: {row['error']}")
    if state.host.strict and any(row["status"] != "ok" for row in rows):
        raise click.exceptions.Exit(1)


@click.command()
@_JSON
@click.pass_obj
def stack(state: CliState, as_json: bool) -> None:
    """Show the resolved stack: each slot, its driver, and where the choice came from."""
    from keel.calls import governance_rows

    report = state.stack.check(state.host)
    governance = governance_rows(state.stack)
    approver = _approver_row(state)
    if as_json:
        shown = {"layers": state.stack.name, "slots": report, "approver": approver, "governance": governance}
        click.echo(json.dumps(shown, indent=2))
        return
    click.echo(f"stack: {state.stack.name}")
    for row in report:
        plugin = f" (plugin {row['plugin']})" if row["plugin"] else ""
        click.echo(f"  {row['slot']:<9} {row['name']:<12} {row['status']:<9} from {row['source']}{plugin}")
        if (row["note"] and row["status"] != "ok") or row["source"] == "built-in fallback":
            click.echo(f"            {row['note']}")
    if approver is None:
        click.echo("  approver  none         actions that need approval are denied (fail closed)")
    else:
        click.echo(f"  approver  {approver['ref']:<12} {approver['status']:<9} from {approver['source']}")
        click.echo(f"            {approver['note']}")
    click.echo("governance (budgets, timeouts, retries):" if governance else "governance: no [budgets], no [calls]")
    for row in governance:
        values = ", ".join(f"{k} = {v}" for k, v in row["values"].items())
        click.echo(f"  [{row['table']}] {values}  (from {row['source']})")


@click.command()
@_JSON
@click.option("--agent", default=None, help="only the actions this agent may see")
@click.option("--start", "start_lazy", is_flag=True, help="start lazy environments too, to list their actions")
@click.pass_obj
def actions(state: CliState, as_json: bool, agent: str | None, start_lazy: bool) -> None:
    """List every action of the stack with its scope and risk.

    Plugin actions are listed as registered; the stack's eager environments (MCP servers,
    sandboxes) are started so that their actions are listed too, then stopped.
    """
    import anyio

    async def run() -> tuple[list[dict[str, Any]], list[str]]:
        problems = []
        async with state.runtime() as runtime:
            for name in runtime.environments.names():
                if start_lazy:
                    with contextlib.suppress(KeelError):
                        await runtime.environments.ensure(name)
                env = runtime.environments.status_of(name)
                if env.status == "failed" or (start_lazy and env.status != "ready"):
                    problems.append(f"environment {name!r} is {env.status}: {env.error}; its actions are missing")
            rows = [_describe_action(s, runtime.actions.source(s.name)) for s in runtime.actions.visible(agent)]
        return sorted(rows, key=lambda r: r["name"]), problems

    rows, problems = anyio.run(run)
    for problem in problems:
        click.echo(f"warning: {problem}", err=True)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no actions: plugins register them with keel_actions(), environments (MCP servers...) add theirs")
    for row in rows:
        scope = row["scope"] if isinstance(row["scope"], str) else ", ".join(row["scope"])
        click.echo(f"{row['name']:<32} {row['risk']:<12} {scope:<16} {row['source']}")


def _approver_row(state: CliState) -> dict[str, Any] | None:
    """The stack's ``approver``: its ref, where it was set, and whether it loads (``None``: none named)."""
    from keel.policy import load_approver

    ref = state.stack.config.approver
    if not ref:
        return None
    row = {"ref": ref, "source": state.stack.sources.get("approver", ""), "status": "ok", "note": ""}
    try:
        row["note"] = f"asked for actions that need approval: {type(load_approver(ref, what='approver')).__name__}"
    except KeelError as err:
        row.update(status="error", note=str(err))
    return row


def _named_stack_rows() -> list[dict[str, Any]]:
    """One row per entry point of ``keel.stacks``: each is loaded, so a broken one shows its error."""
    from keel.stack import load_named, stack_entry_points

    rows = []
    for name, eps in sorted(stack_entry_points().items()):
        for ep in eps:
            dist = ep.dist.metadata["Name"] if ep.dist is not None else "unknown"
            row = {"name": name, "distribution": dist, "target": ep.value, "status": "ok", "extends": None, "error": ""}
            if len(eps) > 1:
                others = ", ".join(e.dist.metadata["Name"] for e in eps if e is not ep and e.dist is not None)
                row.update(status="conflict", error=f"{others} ships a stack of the same name; neither is used")
            else:
                try:
                    row["extends"] = load_named(ep).extends
                except KeelError as err:
                    row.update(status="failed", error=str(err))
            rows.append(row)
    return rows


def _describe_action(spec: ActionSpec, source: str) -> dict[str, Any]:
    """One row of ``keel actions --json``."""
    return {
        "name": spec.name,
        "description": spec.description,
        "risk": spec.risk,
        "scope": sorted(spec.visible_to) if spec.visible_to is not None else "every agent",
        "tags": sorted(spec.tags),
        "source": source,
        "timeout": spec.timeout,
        "parameters": json.loads(json.dumps(spec.parameters, default=str)),
    }
