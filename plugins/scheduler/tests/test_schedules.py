"""Schedules: specs, DST, catch-up, overlap policies, two schedulers at once, pause after failures."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel_scheduler import Queue, ScheduleSpecError
from keel_scheduler.schedules import Schedule, Schedules, parse_schedule

from .conftest import Backend

BERLIN = ZoneInfo("Europe/Berlin")


def _local(times: list[float], tz: ZoneInfo = BERLIN) -> list[str]:
    return [dt.datetime.fromtimestamp(t, tz).strftime("%m-%d %H:%M") for t in times]


def test_a_daily_0230_runs_once_per_day_across_both_dst_changes() -> None:
    spec = parse_schedule({"id": "nightly", "task": "t", "cron": "30 2 * * *", "timezone": "Europe/Berlin"})
    spring = list(
        spec.fires(
            dt.datetime(2026, 3, 27, tzinfo=BERLIN).timestamp(), dt.datetime(2026, 4, 1, tzinfo=BERLIN).timestamp()
        )
    )
    # 29 March has no 02:30 (clocks jump from 02:00 to 03:00): it runs once, at 03:00
    assert _local(spring) == ["03-27 02:30", "03-28 02:30", "03-29 03:00", "03-30 02:30", "03-31 02:30"]
    autumn = list(
        spec.fires(
            dt.datetime(2026, 10, 23, tzinfo=BERLIN).timestamp(), dt.datetime(2026, 10, 28, tzinfo=BERLIN).timestamp()
        )
    )
    # 25 October has 02:30 twice (clocks go back from 03:00 to 02:00): it runs once
    assert _local(autumn) == ["10-23 02:30", "10-24 02:30", "10-25 02:30", "10-26 02:30", "10-27 02:30"]


def test_cron_with_seconds_skip_dates_start_and_end() -> None:
    spec = parse_schedule(
        {
            "id": "s", "task": "t", "cron": "*/20 * * * * *", "start": "2026-05-01T00:00:00+00:00",
            "end": "2026-05-01T00:01:00+00:00",
        }
    )  # fmt: skip
    fires = list(spec.fires(0, 2e9))
    assert [dt.datetime.fromtimestamp(t, dt.UTC).strftime("%M:%S") for t in fires] == [
        "00:00", "00:20", "00:40", "01:00"
    ]  # fmt: skip
    daily = parse_schedule(
        {"id": "d", "task": "t", "every": 86400, "skip_dates": ["2026-05-02"], "start": "2026-05-01T09:00:00"}
    )
    days = list(daily.fires(0, dt.datetime(2026, 5, 4, 12, tzinfo=dt.UTC).timestamp()))
    assert [dt.datetime.fromtimestamp(t, dt.UTC).day for t in days] == [1, 3, 4]


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "* * *"}, "cron"),
        ({"cron": "* * * * *", "timezone": "Mars/Olympus"}, "timezone"),
        ({"every": 60, "start": "2026-05-02T00:00:00", "end": "2026-05-01T00:00:00"}, "end"),
        ({"every": -5}, "every"),
        ({}, "cron"),
        ({"cron": "* * * * *", "every": 5}, "cron"),
        ({"cron": "* * * * *", "overlap": "sometimes"}, "overlap"),
        ({"cron": "* * * * *", "id": "no spaces please"}, "id"),
    ],
)
def test_bad_specs_name_the_field(spec: dict[str, object], field: str) -> None:
    with pytest.raises(ScheduleSpecError) as caught:
        parse_schedule({"id": "x", "task": "t", **spec})
    assert caught.value.field == field and field in str(caught.value)


@settings(max_examples=60, deadline=None)
@given(
    every=st.floats(min_value=0.5, max_value=5000),
    after=st.floats(min_value=0, max_value=1e6),
    span=st.floats(min_value=0, max_value=1e5),
    cut=st.floats(min_value=0, max_value=1),
)
def test_fires_split_anywhere_give_the_same_ticks(every: float, after: float, span: float, cut: float) -> None:
    """Ticking in two steps (a restart in the middle) gives each tick once, no more, no fewer."""
    spec = Schedule(id="p", task="t", every=every)
    middle = after + span * cut
    whole = list(spec.fires(after, after + span))
    assert whole == list(spec.fires(after, middle)) + list(spec.fires(middle, after + span))
    assert len(whole) == len(set(whole))


async def _schedule(queue: Queue, **spec: object) -> tuple[Schedules, float]:
    schedules = Schedules(queue)
    state = await schedules.add({"id": "s", "task": "t", **spec})
    return schedules, state.created_at


async def test_catch_up_only_within_the_window(queue: Queue) -> None:
    schedules, t0 = await _schedule(
        queue, every=10, start=dt.datetime.fromtimestamp(0, dt.UTC).isoformat(), catchup_window=35, overlap="allow_all"
    )
    base = (t0 // 10) * 10
    first = await schedules.tick(now=base + 12)
    assert len(first) == 1  # the tick at base + 10
    later = await schedules.tick(now=base + 105)  # down for 9 ticks: only those in the last 35 s fire
    assert sorted(j.scheduled_for - base for j in later) == [80, 90, 100]  # type: ignore[operator]
    state = await schedules.get("s")
    assert state.last_fire == base + 100 and state.runs == 4 and state.next_fire == base + 110


async def test_two_schedulers_never_fire_one_tick_twice(backend: Backend) -> None:
    queues = [backend.queue(), backend.queue()]
    try:
        schedules, t0 = await _schedule(
            queues[0],
            every=5,
            start=dt.datetime.fromtimestamp(0, dt.UTC).isoformat(),
            overlap="allow_all",
            catchup_window=3600,
        )
        other = Schedules(queues[1])
        base = (t0 // 5) * 5
        fired: list[str] = []

        async def run(s: Schedules) -> None:
            for k in range(1, 41):
                fired.extend(j.id for j in await s.tick(now=base + 5 * k + 0.5))

        async with anyio.create_task_group() as tg:
            tg.start_soon(run, schedules)
            tg.start_soon(run, other)
        jobs = await queues[0].list(limit=1000)
        assert len(fired) == len(set(fired)) == 40 == len(jobs)
        assert (await schedules.get("s")).runs == 40
    finally:
        for q in queues:
            await q.aclose()


async def test_overlap_skip_buffer_one_buffer_all_cancel_other(queue: Queue) -> None:
    start = dt.datetime.fromtimestamp(0, dt.UTC).isoformat()
    got = {}
    for policy in ("skip", "buffer_one", "buffer_all", "cancel_other", "allow_all"):
        schedules = Schedules(queue)
        state = await schedules.add(
            {"id": policy, "task": "t", "every": 10, "start": start, "overlap": policy, "catchup_window": 3600}
        )
        base = (state.created_at // 10) * 10
        for k in (1, 2, 3):
            await schedules._tick_one(policy, base + 10 * k + 1)
        jobs = await queue.list(schedule_id=policy)
        got[policy] = sorted(j.status.value for j in jobs)
    assert got["skip"] == ["queued"]  # the first still waits: later ticks are skipped
    assert got["buffer_one"] == ["queued"]  # one already buffered
    assert got["buffer_all"] == ["queued"] * 3  # all buffered, run one at a time (one concurrency key)
    assert got["cancel_other"] == ["cancelled", "cancelled", "queued"]
    assert got["allow_all"] == ["queued"] * 3
    buffered = await queue.list(schedule_id="buffer_all")
    assert {j.concurrency_key for j in buffered} == {"schedule:buffer_all"}  # one runs at a time


async def test_pause_after_failures_and_max_runs(queue: Queue) -> None:
    start = dt.datetime.fromtimestamp(0, dt.UTC).isoformat()
    schedules, t0 = await _schedule(
        queue, every=10, start=start, pause_after_failures=2, overlap="allow_all", catchup_window=3600, max_runs=5
    )
    base = (t0 // 10) * 10
    for _ in (1, 2):  # two runs (triggered by hand, so that they are due now) fail for good
        await schedules.trigger("s")
        [job] = await queue.claim("w")
        await queue.fail(job, "w", "broken", retry=False)
    state = await schedules.get("s")
    assert state.paused and state.failures == 2 and state.remaining == 5
    assert await schedules.tick(now=base + 31) == []  # paused: nothing fires
    await schedules.resume("s")
    assert (await schedules.get("s")).failures == 0
    fired = await schedules.tick(now=base + 100)
    assert len(fired) == 5 and (await schedules.get("s")).remaining == 0
    assert (await schedules.get("s")).summary()["next_fire"] is None


async def test_jitter_is_the_same_in_every_scheduler_and_bounded(queue: Queue) -> None:
    schedules, t0 = await _schedule(
        queue,
        every=10,
        start=dt.datetime.fromtimestamp(0, dt.UTC).isoformat(),
        jitter=5,
        overlap="allow_all",
        catchup_window=3600,
    )
    base = (t0 // 10) * 10
    jobs = await schedules.tick(now=base + 51)
    spec = (await schedules.get("s")).schedule
    for job in jobs:
        assert job.scheduled_for is not None
        assert job.run_at == job.scheduled_for + spec.jitter_for(job.scheduled_for)
        assert job.scheduled_for <= job.run_at < job.scheduled_for + 5


async def test_backfill_trigger_and_the_dst_week(queue: Queue) -> None:
    schedules = Schedules(queue)
    await schedules.add({"id": "nightly", "task": "t", "cron": "30 2 * * *", "timezone": "Europe/Berlin"})
    lo = dt.datetime(2026, 3, 27, tzinfo=BERLIN).timestamp()
    hi = dt.datetime(2026, 4, 1, tzinfo=BERLIN).timestamp()
    first = await schedules.backfill("nightly", lo, hi)
    again = await schedules.backfill("nightly", lo, hi)
    assert len(first) == 5 and again == []  # same tick ids: nothing twice
    assert "nightly@2026-03-29T01:00:00.000Z" in {j.id for j in first}  # 03:00 CEST
    manual = await schedules.trigger("nightly")
    assert manual.id.startswith("nightly@manual-")
