"""``keel schedule add|ls|show|pause|resume|rm|trigger|backfill`` and ``keel scheduler``."""

from __future__ import annotations

import datetime as dt
import json
import signal
import sys
from pathlib import Path
from typing import Any

import anyio
import click

import keel
from keel_scheduler.cli import _Live, emit, open_queue, settings, when
from keel_scheduler.engines import schedule_engine
from keel_scheduler.schedules import OVERLAP, Scheduler, Schedules, ScheduleState

__all__ = ["schedule_group", "scheduler_cmd"]


def _with_schedules(fn: Any) -> Any:
    """Run ``fn`` on the stack's schedules: keel-scheduler's tables, or the engine a plugin keeps them
    in (``keel_scheduler_schedules``: Temporal Schedules on a stack whose runner is temporal)."""

    async def run() -> Any:
        runtime = _stack_runtime()
        engine = schedule_engine(runtime)
        if engine is None:
            async with open_queue() as queue:
                return await fn(Schedules(queue))
        for target in runtime.stack.config.runnables:  # the engine starts the runnables it names
            runtime.runnables.add(_import(target))
        async with runtime:
            return await fn(engine)

    return anyio.run(run)


def _stack_runtime() -> keel.Runtime:
    state = click.get_current_context().find_root().obj
    return keel.Runtime(state.host, state.stack)


def _import(target: str) -> Any:
    if str(Path.cwd()) not in sys.path and "" not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # the stack's folder, as `keel serve` run there sees it
    return keel.load_ref(target, what="runnables entry")


def _show(state: ScheduleState, as_json: bool) -> None:
    if as_json:
        emit({**state.summary(), "spec": state.schedule.model_dump(mode="json")})
        return
    s = state.summary()
    remaining = "" if s["remaining"] is None else f" remaining={s['remaining']}"
    remaining += f" skipped={s['skipped']}" if "skipped" in s else ""
    status = "paused" if s["paused"] else "active"
    click.echo(
        f"{s['id']:<20} {s['task']:<16} {s['when']:<18} {s['timezone']:<14} {status:<7} runs={s['runs']}{remaining} "
        f"last={when(s['last_fire'])} next={when(s['next_fire'])}"
    )


def _parse_time(value: str, option: str) -> float:
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO date-time (2026-03-29T02:30)", param_hint=option) from None
    return (moment if moment.tzinfo else moment.astimezone()).timestamp()


@click.group("schedule")
def schedule_group() -> None:
    """Schedules: cron (with seconds), intervals and calendars that enqueue a runnable."""


@schedule_group.command("add")
@click.argument("schedule_id")
@click.option("--task", required=True, help="the runnable each tick enqueues")
@click.option("--cron", default=None, help="5 fields, or 6 with seconds first")
@click.option("--every", type=float, default=None, help="an interval, in seconds")
@click.option("--at", "at", multiple=True, help="a calendar time (ISO); repeat for more")
@click.option("--timezone", default="UTC", show_default=True)
@click.option("--input", "input_json", default="null", help="each run's input, as JSON")
@click.option("--queue", "queue_name", default="default", show_default=True)
@click.option("--jitter", type=float, default=0.0, show_default=True)
@click.option("--start", default=None)
@click.option("--end", default=None)
@click.option("--skip-date", "skip_dates", multiple=True, help="a local date (YYYY-MM-DD) with no run")
@click.option("--max-runs", type=int, default=None)
@click.option("--overlap", type=click.Choice(OVERLAP), default="skip", show_default=True)
@click.option("--catchup-window", type=float, default=60.0, show_default=True, help="seconds")
@click.option("--pause-after-failures", type=int, default=None)
@click.option("--max-attempts", type=int, default=3, show_default=True)
@click.option("--replace", is_flag=True, help="replace a schedule with this id")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def schedule_add(
    schedule_id: str, input_json: str, queue_name: str, replace: bool, as_json: bool, **fields: Any
) -> None:
    """Add a schedule (exactly one of --cron, --every, --at)."""
    try:
        payload = json.loads(input_json)
    except json.JSONDecodeError as err:
        raise click.BadParameter(f"not JSON: {err}", param_hint="--input") from None
    spec = {k: v for k, v in fields.items() if v not in (None, ())}
    spec.update(id=schedule_id, input=payload, queue=queue_name)
    if "at" in spec:
        spec["at"] = list(spec["at"])
    if "skip_dates" in spec:
        spec["skip_dates"] = list(spec["skip_dates"])
    state = _with_schedules(lambda s: s.add(spec, replace=replace))
    _show(state, as_json)


