"""keel-scheduler's schedules as Temporal Schedules, on a stack whose runner is ``temporal``.

keel-scheduler asks its own hook ``keel_scheduler_schedules(runtime)`` who keeps the stack's
schedules; this plugin answers with :class:`TemporalSchedules` when the runner line says
``temporal`` (``plugin.py``). ``keel schedule add|ls|show|pause|resume|rm|trigger|backfill`` then
create and read Temporal Schedules, and Temporal fires them: no ``keel scheduler`` process, and the
runs are executions of the flow like any other (``keel flow ls|show``), taken by the stack's
workers (``keel worker --runner temporal``). The two plugins share data only: a schedule arrives
as keel-scheduler's validated spec (a dict), and leaves as its state (a dict).

Each schedule keeps its keel spec in the Temporal Schedule's memo (``keel_schedule``), so listing
shows it as it was given; a Temporal Schedule without that memo, or of another task queue, is not
this stack's and is never listed or touched.
"""

from __future__ import annotations

import builtins
import datetime as dt
from collections.abc import Mapping
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

from keel import ConflictError, NotFoundError
from keel_runner_temporal.activities import is_flow
from keel_runner_temporal.errors import TemporalRunnerError

__all__ = ["SCHEDULE_MEMO", "TemporalSchedules"]

#: the memo key of a Temporal Schedule made from a keel schedule: its spec and its task queue
SCHEDULE_MEMO = "keel_schedule"
_DOCS = "docs/scale-out.md#schedules-are-temporal-schedules"
#: Temporal runs no catch-up window shorter than this (a shorter one would read as its default, a year)
_MIN_CATCHUP = 10.0


