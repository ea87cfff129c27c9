"""``keel intake``: serve the stack's webhook sources (``[settings.scheduler.sources.<name>]``)."""

from __future__ import annotations

import anyio
import click

from keel_scheduler.cli import open_queue, settings
from keel_scheduler.errors import SchedulerError
from keel_scheduler.intake import Intake

__all__ = ["intake_cmd"]


@click.command("intake")
@click.option("--host", default="127.0.0.1", show_default=True, help="interface to listen on")
@click.option("--port", default=8090, show_default=True, type=int)
@click.option("--log-level", default="info", show_default=True)
def intake_cmd(host: str, port: int, log_level: str) -> None:
    """Serve POST /hooks/<source> and the broker sources: verify, record once, enqueue. Never runs the work."""
    options = settings()
    if not options.sources and not options.brokers:
        raise SchedulerError(
            "keel intake: nothing to serve; add [settings.scheduler.sources.<name>] (webhooks: task, secret_env) "
            "or [settings.scheduler.brokers.<name>] (driver, task, and the broker's options)"
        )
    host_plugins = click.get_current_context().find_root().obj.host

    async def serve() -> None:
        from keel_scheduler.brokers import run_brokers

        async with open_queue(options) as queue, anyio.create_task_group() as tg:
            if options.brokers:
                click.echo(f"intake: broker sources {', '.join(sorted(options.brokers))}")
                tg.start_soon(run_brokers, queue, host_plugins, options.brokers)
            if options.sources:
                try:
                    import uvicorn
                except ImportError as err:
                    raise SchedulerError(
                        "keel intake needs uvicorn for webhooks: pip install 'keel-scheduler[intake]'"
                    ) from err
                intake = Intake(queue, options.sources)
                click.echo(f"intake on http://{host}:{port}/hooks/<source>: {', '.join(sorted(intake.sources))}")
                server = uvicorn.Server(uvicorn.Config(intake.asgi(), host=host, port=port, log_level=log_level))
                await server.serve()
                tg.cancel_scope.cancel()

    anyio.run(serve)
