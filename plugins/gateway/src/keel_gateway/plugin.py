"""The gateway's plugin module (entry point ``gateway``): channels and the ``keel serve`` command.

Cheap to import: FastAPI and uvicorn load only when ``keel serve`` runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import click

import keel
from keel_gateway.channels import channel_specs

if TYPE_CHECKING:
    from keel import ChannelSpec


@keel.hookimpl
def keel_channels() -> Iterable[ChannelSpec]:
    return channel_specs()


@keel.hookimpl
def keel_doctor_checks() -> list[keel.DoctorCheck]:
    from keel_gateway.doctor import doctor_checks  # imported when doctor runs, not at discovery

    return doctor_checks()


@keel.hookimpl
def keel_commands(cli: click.Group) -> None:
    @cli.command("serve")
    @click.option("--host", default="127.0.0.1", show_default=True, help="interface to listen on")
    @click.option("--port", default=8000, show_default=True, type=int)
    @click.option("--log-level", default="info", show_default=True)
    @click.option(
        "--insecure", is_flag=True,
        help="serve with no credentials configured on a non-loopback address (only behind something that authenticates)",
    )  # fmt: skip
    @click.option(
        "--grace", default=10.0, show_default=True, type=click.FloatRange(min=0),
        help="on SIGTERM, seconds running executions get to reach a wait or their end (the rest resume later)",
    )  # fmt: skip
    @click.pass_context
    def serve(ctx: click.Context, host: str, port: int, log_level: str, insecure: bool, grace: float) -> None:
        """Serve the stack's runnables over HTTP, SSE and WebSocket (the gateway).

        On SIGTERM or SIGINT it stops accepting connections, lets running executions reach a wait
        or their end within --grace seconds, leaves the rest resumable in the store, and exits 0."""
        from keel.credentials import check_bind
        from keel_gateway.settings import GatewaySettings

        root = ctx.find_root()
        state = root.obj
        runtime = keel.Runtime.from_stack(
            root.params.get("stack_file"), name=root.params.get("stack_name"), host=getattr(state, "host", None)
        )
        settings = GatewaySettings.model_validate(runtime.stack.settings("gateway"))
        try:
            warning = check_bind(settings, host, insecure=insecure, server="gateway")
        except keel.KeelError as err:
            raise click.UsageError(str(err)) from None
        if warning:
            click.secho(warning, err=True, fg="red", bold=True)

        from keel_gateway.app import create_app

        if not runtime.runnables.names():
            click.echo("warning: the stack lists no runnables (runnables = ['module:agent'] in keel.toml)", err=True)
        runtime.shutdown_grace = grace
        app = create_app(runtime, settings, adopt=True)
        _run_server(app, host=host, port=port, log_level=log_level, grace=grace)


def _run_server(app: Any, *, host: str, port: int, log_level: str, grace: float) -> None:
    """Serve until SIGTERM/SIGINT; a graceful stop exits 0."""
    import uvicorn

    config = uvicorn.Config(
        app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=max(1, round(grace))
    )
    _server_class()(config).run()


def _server_class() -> Any:
    """Built on first use: uvicorn loads only when `keel serve` runs."""
    import contextlib

    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, except that a graceful stop on SIGTERM/SIGINT exits 0 (uvicorn re-raises
        the signal after shutting down, which makes the exit status 'killed by SIGTERM'), and that
        SSE and WebSocket followers get a "reconnect" event before uvicorn closes their connections."""

        @contextlib.contextmanager
        def capture_signals(self) -> Any:
            with super().capture_signals():
                yield
                self._captured_signals.clear()

        async def shutdown(self, sockets: Any = None) -> None:
            for server in self.servers:
                server.close()  # no new connections while the followers are told to reconnect
            gateway = getattr(getattr(self.config.app, "state", None), "gateway", None)
            if gateway is not None:
                await gateway.drain(timeout=2.0)
            await super().shutdown(sockets)

    return Server
