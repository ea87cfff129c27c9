"""The ``mcp`` plugin's entry module: descriptors only, cheap to import (``mcp`` loads on first use)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import keel

if TYPE_CHECKING:
    import click

__all__ = ["keel_commands", "keel_environments"]


def _factory(options: dict[str, Any]) -> keel.Environment:
    from keel_mcp.client import McpServerEnvironment
    from keel_mcp.options import parse

    return McpServerEnvironment(parse(options))


@keel.hookimpl
def keel_environments() -> list[keel.EnvironmentSpec]:
    from keel_mcp.options import McpServerOptions  # cheap: pydantic only

    return [
        keel.EnvironmentSpec(
            name="mcp",
            kind="mcp-server",
            description="an MCP server over stdio (command = [...]) or streamable HTTP (url = ...); its tools are actions",
            permissions=keel.Permissions(network=True),
            restart=keel.RestartPolicy(mode="on-failure", max_restarts=5, backoff_seconds=0.5),
            factory=_factory,
            options=McpServerOptions,  # `keel stack` checks each [environments.<name>] table, naming the key
        )
    ]


@keel.hookimpl
def keel_commands(cli: click.Group) -> None:
    from keel_mcp.commands import add_commands

    add_commands(cli)
