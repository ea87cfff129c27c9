"""``keel queue`` and ``keel worker`` (``keel schedule`` and ``keel scheduler`` are in
schedules_cli.py, ``keel intake`` in intake_cli.py). Every listing takes ``--json``."""

from __future__ import annotations

import datetime as dt
import json
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import click

import keel
from keel_scheduler.jobs import FINISHED, Job
from keel_scheduler.queue import Queue
from keel_scheduler.settings import SchedulerSettings, load_settings

__all__ = ["queue_group", "worker_cmd"]

T = TypeVar("T")


def settings() -> SchedulerSettings:
    state = click.get_current_context().find_root().obj
    return load_settings(state.stack.config.settings.get("scheduler"))


def open_queue(options: SchedulerSettings | None = None) -> Queue:
    from keel_scheduler._db import open_database

    options = options or settings()
    return Queue(open_database(options.database, schema=options.schema_name))


def with_queue(fn: Callable[[Queue], Awaitable[T]]) -> T:
    async def run() -> T:
        async with open_queue() as queue:
            return await fn(queue)

    return anyio.run(run)


def when(stamp: float | None) -> str:
    if stamp is None:
        return "-"
    return dt.datetime.fromtimestamp(stamp).isoformat(sep=" ", timespec="seconds")


def emit(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def stack_runtime() -> keel.Runtime:
    root = click.get_current_context().find_root()
    return keel.Runtime.from_stack(
        root.params.get("stack_file"), name=root.params.get("stack_name"), host=getattr(root.obj, "host", None)
    )


def build_channels(runtime: keel.Runtime, options: SchedulerSettings) -> list[keel.Channel]:
    """The push channels the stack lists (``channels = [...]``), with ``[settings.scheduler.channels.X]``."""
    registered = runtime.host.channels()
    out = []
    for name in runtime.stack.config.channels or []:
        if name not in registered:
            raise keel.DriverNotFoundError("channel", name, registered, "channels = [...]")
        out.append(registered[name].spec.factory(dict(options.channels.get(name, {}))))
    return out


@click.group("queue")
def queue_group() -> None:
    """The durable queue: list, inspect, retry, cancel and purge jobs."""


@queue_group.command("ls")
@click.option("--status", multiple=True, help="only these statuses (queued, running, completed, failed, cancelled)")
@click.option("--queue", "queue_name", default=None, help="only this queue")
@click.option("--schedule", default=None, help="only the jobs of this schedule")
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def queue_ls(status: tuple[str, ...], queue_name: str | None, schedule: str | None, limit: int, as_json: bool) -> None:
    """List jobs, newest first."""
    jobs: list[Job] = with_queue(
        lambda q: q.list(status=list(status) or None, queue=queue_name, schedule_id=schedule, limit=limit)
    )
    if as_json:
        emit([j.summary() for j in jobs])
        return
    if not jobs:
        click.echo("no jobs")
    for j in jobs:
        error = f"  {j.last_error[:60]}" if j.last_error and j.status != "completed" else ""
        click.echo(
            f"{j.id:<36} {j.queue:<10} {j.task:<18} {j.status.value:<9} {j.attempts}/{j.max_attempts} "
            f"{when(j.run_at)}{error}"
        )


@queue_group.command("show")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def queue_show(job_id: str, as_json: bool) -> None:
    """Show one job: its input, attempts, every error and its result."""
    job = with_queue(lambda q: q.get(job_id))
    if as_json:
        emit(job.model_dump(mode="json"))
        return
    for key in ("id", "queue", "task", "status", "attempts", "max_attempts", "priority", "dedup_key",
                "concurrency_key", "correlation_id", "schedule_id", "lease_owner"):  # fmt: skip
        value = getattr(job, key)
        click.echo(f"{key:<16} {value.value if hasattr(value, 'value') else value}")
    for key in ("run_at", "created_at", "started_at", "finished_at", "lease_until"):
        click.echo(f"{key:<16} {when(getattr(job, key))}")
    click.echo(f"{'input':<16} {json.dumps(job.input)}")
    click.echo(f"{'result':<16} {json.dumps(job.result)}")
    for error in job.errors:
        click.echo(f"  attempt {error['attempt']} ({when(error['at'])}, {error['worker']}): {error['error']}")


@queue_group.command("retry")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def queue_retry(job_id: str, as_json: bool) -> None:
    """Queue a failed (dead-lettered) or cancelled job again with fresh attempts."""
    job = with_queue(lambda q: q.retry(job_id))
    emit(job.summary()) if as_json else click.echo(f"{job.id}: queued again")


@queue_group.command("cancel")
@click.argument("job_id")
@click.option("--reason", default="cancelled from the command line", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def queue_cancel(job_id: str, reason: str, as_json: bool) -> None:
    """Cancel a queued or running job (a running one stops at its worker's next renewal)."""
    job = with_queue(lambda q: q.cancel(job_id, reason))
    emit(job.summary()) if as_json else click.echo(f"{job.id}: {job.status.value}")


@queue_group.command("purge")
@click.option("--status", multiple=True, default=FINISHED, show_default=True)
@click.option("--older-than", default=0.0, show_default=True, help="seconds since the job finished")
@click.option("--queue", "queue_name", default=None)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def queue_purge(status: tuple[str, ...], older_than: float, queue_name: str | None, as_json: bool) -> None:
    """Delete finished jobs (their dedup keys become free again)."""
    n = with_queue(lambda q: q.purge(status=status, older_than=older_than, queue=queue_name))
    emit({"purged": n}) if as_json else click.echo(f"purged {n} job(s)")


@queue_group.command("add")
@click.argument("task")
@click.option("--input", "input_json", default="null", help="the job's input, as JSON")
@click.option("--queue", "queue_name", default="default", show_default=True)
@click.option("--dedup-key", default=None)
@click.option("--reject-duplicate", is_flag=True, help="fail when the dedup key is taken")
@click.option("--delay", default=0.0, show_default=True, help="seconds")
@click.option("--priority", default=0, show_default=True)
@click.option("--max-attempts", default=3, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def queue_add(
    task: str, input_json: str, queue_name: str, dedup_key: str | None, reject_duplicate: bool, delay: float,
    priority: int, max_attempts: int, as_json: bool,
) -> None:  # fmt: skip
    """Enqueue a job for the runnable TASK."""
    try:
        payload = json.loads(input_json)
    except json.JSONDecodeError as err:
        raise click.BadParameter(f"not JSON: {err}", param_hint="--input") from None
    job = with_queue(
        lambda q: q.enqueue(
            task,
            payload,
            queue=queue_name,
            dedup_key=dedup_key,
            delay=delay,
            priority=priority,
            max_attempts=max_attempts,
            on_duplicate="reject" if reject_duplicate else "return",
        )
    )
    emit(job.summary()) if as_json else click.echo(job.id)


@click.command("worker")
@click.option("--queue", "queues", multiple=True, help="queues to serve (default: [settings.scheduler] queues)")
@click.option("--concurrency", type=int, default=None, help="jobs at once in this process")
@click.option("--lease", type=float, default=None, help="seconds a claim lasts without renewal")
@click.option("--drain", is_flag=True, help="stop once nothing is due and nothing runs")
@click.option("--json", "as_json", is_flag=True, help="one JSON line per event")
def worker_cmd(
    queues: tuple[str, ...], concurrency: int | None, lease: float | None, drain: bool, as_json: bool
) -> None:
    """Claim and run jobs with the stack's runnables until Ctrl-C or SIGTERM."""
    from keel_scheduler.worker import Worker, WorkerEvent

    options = settings()
    runtime = stack_runtime()
    live = _Live(as_json)

    def on_event(event: WorkerEvent) -> None:
        live.event(event.kind, event.job, event.detail)

    async def run() -> None:
        async with runtime, open_queue(options) as queue:
            worker = Worker(
                queue, runtime, queues=list(queues) or options.queues,
                concurrency=concurrency or options.concurrency, lease=lease or options.lease,
                poll_interval=options.poll_interval, queue_limits=options.queue_limits, rate_limits=options.rate_limits,
                channels=build_channels(runtime, options), on_event=on_event,
            )  # fmt: skip
            live.note(f"worker {worker.id}: queues {', '.join(worker.queues)}, runnables {runtime.runnables.names()}")
            async with anyio.create_task_group() as tg:

                async def stop_on_signal() -> None:
                    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                        async for _ in signals:
                            live.note("stopping: finishing the running jobs (again to abort)")
                            worker.stop()
                            break

                tg.start_soon(stop_on_signal)
                await worker.run(drain=drain)
                tg.cancel_scope.cancel()
            live.close()

    anyio.run(run)


class _Live:
    """What ``keel worker`` and ``keel scheduler`` print: on a TTY a live line per running task
    (rich), otherwise one line per event; ``--json``: one JSON object per line."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.rows: dict[str, str] = {}
        self._live: Any = None
        if not as_json and sys.stdout.isatty():
            from rich.live import Live

            self._live = Live(self._render(), refresh_per_second=8, transient=False)
            self._live.start()

    def _render(self) -> Any:
        from rich.table import Table

        table = Table(box=None, show_header=False)
        for job_id, line in list(self.rows.items())[-20:]:
            table.add_row(job_id, line)
        return table

    def note(self, text: str) -> None:
        if self.as_json:
            click.echo(json.dumps({"event": "note", "message": text}))
        elif self._live is not None:
            self._live.console.print(text)
        else:
            click.echo(text)

    def event(self, kind: str, job: Job, detail: str = "") -> None:
        if self.as_json:
            click.echo(json.dumps({"event": kind, "job": job.id, "task": job.task, "queue": job.queue,
                                   "attempt": job.attempts, "detail": detail}))  # fmt: skip
            return
        line = f"{job.task:<18} {kind:<9} attempt {job.attempts}/{job.max_attempts} {detail}".rstrip()
        if self._live is None:
            click.echo(f"{job.id}  {line}")
            return
        if kind in ("claimed", "signal"):
            self.rows[job.id] = line
        else:
            self.rows.pop(job.id, None)
            self._live.console.print(f"{job.id}  {line}")
        self._live.update(self._render())

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
