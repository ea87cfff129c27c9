"""``keel worker --runner temporal``: a process that runs the stack's flows on a Temporal task queue.

It loads the stack's ``runnables`` (the flows whose chunks it runs), connects to ``[runner]
address``, polls ``task_queue`` until SIGTERM or SIGINT, then shuts its worker down and exits 0.
Start as many as the load needs, on any machine: Temporal hands each workflow task and each chunk
to one of them, and hands a dead worker's work to another.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import anyio
import click

from keel import Runtime, load_ref
from keel_runner_temporal.activities import is_flow

__all__ = ["worker"]


def _import(target: str) -> Any:
    if str(Path.cwd()) not in sys.path and "" not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # the stack's folder, as `keel serve` run there sees it
    return load_ref(target, what="runnables entry")


@click.command("worker")
@click.option(
    "--runner",
    "runner_name",
    default=None,
    help="the runner to serve; must be the stack's (default: the stack's runner line)",
)
@click.pass_context
def worker(ctx: click.Context, runner_name: str | None) -> None:
    """Run a Temporal worker for the stack's flows until SIGTERM or Ctrl-C."""
    state = ctx.find_root().obj
    choice = state.stack.choice("runner")
    wanted = runner_name or choice.name
    if wanted != "temporal":
        raise click.UsageError(
            f"keel worker serves the temporal runner, and {'--runner says' if runner_name else 'the stack says'} "
            f"{wanted!r}: the local runner needs no worker process (its executions run in the process that starts "
            "them, `keel serve`)"
        )
    if choice.name != "temporal":
        raise click.UsageError(
            f"the stack's runner is {choice.name!r} ({choice.source}), so it names no Temporal server: set "
            '[runner] driver = "temporal", address = "host:7233", task_queue = "..." in keel.toml'
        )
    runtime = Runtime(state.host, state.stack)
    for target in state.stack.config.runnables:
        runtime.runnables.add(_import(target))
    flows = [r for r in runtime.runnables if is_flow(r)]
    if not flows:
        raise click.UsageError(
            "the stack lists no flows to serve: add them to runnables in keel.toml "
            '(runnables = ["myapp.flows:orders"]): TriggerFlow flows, built in Python or loaded from data'
        )
    anyio.run(_serve, runtime, choice.options, flows)
    # The worker is shut down and every chunk it held is handed back. Leave without interpreter
    # teardown: temporalio's Rust threads can still take the GIL while CPython finalizes, which
    # aborts the process (SIGABRT, "PyGILState_Release ... finalizing"; temporalio/sdk-python#300),
    # turning a clean stop into exit -6. Nothing is left to flush but stdio.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


async def _serve(runtime: Runtime, options: dict[str, Any], flows: list[Any]) -> None:
    from keel_runner_temporal.plugin import create_runner

    async with runtime:
        runner = create_runner(runtime, dict(options))
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            await runner.serve(flows)
            names = ", ".join(sorted(f.name for f in flows))
            click.echo(
                f"worker on {runner.options.address} (namespace {runner.options.namespace!r}), "
                f"task queue {runner.options.task_queue!r}, serving {names}",
                err=True,
            )
            async for received in signals:
                click.echo(f"{signal.Signals(received).name}: shutting the worker down", err=True)
                break