@schedule_group.command("ls")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def schedule_ls(as_json: bool) -> None:
    """List schedules with their state."""
    states = _with_schedules(lambda s: s.list())
    if as_json:
        emit([s.summary() for s in states])
        return
    if not states:
        click.echo("no schedules: keel schedule add ID --task T --cron '...'")
    for state in states:
        _show(state, False)


@schedule_group.command("show")
@click.argument("schedule_id")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def schedule_show(schedule_id: str, as_json: bool) -> None:
    """Show a schedule: its spec and state."""
    state = _with_schedules(lambda s: s.get(schedule_id))
    if as_json:
        _show(state, True)
        return
    for key, value in state.summary().items():
        click.echo(f"{key:<12} {when(value) if key.endswith('_fire') else value}")
    click.echo(f"{'spec':<12} {state.schedule.model_dump_json(exclude_defaults=True)}")


for name, doc in (("pause", "Pause a schedule."), ("resume", "Resume a schedule (its failure count restarts).")):

    @schedule_group.command(name, help=doc)
    @click.argument("schedule_id")
    @click.option("--json", "as_json", is_flag=True, help="machine-readable output")
    def toggle(schedule_id: str, as_json: bool, _name: str = name) -> None:
        state = _with_schedules(lambda s: getattr(s, _name)(schedule_id))
        _show(state, as_json)


@schedule_group.command("rm")
@click.argument("schedule_id")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def schedule_rm(schedule_id: str, as_json: bool) -> None:
    """Remove a schedule (its jobs stay in the queue)."""
    _with_schedules(lambda s: s.remove(schedule_id))
    emit({"removed": schedule_id}) if as_json else click.echo(f"removed {schedule_id}")


@schedule_group.command("trigger")
@click.argument("schedule_id")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def schedule_trigger(schedule_id: str, as_json: bool) -> None:
    """Enqueue one run now, outside the timetable."""
    job = _with_schedules(lambda s: s.trigger(schedule_id))
    if isinstance(job, dict):  # an engine that fires the schedule itself: it says what it did
        emit(job) if as_json else click.echo(f"triggered {schedule_id} ({job.get('on', 'its engine')} starts the run)")
        return
    emit(job.summary()) if as_json else click.echo(job.id)


@schedule_group.command("backfill")
@click.argument("schedule_id")
@click.option("--start", required=True, help="ISO date-time; ticks after it")
@click.option("--end", default=None, help="ISO date-time; ticks up to it (default: now)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def schedule_backfill(schedule_id: str, start: str, end: str | None, as_json: bool) -> None:
    """Enqueue every tick between --start and --end that has no job yet."""
    lo = _parse_time(start, "--start")
    hi = _parse_time(end, "--end") if end else dt.datetime.now().timestamp()
    jobs = _with_schedules(lambda s: s.backfill(schedule_id, lo, hi))
    if isinstance(jobs, dict):  # an engine that fires the schedule itself starts the ticks
        emit(jobs) if as_json else click.echo(f"backfill of {schedule_id} handed to {jobs.get('on', 'its engine')}")
        return
    if as_json:
        emit([j.summary() for j in jobs])
    else:
        click.echo(f"backfilled {len(jobs)} tick(s)")


@click.command("scheduler")
@click.option("--json", "as_json", is_flag=True, help="one JSON line per fired tick")
def scheduler_cmd(as_json: bool) -> None:
    """Turn schedules into due jobs until Ctrl-C (run several: no tick fires twice)."""
    engine = schedule_engine(_stack_runtime())
    if engine is not None:
        raise click.UsageError(
            f"this stack's schedules are kept and fired by {engine.where}: there is nothing for keel scheduler "
            "to tick (keel schedule ls lists them)"
        )
    options = settings()
    live = _Live(as_json)

    async def run() -> None:
        async with open_queue(options) as queue:
            scheduler = Scheduler(queue)
            live.note(f"scheduler on {queue.db.where}")
            async with anyio.create_task_group() as tg:

                async def stop_on_signal() -> None:
                    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                        async for _ in signals:
                            scheduler.stop()
                            tg.cancel_scope.cancel()
                            break

                tg.start_soon(stop_on_signal)
                await scheduler.run(on_fire=lambda job: live.event("fired", job, f"for {when(job.scheduled_for)}"))
                tg.cancel_scope.cancel()
        live.close()

    anyio.run(run)