class TemporalSchedules:
    """The stack's schedules, kept and fired by Temporal (what ``keel schedule ...`` reaches)."""

    def __init__(self, runner: Any):
        self.runner = runner
        options = runner.options
        self.where = (
            f"Temporal at {options.address} (namespace {options.namespace!r}, task queue {options.task_queue!r}); "
            "its workers are `keel worker --runner temporal`"
        )

    # ----------------------------------------------------------------------------- commands
    async def add(self, spec: Mapping[str, Any], *, replace: bool = False) -> dict[str, Any]:
        """Create the Temporal Schedule of a validated keel schedule (``replace``: delete and recreate)."""
        from temporalio.client import ScheduleAlreadyRunningError

        schedule = await self._schedule(spec)
        client = await self.runner.client()
        memo = {SCHEDULE_MEMO: {"spec": dict(spec), "task_queue": self.runner.options.task_queue}}
        if replace:
            try:
                await self._handle(spec["id"])
                await client.get_schedule_handle(spec["id"]).delete()
            except NotFoundError:
                pass
        try:
            await client.create_schedule(spec["id"], schedule, memo=memo)
        except ScheduleAlreadyRunningError:
            raise ConflictError(
                f"schedule {spec['id']!r} exists on Temporal; remove it first (keel schedule rm) or add it with --replace"
            ) from None
        return await self.get(spec["id"])

    async def get(self, schedule_id: str) -> dict[str, Any]:
        described = await (await self._handle(schedule_id)).describe()
        return await self._state(described)

    async def list(self) -> builtins.list[dict[str, Any]]:
        """This stack's schedules (its task queue), by id. Temporal's visibility store answers, so a
        schedule added a moment ago may show a moment later."""
        client = await self.runner.client()
        ids = []
        async for listed in await client.list_schedules():
            if self._ours(await listed.memo()):
                ids.append(listed.id)
        states = []
        for schedule_id in sorted(ids):
            try:
                states.append(await self.get(schedule_id))
            except NotFoundError:
                continue  # removed since it was listed
        return states

    async def pause(self, schedule_id: str) -> dict[str, Any]:
        await (await self._handle(schedule_id)).pause(note="paused by keel schedule pause")
        return await self.get(schedule_id)

    async def resume(self, schedule_id: str) -> dict[str, Any]:
        await (await self._handle(schedule_id)).unpause(note="resumed by keel schedule resume")
        return await self.get(schedule_id)

    async def remove(self, schedule_id: str) -> None:
        """Delete the Temporal Schedule (the executions it started stay)."""
        await (await self._handle(schedule_id)).delete()

    async def trigger(self, schedule_id: str) -> dict[str, Any]:
        """Start one run now, outside the timetable, whatever the overlap policy."""
        from temporalio.client import ScheduleOverlapPolicy

        await (await self._handle(schedule_id)).trigger(overlap=ScheduleOverlapPolicy.ALLOW_ALL)
        return {"schedule": schedule_id, "triggered": True, "on": "temporal"}

    async def backfill(self, schedule_id: str, start: float, end: float) -> dict[str, Any]:
        """Have Temporal start every tick in ``[start, end]``, whatever the catch-up window."""
        from temporalio.client import ScheduleBackfill, ScheduleOverlapPolicy

        handle = await self._handle(schedule_id)
        await handle.backfill(
            ScheduleBackfill(
                start_at=dt.datetime.fromtimestamp(start, dt.UTC),
                end_at=dt.datetime.fromtimestamp(end, dt.UTC),
                overlap=ScheduleOverlapPolicy.ALLOW_ALL,
            )
        )
        return {"schedule": schedule_id, "backfill": [start, end], "on": "temporal"}

    # ------------------------------------------------------------------------------ mapping
    async def _schedule(self, spec: Mapping[str, Any]) -> Any:
        """The Temporal Schedule of a keel schedule; what Temporal cannot do as keel says is refused."""
        from temporalio.client import (
            Schedule,
            ScheduleActionStartWorkflow,
            ScheduleOverlapPolicy,
            SchedulePolicy,
            ScheduleState,
        )

        from keel_runner_temporal._workflow import MEMO_KEY, WORKFLOW

        name = spec["id"]
        problems = []
        if spec.get("queue", "default") != "default":
            problems.append(
                f"queue {spec['queue']!r}: runs go to the runner's task queue "
                f"({self.runner.options.task_queue!r}; [runner] task_queue), not to a keel queue"
            )
        if (spec.get("pause_after_failures") or 1) > 1:
            problems.append(
                f"pause_after_failures = {spec['pause_after_failures']}: Temporal pauses a schedule after the "
                "first failed run only (pause_after_failures = 1)"
            )
        if problems:
            raise TemporalRunnerError(
                f"schedule {name!r} cannot be a Temporal Schedule as given: {'; '.join(problems)} (see {_DOCS})"
            )
        flow = self._flow(name, spec["task"])
        job = await self.runner._job(flow, spec.get("input"), "default", serve=False)
        action = ScheduleActionStartWorkflow(
            WORKFLOW, job, id=name, task_queue=self.runner.options.task_queue,
            memo={MEMO_KEY: {"flow": flow.name, "tenant": "default"}},
        )  # fmt: skip
        policy = SchedulePolicy(
            overlap=ScheduleOverlapPolicy[str(spec.get("overlap", "skip")).upper()],
            catchup_window=timedelta(seconds=max(float(spec.get("catchup_window", 60.0)), _MIN_CATCHUP)),
            pause_on_failure=spec.get("pause_after_failures") == 1,
        )
        max_runs = spec.get("max_runs")
        state = ScheduleState(limited_actions=max_runs is not None, remaining_actions=max_runs or 0)
        return Schedule(action=action, spec=_spec(spec), policy=policy, state=state)

    def _flow(self, schedule_id: str, task: str) -> Any:
        runnables = self.runner.runtime.runnables
        if task not in runnables:
            names = runnables.names()
            raise TemporalRunnerError(
                f"schedule {schedule_id!r}: the stack has no runnable {task!r} (it has: {', '.join(names) or 'none'}); "
                'list the flow in keel.toml: runnables = ["myapp.flows:nightly"]'
            )
        flow = runnables.get(task)
        if not is_flow(flow):
            raise TemporalRunnerError(
                f'schedule {schedule_id!r}: {task!r} is not a flow, and on runner = "temporal" a schedule is a '
                "Temporal Schedule that starts a flow's workflow; make the task a step of a flow "
                f"(TriggerFlow({task!r}).to(...)) or schedule it on a stack with the local runner (see {_DOCS})"
            )
        return flow

    def _ours(self, memo: Mapping[str, Any]) -> bool:
        keel = memo.get(SCHEDULE_MEMO)
        return isinstance(keel, dict) and keel.get("task_queue") == self.runner.options.task_queue

    async def _handle(self, schedule_id: str) -> Any:
        """The handle of this stack's schedule ``schedule_id``; NotFoundError when Temporal has none."""
        from temporalio.service import RPCError, RPCStatusCode

        handle = (await self.runner.client()).get_schedule_handle(schedule_id)
        try:
            described = await handle.describe()
        except RPCError as err:
            if err.status is RPCStatusCode.NOT_FOUND:
                raise NotFoundError(f"no schedule {schedule_id!r} on Temporal; `keel schedule ls` lists them") from None
            raise
        if not self._ours(await described.memo()):
            raise NotFoundError(
                f"schedule {schedule_id!r} on Temporal is not this stack's (no keel spec, or another task queue); "
                "`keel schedule ls` lists this stack's"
            )
        return handle

    async def _state(self, described: Any) -> dict[str, Any]:
        """keel-scheduler's state of a schedule, read from Temporal's description of it."""
        memo = (await described.memo())[SCHEDULE_MEMO]
        info = described.info
        recent = info.recent_actions
        return {
            "schedule": memo["spec"],
            "paused": described.schedule.state.paused,
            "runs": info.num_actions,
            "failures": 0,  # Temporal pauses on the first failed run (pause_after_failures = 1)
            "skipped": info.num_actions_skipped_overlap,
            "last_fire": recent[-1].scheduled_at.timestamp() if recent else None,
            "next_fire": info.next_action_times[0].timestamp() if info.next_action_times else None,
            "created_at": info.created_at.timestamp(),
        }


