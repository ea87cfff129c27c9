"""Two scheduler processes on one database, one of them SIGKILLed halfway: every tick is one job,
with no gap and no duplicate, and the schedule's run count agrees with the jobs."""

from __future__ import annotations

import datetime as dt
import itertools
import os
import signal
import subprocess
import sys
import textwrap

import anyio

from keel_scheduler import Schedules

from .conftest import Backend

SCHEDULER = textwrap.dedent(
    """
    import sys, anyio
    from keel_scheduler import Queue, Scheduler, open_database

    async def main():
        queue = Queue(open_database(sys.argv[1], schema=sys.argv[2] or None))
        await Scheduler(queue, poll_interval=0.05).run()

    anyio.run(main)
    """
)

EVERY = 0.25


async def test_two_schedulers_and_a_kill_fire_each_tick_once(backend: Backend) -> None:
    queue = backend.queue()
    try:
        schedules = Schedules(queue)
        start = dt.datetime.fromtimestamp(0, dt.UTC).isoformat()
        await schedules.add(
            {"id": "tick", "task": "t", "every": EVERY, "start": start, "overlap": "allow_all", "catchup_window": 30}
        )
        argv = [sys.executable, "-c", SCHEDULER, backend.url, backend.schema or ""]
        procs = [subprocess.Popen(argv, stderr=subprocess.PIPE) for _ in range(2)]
        try:
            with anyio.fail_after(60):
                while len(await queue.list(limit=1000)) < 8:
                    await anyio.sleep(0.05)
                os.kill(procs[0].pid, signal.SIGKILL)  # one scheduler dies; the other carries on
                seen = len(await queue.list(limit=1000))
                while len(await queue.list(limit=1000)) < seen + 8:
                    await anyio.sleep(0.05)
        finally:
            for proc in procs:
                proc.kill()
            for proc in procs:
                proc.wait(timeout=30)
        jobs = await queue.list(limit=1000)
        times = sorted(j.scheduled_for for j in jobs if j.scheduled_for is not None)
        steps = {round((b - a) / EVERY) for a, b in itertools.pairwise(times)}
        assert steps == {1}, f"a gap or a duplicate between ticks: {steps}"
        assert len({j.id for j in jobs}) == len(jobs)
        assert (await schedules.get("tick")).runs == len(jobs)
    finally:
        await queue.aclose()
