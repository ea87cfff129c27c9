"""Figure 9, the durable queue: enqueue→start latency and executions per second, on one PostgreSQL.

Workloads, the same for every side, each in a database it creates and drops (127.0.0.1:5432,
``KEEL_BENCH_PG`` to change; the server's defaults, ``synchronous_commit=on``):

- **latency**: one worker process with 4 concurrent slots is running and idle; the producer (same
  process) enqueues 200 no-op jobs one after another, 10 ms apart, each enqueue awaited (committed).
  Number: p99 of (task start - enqueue acknowledged), in ms: the queue's dispatch latency once the
  job is durable (the enqueue's own commit, one disk flush on every side, is the same work for all).
  p50, and both measured from the enqueue *call*, are in the extras.
- **throughput** (no-op and 1 ms tasks): 1,000 jobs are enqueued first (untimed); then a worker
  with 4 concurrent slots starts, and the clock runs until every job has run and the worker has
  stopped (its last completions committed). Number: wall time per execution, in µs (executions/s
  in the extras as ``per_s``).

Durability is the same everywhere: a job exists once its enqueue committed, and its outcome once the
worker's completion committed.

- keel: ``keel_scheduler.Queue.enqueue`` and ``Worker(concurrency=4)`` on PostgreSQL
  (``FOR UPDATE SKIP LOCKED``, ``LISTEN/NOTIFY``), the task a ``@task`` function (a runnable).
- procrastinate 3.10: ``@app.task`` + ``defer_async``, ``app.run_worker_async(concurrency=4)``
  with its default ``listen_notify=True`` (procrastinate docs, "Launch a worker"); psycopg connector.
- dbos 3.4: ``DBOS.register_queue_async("bench", worker_concurrency=4, polling_interval_sec=0.1)`` and
  ``queue.enqueue_async`` of a ``@DBOS.workflow`` (dbos docs, "Queues & Concurrency"). Deviation:
  the queue's polling interval is set to 0.1 s (the default is 1 s), to be fair on latency.

Target (issue 18): Keel's throughput ≥ 2x the faster peer's (time per execution ≤ ½), and its p99
enqueue→start ≤ ½ of the faster peer's.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Figure, Side, main_for, ratio_vs_fastest

ROUNDS = 3
PG_ROOT = os.environ.get("KEEL_BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
PG = {"pg_root": PG_ROOT, "pg_admin_dsn": f"{PG_ROOT}/postgres"}

COMMON = """
import asyncio, statistics
MODE, N, SLEEP = ARGS["mode"], ARGS["n"], ARGS["sleep"]
started = {}
def report(enqueued, t0=None, t1=None):
    if MODE == "latency":
        # enqueued[i] = (enqueue called, enqueue returned = committed and acknowledged)
        acked = sorted((started[i] - enqueued[i][1]) * 1000 for i in range(N))
        called = sorted((started[i] - enqueued[i][0]) * 1000 for i in range(N))
        p = lambda lat, q: lat[min(int(q * len(lat)), len(lat) - 1)]
        emit(p(acked, 0.99), p50=p(acked, 0.5), max=acked[-1], p99_from_call=p(called, 0.99), p50_from_call=p(called, 0.5))
    else:
        emit((t1 - t0) * 1e6 / N, per_s=N / (t1 - t0))
async def with_database(prefix, run):
    db = f"{prefix}_{_os.getpid()}"
    try:
        import asyncpg
        admin = await asyncpg.connect(ARGS["pg_admin_dsn"])
    except ImportError:  # the peers' venvs have psycopg
        import psycopg
        admin = await psycopg.AsyncConnection.connect(ARGS["pg_admin_dsn"], autocommit=True)
    await admin.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    await admin.execute(f"CREATE DATABASE {db}")
    try:
        await run(f"{ARGS['pg_root']}/{db}")
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        await admin.close()
async def wait_for(pred):
    while not pred():
        await asyncio.sleep(0.001)
"""

KEEL = (
    COMMON
    + """
try:
    import anyio, keel
    from keel.testing import make_host
    from keel_scheduler import Queue, Worker, open_database, task
except ImportError as err:
    not_built(f"{err}")
@task
async def job(input):
    started[input] = _time.time()
    if SLEEP:
        await asyncio.sleep(SLEEP)
