"""The desk's worker process: the keel-scheduler worker (tickets' ``desk`` flows), the maintenance
worker (the SLA check) and the scheduler that ticks it, apart from the gateway's process, as in
production (what ``keel worker`` and ``keel scheduler`` run; here one small process for both, built
from the same stack and bound to the desk's store like the gateway's).

    python examples/desk/worker.py --state STATE [--scripted]

``service.open_desk`` starts it once the gateway serves, reads its log through its stdout (one line
per job event; ``ready pid N`` once it claims jobs) and stops it on every exit path. It stops on
SIGTERM or SIGINT, and when its stdin reaches end of file: the desk that started it is gone (even
killed), so it never outlives it.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # desk_service, service

import anyio
from desk_service import bind_refunds, scripted_answer
from service import SLA_SCHEDULE, sla_reminder, webhook_channel, worker_line

import keel
import keel_devtools
from keel.testing import ScriptedModel
from keel_scheduler import Queue, Scheduler, Schedules, Worker


async def run(state: Path, scripted: bool) -> None:
    recorder = keel_devtools.configure(state / "devtools.db")  # the same recording as the gateway's
    runtime = keel.Runtime.from_stack(state / "keel.toml")
    if scripted:
        runtime.use_model(ScriptedModel(scripted_answer, chunks=6))
    bind_refunds(runtime)
    webhook = webhook_channel(runtime)
    runtime.add(sla_reminder(runtime, webhook))
    try:
        async with runtime, Queue(str(state / "scheduler.db")) as queue:
            await Schedules(queue).add(SLA_SCHEDULE, replace=True)
            # tickets' product events go to the webhook channel; the SLA checks' own do not
            worker = Worker(
                queue, runtime, poll_interval=0.1, channels=[webhook], on_event=lambda e: say(worker_line(e))
            )
            maintenance = Worker(queue, runtime, queues=["maintenance"], concurrency=1, poll_interval=0.25)
            scheduler = Scheduler(queue, poll_interval=0.5)
            async with anyio.create_task_group() as tg:
                await tg.start(worker.run)
                await tg.start(maintenance.run)
                tg.start_soon(scheduler.run)
                say(f"ready pid {os.getpid()}")
                await until_told_to_stop()
                scheduler.stop()
                worker.stop()
                maintenance.stop()
                tg.cancel_scope.cancel()
    finally:
        recorder.flush()
        recorder.close()


def say(line: str) -> None:
    print(line, flush=True)


async def until_told_to_stop() -> None:
    """Until SIGTERM or SIGINT, or until stdin ends (the process that started this one is gone)."""
    async with anyio.create_task_group() as tg:

        async def on_signal() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    break
            tg.cancel_scope.cancel()

        async def on_stdin_closed() -> None:
            await anyio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)
            tg.cancel_scope.cancel()

        tg.start_soon(on_signal)
        tg.start_soon(on_stdin_closed)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python examples/desk/worker.py", description=__doc__.split("\n")[0])
    parser.add_argument("--state", required=True, help="the desk's state folder (its keel.toml is there)")
    parser.add_argument("--scripted", action="store_true", help="the scripted test model instead of the local one")
    args = parser.parse_args()
    try:
        anyio.run(run, Path(args.state).resolve(), args.scripted)
    except KeyboardInterrupt:  # a second Ctrl-C while stopping
        sys.exit(130)
