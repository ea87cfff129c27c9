"""The SIGKILL drill: three worker processes on one database; one is killed in the middle of a task.

Each task does its side effect first — a row keyed by the job's idempotency key in a ledger — and
then holds on. The worker that ran the first task is killed with SIGKILL while it holds it. Its
lease expires, another worker takes the job and runs it again; the keyed side effect stays one row,
every job completes exactly once, and the killed attempt's cause is kept.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio

from keel_scheduler import JobStatus

from .conftest import Backend

WORKER = textwrap.dedent(
    """
    import os, sqlite3, sys
    import anyio, keel
    from keel.testing import make_host
    from keel_scheduler import Queue, Worker, current_job, open_database, task

    url, schema, ledger = sys.argv[1], sys.argv[2] or None, sys.argv[3]

    @task
    async def charge(input):
        job = current_job()
        conn = sqlite3.connect(ledger, timeout=30)
        with conn:
            conn.execute("INSERT INTO runs VALUES (?, ?)", (job.idempotency_key, os.getpid()))
            conn.execute("INSERT OR IGNORE INTO effects VALUES (?)", (job.idempotency_key,))
        conn.close()
        await anyio.sleep(input["hold"])
        return {"charged": input["n"]}

    async def main():
        runtime = keel.Runtime(make_host())
        runtime.add(charge)
        async with runtime:
            queue = Queue(open_database(url, schema=schema))
            await Worker(queue, runtime, concurrency=2, lease=1.0, poll_interval=0.05).run()

    anyio.run(main)
    """
)

JOBS = 8


async def test_a_killed_workers_job_is_finished_by_another_and_its_effect_happens_once(
    backend: Backend, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.db"
    with sqlite3.connect(ledger) as conn:
        conn.execute("CREATE TABLE effects (key TEXT PRIMARY KEY)")
        conn.execute("CREATE TABLE runs (key TEXT, pid INTEGER)")
    queue = backend.queue()
    ids = [(await queue.enqueue("charge", {"n": n, "hold": 0.6}, max_attempts=3, backoff=0.0)).id for n in range(JOBS)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, backend.url, backend.schema or "", str(ledger)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for _ in range(3)
    ]
    try:
        with anyio.fail_after(60):
            while True:  # the first task to start: kill its worker while it holds the job
                rows = sqlite3.connect(ledger).execute("SELECT key, pid FROM runs").fetchall()
                if rows:
                    break
                await anyio.sleep(0.02)
        victim_job, victim_pid = rows[0]
        os.kill(victim_pid, signal.SIGKILL)
        with anyio.fail_after(90):
            while any(j.status != JobStatus.COMPLETED for j in [await queue.get(i) for i in ids]):
                await anyio.sleep(0.1)
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait(timeout=30)
    try:
        jobs = {i: await queue.get(i) for i in ids}
    finally:
        await queue.aclose()
    conn = sqlite3.connect(ledger)
    effects = [k for (k,) in conn.execute("SELECT key FROM effects")]
    runs = conn.execute("SELECT key, pid FROM runs WHERE key = ?", (victim_job,)).fetchall()
    assert sorted(effects) == sorted(ids), "each job's keyed side effect exactly once"
    assert len(runs) >= 2 and runs[-1][1] != victim_pid, "the killed job was run again by another worker"
    victim = jobs[victim_job]
    assert victim.attempts >= 2 and victim.result == {"charged": victim.result["charged"]}
    assert any("lease expired" in e["error"] for e in victim.errors), victim.errors
    assert all(j.result == {"charged": j.input["n"]} for j in jobs.values())