async def run(dsn):
    runtime = keel.Runtime(make_host())
    runtime.add(job)
    async with runtime, Queue(open_database(dsn, schema="keel_bench")) as queue:
        await queue.enqueue("job", -1)  # creates the tables
        worker = Worker(queue, runtime, concurrency=4, poll_interval=1.0)
        if MODE == "latency":
            async with anyio.create_task_group() as tg:
                tg.start_soon(worker.run)
                await wait_for(lambda: -1 in started)
                enqueued = {}
                for i in range(N):
                    t = _time.time()
                    await queue.enqueue("job", i)
                    enqueued[i] = (t, _time.time())
                    await asyncio.sleep(0.01)
                await wait_for(lambda: len(started) == N + 1)
                worker.stop()
            report(enqueued)
        else:
            for i in range(N):
                await queue.enqueue("job", i)
            t0 = _time.perf_counter()
            async with anyio.create_task_group() as tg:
                tg.start_soon(worker.run)
                await wait_for(lambda: len(started) == N + 1)
                worker.stop()
            report(None, t0, _time.perf_counter())
asyncio.run(with_database("keelq", run))
"""
)

PROCRASTINATE = (
    COMMON
    + """
import procrastinate
async def run(dsn):
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))
    @app.task(name="job")
    async def job(i):
        started[i] = _time.time()
        if SLEEP:
            await asyncio.sleep(SLEEP)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        await job.defer_async(i=-1)
        if MODE == "latency":
            worker = asyncio.create_task(app.run_worker_async(concurrency=4, wait=True, install_signal_handlers=False))
            await wait_for(lambda: -1 in started)
            enqueued = {}
            for i in range(N):
                t = _time.time()
                await job.defer_async(i=i)
                enqueued[i] = (t, _time.time())
                await asyncio.sleep(0.01)
            await wait_for(lambda: len(started) == N + 1)
            worker.cancel()
            try:
                await worker
            except asyncio.CancelledError:
                pass
            report(enqueued)
        else:
            for i in range(N):
                await job.defer_async(i=i)
            t0 = _time.perf_counter()
            await app.run_worker_async(concurrency=4, wait=False, install_signal_handlers=False)
            report(None, t0, _time.perf_counter())
            assert len(started) == N + 1, len(started)
asyncio.run(with_database("procq", run))
"""
)

DBOS = (
    COMMON
    + """
from dbos import DBOS
async def run(dsn):
    DBOS(config={"name": "keelbench", "system_database_url": dsn, "run_admin_server": False})
    @DBOS.workflow()
    async def job(i):
        started[i] = _time.time()
        if SLEEP:
            await asyncio.sleep(SLEEP)
    DBOS.launch()
    queue = await DBOS.register_queue_async("bench", worker_concurrency=4, polling_interval_sec=0.1)
    try:
        await queue.enqueue_async(job, -1)
        await wait_for(lambda: -1 in started)
        if MODE == "latency":
            enqueued = {}
            for i in range(N):
                t = _time.time()
                await queue.enqueue_async(job, i)
                enqueued[i] = (t, _time.time())
                await asyncio.sleep(0.01)
            await wait_for(lambda: len(started) == N + 1)
            report(enqueued)
        else:
            # DBOS runs queued work in the launched process: enqueue while it is paused is not offered,
            # so the clock starts at the first enqueue and stops when the last handle's result is in
            t0 = _time.perf_counter()
            handles = [await queue.enqueue_async(job, i) for i in range(N)]
            for h in handles:
                await h.get_result()
            report(None, t0, _time.perf_counter())
    finally:
        DBOS.destroy()
asyncio.run(with_database("dbosq", run))
"""
)

PEER_SIDES = (
    ("procrastinate", PROCRASTINATE, "@app.task + defer_async; run_worker_async(concurrency=4), listen_notify"),
    ("dbos", DBOS, "@DBOS.workflow on register_queue(worker_concurrency=4, polling_interval_sec=0.1)"),
)


def figures() -> list[Figure]:
    shapes = (
        ("queue.latency", "enqueue→start p99, 200 jobs 10 ms apart, 4 slots", "ms", {"mode": "latency", "n": 200, "sleep": 0}),
        ("queue.throughput.noop", "1,000 no-op jobs, 4 slots", "us/execution", {"mode": "throughput", "n": 1000, "sleep": 0}),
        ("queue.throughput.1ms", "1,000 jobs of 1 ms, 4 slots", "us/execution", {"mode": "throughput", "n": 1000, "sleep": 0.001}),
    )  # fmt: skip
    return [
        Figure(
            figure=figure,
            group="9. queue",
            title=title,
            unit=unit,
            target="≤ ½ of the faster peer (throughput ≥ 2x; p99 enqueue→start ≤ ½), same PostgreSQL (issue 18)",
            rules=[ratio_vs_fastest(["procrastinate", "dbos"], 0.5)],
            rounds=ROUNDS,
            args={**args, **PG},
            sides=[
                Side("keel", "keel", code=KEEL, how="Queue.enqueue + Worker(concurrency=4), PostgreSQL"),
                *(Side(name, name, code=code, how=how) for name, code, how in PEER_SIDES),
            ],
        )
        for figure, title, unit, args in shapes
    ]


def main() -> None:
    main_for(figures)


if __name__ == "__main__":
    main()