def _spec(spec: Mapping[str, Any]) -> Any:
    """When: keel's cron, interval or calendar, in its time zone, with jitter, start, end and skip dates."""
    from temporalio.client import ScheduleCalendarSpec, ScheduleIntervalSpec, ScheduleRange, ScheduleSpec

    tz = ZoneInfo(spec.get("timezone") or "UTC")

    def moment(value: str | None) -> dt.datetime | None:
        if value is None:
            return None
        parsed = dt.datetime.fromisoformat(value)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=tz)

    def exactly(value: int) -> list[ScheduleRange]:
        return [ScheduleRange(value)]

    start, end = moment(spec.get("start")), moment(spec.get("end"))
    cron = spec.get("cron")
    if cron is not None and len(cron.split()) == 6:
        cron += " *"  # keel's six fields put seconds first; Temporal's seven are seconds ... day of week, year
    intervals = []
    if spec.get("every") is not None:
        every = float(spec["every"])
        offset = (start.timestamp() % every) if start else 0.0  # keel counts from start, Temporal from the epoch
        intervals = [ScheduleIntervalSpec(every=timedelta(seconds=every), offset=timedelta(seconds=offset) or None)]
    calendars = []
    for value in spec.get("at") or []:
        at = moment(value)
        assert at is not None
        at = at.astimezone(tz)
        calendars.append(
            ScheduleCalendarSpec(
                second=exactly(at.second), minute=exactly(at.minute), hour=exactly(at.hour),
                day_of_month=exactly(at.day), month=exactly(at.month), year=exactly(at.year),
            )
        )  # fmt: skip
    skip = [
        ScheduleCalendarSpec(
            second=[ScheduleRange(0, 59)], minute=[ScheduleRange(0, 59)], hour=[ScheduleRange(0, 23)],
            day_of_month=exactly(day.day), month=exactly(day.month), year=exactly(day.year),
        )
        for day in (dt.date.fromisoformat(d) for d in spec.get("skip_dates") or [])
    ]  # fmt: skip
    return ScheduleSpec(
        calendars=calendars,
        intervals=intervals,
        cron_expressions=[cron] if cron is not None else [],
        skip=skip,
        start_at=start,
        end_at=end,
        jitter=timedelta(seconds=float(spec.get("jitter") or 0)) or None,
        time_zone_name=str(tz),
    )
