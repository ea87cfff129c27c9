"""``keel env``: the stack's environments (MCP servers, sandboxes, anything with a lifecycle).

Registered by the kernel through ``keel_commands`` (:mod:`keel.builtins`); ``--hold`` and ``stop``
use :mod:`keel.holding`.
"""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING, Any

import anyio
import click

from keel.errors import KeelError

if TYPE_CHECKING:
    from keel.cli import CliState

__all__ = ["env_group"]

_JSON = click.option("--json", "as_json", is_flag=True, help="machine-readable output")


@click.group("env")
def env_group() -> None:
    """Environments of the stack: MCP servers, sandboxes, anything with a lifecycle."""


@env_group.command("list")
@_JSON
@click.pass_obj
def env_list_cmd(state: CliState, as_json: bool) -> None:
    """List declared environments (nothing is started)."""
    _print_envs([s.as_dict() for s in state.runtime().environments.status()], as_json)


@env_group.command("status")
@_JSON
@click.option("--start", "start_all", is_flag=True, help="start lazy environments too before checking")
@click.pass_obj
def env_status_cmd(state: CliState, as_json: bool, start_all: bool) -> None:
    """Start the stack's eager environments, check each one's health, print, stop them."""

    async def run() -> list[dict[str, Any]]:
        async with state.runtime() as runtime:
            for name in runtime.environments.names():
                if start_all:
                    with contextlib.suppress(KeelError):
                        await runtime.environments.ensure(name)
                if runtime.environments.status_of(name).status in ("ready", "unhealthy"):
                    await runtime.environments.check(name)
            return [s.as_dict() for s in runtime.environments.status()]

    _print_envs(anyio.run(run), as_json)


@env_group.command("start")
@click.argument("name")
@click.option("--hold", is_flag=True, help="keep it running (supervised, restarted on failure) until Ctrl-C")
@_JSON
@click.pass_obj
def env_start_cmd(state: CliState, name: str, hold: bool, as_json: bool) -> None:
    """Start one environment and check its health; with --hold, supervise it until Ctrl-C."""
    from keel.holding import hold_until_signalled

    async def run() -> None:
        async with state.runtime() as runtime:
            await runtime.environments.start(name)
            await runtime.environments.check(name)
            _print_envs([runtime.environments.status_of(name).as_dict()], as_json)
            if hold:
                await hold_until_signalled(name)  # then leaving the runtime stops it cleanly

    anyio.run(run)


@env_group.command("stop")
@click.argument("name")
@click.option("--timeout", default=30.0, show_default=True, help="seconds to wait for it to stop")
def env_stop_cmd(name: str, timeout: float) -> None:
    """Stop an environment held by `keel env start NAME --hold` (from this folder)."""
    from keel.holding import stop_held

    stop_held(name, timeout)
    click.echo(f"{name}: stopped")


def _print_envs(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no environments declared: add [environments.<name>] tables to keel.toml")
    for row in rows:
        health = row["last_health"]
        checked = "healthy" if health and health["ok"] else (health["detail"] if health else "not checked")
        click.echo(f"{row['name']:<16} {row['driver']:<10} {row['status']:<10} restarts={row['restarts']} {checked}")
        if row["error"]:
            click.echo(f"    error: {row['error']}")
