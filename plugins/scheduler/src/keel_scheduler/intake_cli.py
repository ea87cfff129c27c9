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
    """Serve POST /hooks/<source>: verify, record once, enqueue, answer 202. Never runs the work."""
    options = settings()
    if not options.sources:
        raise SchedulerError(
            "keel intake: no webhook sources; add [settings.scheduler.sources.<name>] with task and secret_env"
        )
    try:
        import uvicorn
    except ImportError as err:
        raise SchedulerError("keel intake needs uvicorn: pip install 'keel-scheduler[intake]'") from err

    async def serve() -> None:
        async with open_queue(options) as queue:
            intake = Intake(queue, options.sources)
            click.echo(f"intake on http://{host}:{port}/hooks/<source>: {', '.join(sorted(intake.sources))}")
            server = uvicorn.Server(uvicorn.Config(intake.asgi(), host=host, port=port, log_level=log_level))
            await server.serve()

    anyio.run(serve)
