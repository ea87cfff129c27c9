"""Schedules: cron (with seconds), intervals and calendars in a time zone, turned into jobs once.

The job of a tick has the id ``<schedule id>@<scheduled time, UTC ISO>``: the queue's primary key
makes it unique, and each tick is decided inside a transaction that locks the schedule's row, so
two schedulers running at once never fire one tick twice, and a scheduler that restarts fires the
ticks it missed — those inside the catch-up window, as the overlap policy says.
"""

from __future__ import annotations

import builtins
import datetime as dt
import hashlib
import json
import time
from collections.abc import Iterator
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import anyio
from cronsim import CronSim, CronSimError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from keel import new_id
from keel_scheduler._db import Conn
from keel_scheduler.errors import JobNotFound, SchedulerError, ScheduleSpecError
from keel_scheduler.jobs import Job
from keel_scheduler.queue import Queue

__all__ = ["OVERLAP", "Schedule", "ScheduleState", "Scheduler", "Schedules", "parse_schedule"]

Overlap = Literal["skip", "buffer_one", "buffer_all", "cancel_other", "allow_all"]
OVERLAP: tuple[str, ...] = ("skip", "buffer_one", "buffer_all", "cancel_other", "allow_all")


class Schedule(BaseModel):
    """When to run a runnable, and what to do when runs overlap or were missed."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,120}$", description="unique name of the schedule")
    task: str = Field(min_length=1, description="the runnable each tick enqueues")
    input: Any = None
    queue: str = "default"
    cron: str | None = Field(default=None, description="5 fields, or 6 with seconds first: '*/10 * * * * *'")
    every: float | None = Field(default=None, gt=0, description="an interval in seconds, from start")
    at: list[dt.datetime] | None = Field(default=None, description="a calendar: these times, once each")
    timezone: str = Field(default="UTC", description="IANA name; cron fields and dates are read in it")
    jitter: float = Field(default=0.0, ge=0, description="each run starts up to this many seconds late")
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    skip_dates: list[dt.date] = Field(default_factory=list, description="local dates on which nothing fires")
    max_runs: int | None = Field(default=None, ge=1)
    overlap: Overlap = "skip"
    catchup_window: float = Field(default=60.0, ge=0, description="missed ticks younger than this still fire")
    pause_after_failures: int | None = Field(default=None, ge=1)
    max_attempts: int = Field(default=3, ge=1)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def _aware(self, value: dt.datetime) -> dt.datetime:
        return value if value.tzinfo else value.replace(tzinfo=self.tz)

    def fires(self, after: float, until: float) -> Iterator[float]:
        """Scheduled times ``t`` with ``after < t <= until`` (epoch seconds), in order."""
        lo = max(after, self._aware(self.start).timestamp() - 1e-6) if self.start else after
        hi = min(until, self._aware(self.end).timestamp()) if self.end else until
        if hi <= lo:
            return
        for t in self._raw(lo, hi):
            if t > hi:
                return
            if t > lo and dt.datetime.fromtimestamp(t, self.tz).date() not in self.skip_dates:
                yield t

    def _raw(self, lo: float, hi: float) -> Iterator[float]:
        if self.cron is not None:
            start = dt.datetime.fromtimestamp(int(lo), self.tz)  # cronsim yields strictly after
            for moment in CronSim(self.cron, start):
                yield moment.timestamp()
        elif self.every is not None:
            anchor = self._aware(self.start).timestamp() if self.start else 0.0
            k = max(int((lo - anchor) // self.every), 0)
            while True:
                t = anchor + k * self.every
                if t > hi:
                    return
                yield t
                k += 1
        else:
            for moment in sorted(self._aware(m) for m in self.at or []):
                yield moment.timestamp()

    def next_fire(self, after: float) -> float | None:
        return next(self.fires(after, after + 400 * 86400), None)

    def jitter_for(self, t: float) -> float:
        """The same delay for one tick in every scheduler process (a hash, not a random draw)."""
        if not self.jitter:
            return 0.0
        digest = hashlib.sha256(f"{self.id}@{t}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 * self.jitter


def tick_id(schedule_id: str, t: float) -> str:
    stamp = dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return f"{schedule_id}@{stamp}"


def parse_schedule(data: dict[str, Any] | Schedule) -> Schedule:
    """Validate a schedule; any problem is a :class:`ScheduleSpecError` naming the field."""
    if isinstance(data, Schedule):
        data = data.model_dump()
    try:
        spec = Schedule.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(schedule)"
        raise ScheduleSpecError(field, f"{first['msg']} (got {first.get('input')!r})") from None
    kinds = [k for k in ("cron", "every", "at") if getattr(spec, k) is not None]
    if len(kinds) != 1:
        raise ScheduleSpecError("cron", f"give exactly one of cron, every or at (got {', '.join(kinds) or 'none'})")
    try:
        tz = ZoneInfo(spec.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleSpecError(
            "timezone", f"unknown time zone {spec.timezone!r}; use an IANA name such as 'Europe/Oslo' or 'UTC'"
        ) from None
    if spec.cron is not None:
        try:
            CronSim(spec.cron, dt.datetime.now(tz))
        except CronSimError as err:
            raise ScheduleSpecError(
                "cron", f"invalid cron expression {spec.cron!r}: {err} (5 fields, or 6 with seconds first)"
            ) from None
    if spec.start and spec.end and spec._aware(spec.end) <= spec._aware(spec.start):
        raise ScheduleSpecError("end", f"end {spec.end.isoformat()} is not after start {spec.start.isoformat()}")
    if spec.at is not None and not spec.at:
        raise ScheduleSpecError("at", "a calendar needs at least one time")
    return spec


class ScheduleState(BaseModel):
    """A schedule with its state: paused, runs so far, failures in a row, last and next fire."""

    model_config = ConfigDict(extra="forbid")

    schedule: Schedule
    paused: bool
    runs: int
    failures: int
    last_fire: float | None
    next_fire: float | None
    created_at: float
    #: ticks skipped because a run was still going, when the engine that fires them counts them
    #: (Temporal does; keel-scheduler's own scheduler skips without counting: ``None``)
    skipped: int | None = None

    @property
    def remaining(self) -> int | None:
        return None if self.schedule.max_runs is None else max(self.schedule.max_runs - self.runs, 0)

    def summary(self) -> dict[str, Any]:
        s = self.schedule
        when = s.cron or (f"every {s.every:g}s" if s.every is not None else f"{len(s.at or [])} calendar times")
        return {
            "id": s.id, "task": s.task, "when": when, "timezone": s.timezone, "overlap": s.overlap,
            "paused": self.paused, "runs": self.runs, "remaining": self.remaining, "failures": self.failures,
            "last_fire": self.last_fire, "next_fire": None if self.paused else self.next_fire,
            **({} if self.skipped is None else {"skipped": self.skipped}),
        }  # fmt: skip

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ScheduleState:
        return cls(
            schedule=Schedule.model_validate(json.loads(row["spec"])),
            paused=bool(row["paused"]),
            runs=int(row["runs"]),
            failures=int(row["failures"]),
            last_fire=row["last_fire"],
            next_fire=row["next_fire"],
            created_at=row["created_at"],
        )


class Schedules:
    """Schedules in the queue's database: add, list, pause, resume, remove, trigger, backfill, tick."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue
        self.db = queue.db

    async def add(self, schedule: Schedule | dict[str, Any], *, replace: bool = False) -> ScheduleState:
        spec = parse_schedule(schedule)
        now = time.time()
        text = spec.model_dump_json()
        async with self.db.transaction() as conn:
            existing = await conn.fetch("SELECT * FROM {schedules} WHERE id = $1", spec.id)
            if existing and not replace:
                raise SchedulerError(f"schedule {spec.id!r} exists; remove it first or add it with replace=True")
            if existing:
                await conn.execute(
                    "UPDATE {schedules} SET spec = $2, next_fire = $3, updated_at = $4 WHERE id = $1",
                    spec.id, text, spec.next_fire(existing[0]["last_fire"] or now), now,
                )  # fmt: skip
            else:
                await conn.execute(
                    """INSERT INTO {schedules} (id, spec, paused, runs, failures, last_fire, next_fire, created_at,
                           updated_at) VALUES ($1, $2, 0, 0, 0, NULL, $3, $4, $4)""",
                    spec.id, text, spec.next_fire(now), now,
                )  # fmt: skip
        return await self.get(spec.id)

    async def get(self, schedule_id: str) -> ScheduleState:
        async with self.db.transaction() as conn:
            rows = await conn.fetch("SELECT * FROM {schedules} WHERE id = $1", schedule_id)
        if not rows:
            raise JobNotFound(f"no schedule {schedule_id!r}; `keel schedule ls` lists them")
        return ScheduleState.from_row(rows[0])

    async def list(self) -> builtins.list[ScheduleState]:
        async with self.db.transaction() as conn:
            rows = await conn.fetch("SELECT * FROM {schedules} ORDER BY id")
        return [ScheduleState.from_row(r) for r in rows]

    async def pause(self, schedule_id: str) -> ScheduleState:
        return await self._set_paused(schedule_id, True)

    async def resume(self, schedule_id: str) -> ScheduleState:
        """Resume (and forget the failures in a row); missed ticks fire as far as the catch-up window says."""
        return await self._set_paused(schedule_id, False)

    async def _set_paused(self, schedule_id: str, paused: bool) -> ScheduleState:
        async with self.db.transaction() as conn:
            n = await conn.execute(
                "UPDATE {schedules} SET paused = $2, failures = 0, updated_at = $3 WHERE id = $1",
                schedule_id, 1 if paused else 0, time.time(),
            )  # fmt: skip
        if not n:
            raise JobNotFound(f"no schedule {schedule_id!r}; `keel schedule ls` lists them")
        return await self.get(schedule_id)

    async def remove(self, schedule_id: str) -> None:
        async with self.db.transaction() as conn:
            n = await conn.execute("DELETE FROM {schedules} WHERE id = $1", schedule_id)
        if not n:
            raise JobNotFound(f"no schedule {schedule_id!r}; `keel schedule ls` lists them")

    async def trigger(self, schedule_id: str) -> Job:
        """Run the schedule's task now, once, outside its timetable (not counted in ``runs``; its
        failure counts toward ``pause_after_failures``)."""
        spec = (await self.get(schedule_id)).schedule
        async with self.db.transaction() as conn:
            job, _ = await self.queue.enqueue_in(
                conn, spec.task, spec.input, queue=spec.queue, id=f"{spec.id}@manual-{new_id()}",
                max_attempts=spec.max_attempts, schedule_id=spec.id, scheduled_for=time.time(),
            )  # fmt: skip
        return job

    async def backfill(self, schedule_id: str, start: float, end: float) -> builtins.list[Job]:
        """Enqueue every tick in ``(start, end]``, whatever the catch-up window; ticks that already
        have a job keep it (the ids are the same)."""
        spec = (await self.get(schedule_id)).schedule
        created = []
        async with self.db.transaction() as conn:
            for t in spec.fires(start, end):
                job, new = await self.queue.enqueue_in(
                    conn, spec.task, spec.input, queue=spec.queue, id=tick_id(spec.id, t), run_at=time.time(),
                    max_attempts=spec.max_attempts, schedule_id=spec.id, scheduled_for=t,
                )  # fmt: skip
                if new:
                    created.append(job)
        return created

    # ------------------------------------------------------------------------------ ticking

    async def tick(self, now: float | None = None) -> builtins.list[Job]:
        """Enqueue every due tick of every running schedule; returns the jobs created here."""
        now = time.time() if now is None else now
        created: builtins.list[Job] = []
        for state in await self.list():
            if not state.paused:
                created += await self._tick_one(state.schedule.id, now)
        return created

    async def _tick_one(self, schedule_id: str, now: float) -> builtins.list[Job]:
        created: builtins.list[Job] = []
        lock = " FOR UPDATE" if self.db.dialect == "postgres" else ""
        async with self.db.transaction() as conn:
            rows = await conn.fetch(f"SELECT * FROM {{schedules}} WHERE id = $1{lock}", schedule_id)
            if not rows:
                return []
            state = ScheduleState.from_row(rows[0])
            spec = state.schedule
            if state.paused:
                return []
            since = state.last_fire if state.last_fire is not None else state.created_at
            lower = max(since, now - spec.catchup_window)  # older missed ticks are dropped
            last = state.last_fire
            runs = state.runs
            for t in spec.fires(lower, now):
                if spec.max_runs is not None and runs >= spec.max_runs:
                    break
                last = t
                job = await self._fire(conn, spec, t)
                if job is not None:
                    created.append(job)
                    runs += 1
            next_fire = (
                None if spec.max_runs is not None and runs >= spec.max_runs else spec.next_fire(max(now, last or 0))
            )
            await conn.execute(
                "UPDATE {schedules} SET last_fire = $2, runs = $3, next_fire = $4, updated_at = $5 WHERE id = $1",
                spec.id, last, runs, next_fire, now,
            )  # fmt: skip
        return created

    async def _fire(self, conn: Conn, spec: Schedule, t: float) -> Job | None:
        unfinished = [
            Job.from_row(r)
            for r in await conn.fetch(
                "SELECT * FROM {jobs} WHERE schedule_id = $1 AND status IN ('queued', 'running') AND id <> $2",
                spec.id,
                tick_id(spec.id, t),
            )
        ]
        if unfinished and spec.overlap == "skip":
            return None
        if spec.overlap == "buffer_one" and any(j.status == "queued" for j in unfinished):
            return None
        if spec.overlap == "cancel_other":
            for job in unfinished:
                await conn.execute(
                    """UPDATE {jobs} SET status = 'cancelled', finished_at = $2, lease_owner = NULL, lease_until = NULL
                       WHERE id = $1 AND status IN ('queued', 'running')""",
                    job.id, time.time(),
                )  # fmt: skip
        job, new = await self.queue.enqueue_in(
            conn, spec.task, spec.input, queue=spec.queue, id=tick_id(spec.id, t), run_at=t + spec.jitter_for(t),
            max_attempts=spec.max_attempts, schedule_id=spec.id, scheduled_for=t,
            concurrency_key=None if spec.overlap == "allow_all" else f"schedule:{spec.id}",
        )  # fmt: skip
        return job if new else None


class Scheduler:
    """The ``keel scheduler`` loop: tick every schedule, then sleep until the next fire (at most
    ``poll_interval``, so a schedule added elsewhere is seen soon)."""

    def __init__(self, queue: Queue, *, poll_interval: float = 1.0) -> None:
        self.schedules = Schedules(queue)
        self.poll_interval = poll_interval
        self._stopping = False

    def stop(self) -> None:
        self._stopping = True

    async def run(self, *, on_fire: Any = None) -> None:
        while not self._stopping:
            for job in await self.schedules.tick():
                if on_fire is not None:
                    on_fire(job)
            states = [s for s in await self.schedules.list() if not s.paused and s.next_fire]
            wait = self.poll_interval
            if states:
                wait = min(wait, max(min(s.next_fire for s in states if s.next_fire) - time.time(), 0.0))
            await anyio.sleep(max(wait, 0.01))
