"""The gateway's plugin module (entry point ``gateway``): channels and the ``keel serve`` command.

Cheap to import: FastAPI and uvicorn load only when ``keel serve`` runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import click

import keel
from keel_gateway.channels import channel_specs

if TYPE_CHECKING:
    from keel import ChannelSpec


@keel.hookimpl
def keel_channels() -> Iterable[ChannelSpec]:
    return channel_specs()


@keel.hookimpl
def keel_commands(cli: click.Group) -> None:
    @cli.command("serve")
    @click.option("--host", default="127.0.0.1", show_default=True, help="interface to listen on")
    @click.option("--port", default=8000, show_default=True, type=int)
    @click.option("--log-level", default="info", show_default=True)
    @click.pass_context
    def serve(ctx: click.Context, host: str, port: int, log_level: str) -> None:
        """Serve the stack's runnables over HTTP, SSE and WebSocket (the gateway)."""
        import uvicorn

        from keel_gateway.app import create_app

        root = ctx.find_root()
        state = root.obj
        runtime = keel.Runtime.from_stack(
            root.params.get("stack_file"), name=root.params.get("stack_name"), host=getattr(state, "host", None)
        )
        if not runtime.runnables.names():
            click.echo("warning: the stack lists no runnables (runnables = ['module:agent'] in keel.toml)", err=True)
        uvicorn.run(create_app(runtime), host=host, port=port, log_level=log_level)
