"""Figure 8b, store appends: durable appends per second, one writer and 8 concurrent writers, SQLite
on disk and PostgreSQL.

Workload: ``n`` = 2,000 acknowledged appends of a ~300-byte record (one step record), either by one
writer in sequence, or by 8 concurrent writers (250 each, each to its own stream / thread).
Number: wall time per acknowledged append, in microseconds (lower is better; appends/s is in the
extras as ``per_s``).

- keel: ``runtime.store().append(tenant, stream, [record])`` on ``keel-store-sqlite`` (WAL,
  ``synchronous=FULL``, group commit), each call awaited = acknowledged after commit
  (plugins/store-sqlite/README.md).
- langgraph: ``AsyncSqliteSaver.aput(config, checkpoint, metadata, {})`` writing the same number of
  checkpoints whose channel value is the same record (LangGraph docs "Persistence" → checkpointer
  libraries; aput is what a graph run calls per step). One ``aiosqlite`` connection, its default
  WAL journal, commit per put. Deviation: the checkpointer is called directly, without a graph, so
  only the write path is measured.

PostgreSQL rows: the same against the machine's server on 127.0.0.1:5432 (``KEEL_BENCH_PG`` to
change), ``keel-store-postgres`` (asyncpg) against ``AsyncPostgresSaver`` (psycopg), each side in a
database it creates and drops; the server's defaults (``synchronous_commit=on``) for both.

Target (issue 7): at least 10x LangGraph's durable write rate on the same disk with the same
durability (rule: Keel's time per append ≤ 1/10 of LangGraph's).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import flush_floor_side
from harness import Figure, Side, main_for, ratio_at_most

ROUNDS = 3
# PostgreSQL: the machine's server, trust auth; each side creates and drops its own database per run.
PG_ROOT = os.environ.get("KEEL_BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
PG = {"pg_root": PG_ROOT, "pg_admin_dsn": f"{PG_ROOT}/postgres"}

RECORD = """
import asyncio, tempfile, pathlib
N, WRITERS = ARGS["n"], ARGS["writers"]
RECORD = {"t": "c", "p": "step/0042", "o": "x" * 220, "a": 1, "ts": 1700000000.0}
async def writers(one):
    per = N // WRITERS
    async def writer(w):
        for i in range(per):
            await one(w, i)
    t0 = _time.perf_counter()
    await asyncio.gather(*(writer(w) for w in range(WRITERS)))
    elapsed = _time.perf_counter() - t0
    emit(elapsed * 1e6 / (per * WRITERS), per_s=(per * WRITERS) / elapsed)
"""

KEEL = (
    RECORD
    + """
try:
    import keel
    if ARGS["backend"] == "sqlite":
        import keel_store_sqlite  # noqa: F401
    else:
        import asyncpg, keel_store_postgres  # noqa: F401
except ImportError as err:
    not_built(f"{err}")
async def main():
    folder = pathlib.Path(tempfile.mkdtemp())
    if ARGS["backend"] == "sqlite":
        (folder / "keel.toml").write_text(f'[store]\\ndriver = "sqlite"\\npath = "{folder}/keel.db"\\n')
    else:
        db = f"keelbench_{_os.getpid()}"
        admin = await asyncpg.connect(ARGS["pg_admin_dsn"])
        await admin.execute(f"CREATE DATABASE {db}")
        (folder / "keel.toml").write_text(f'[store]\\ndriver = "postgres"\\ndsn = "{ARGS["pg_root"]}/{db}"\\n')
    try:
        await run(folder)
    finally:
        if ARGS["backend"] != "sqlite":
            await admin.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
            await admin.close()
async def run(folder):
    async with keel.Runtime.open(folder / "keel.toml") as rt:
        store = rt.store()
        async def one(w, i):
            await store.append("default", f"bench-{w}", [RECORD])
        await one(0, -1)  # opens the file and the writer
        await writers(one)
        assert await store.last_seq("default", "bench-0") == N // WRITERS + 1
asyncio.run(main())
"""
)

LANGGRAPH = (
    RECORD
    + """
from langgraph.checkpoint.base import empty_checkpoint
async def main():
    if ARGS["backend"] == "sqlite":
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
        folder = pathlib.Path(tempfile.mkdtemp())
        async with AsyncSqliteSaver.from_conn_string(str(folder / "lg.db")) as saver:
            await run(saver)
        return
    import psycopg
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    db = f"lgbench_{_os.getpid()}"
    admin = await psycopg.AsyncConnection.connect(ARGS["pg_admin_dsn"], autocommit=True)
    await admin.execute(f"CREATE DATABASE {db}")
    try:
        async with AsyncPostgresSaver.from_conn_string(f"{ARGS['pg_root']}/{db}") as saver:
            await saver.setup()
            await run(saver)
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        await admin.close()
async def run(saver):
    if True:
        configs = {}
        async def one(w, i):
            cp = empty_checkpoint()
            cp["channel_values"] = {"step": RECORD}
            cp["channel_versions"] = {"step": i + 2}
            config = configs.get(w) or {"configurable": {"thread_id": f"bench-{w}", "checkpoint_ns": ""}}
            configs[w] = await saver.aput(config, cp, {"source": "loop", "step": i}, {"step": i + 2})
        await one(0, -1)
        await writers(one)
        count = 0
        async for _ in saver.alist({"configurable": {"thread_id": "bench-0"}}):
            count += 1
        assert count == N // WRITERS + 1, count
asyncio.run(main())
"""
)


def figures() -> list[Figure]:
    figs = []
    shapes = (("sqlite", 1), ("sqlite", 8), ("sqlite", 64), ("postgres", 1), ("postgres", 8))
    for backend, writers in shapes:
        where = "SQLite on disk" if backend == "sqlite" else "PostgreSQL on 127.0.0.1"
        saver = "AsyncSqliteSaver" if backend == "sqlite" else "AsyncPostgresSaver"
        issue_shape = writers in (1, 8)  # the issue names 1 and 8 writers; 64 shows how group commit scales
        figs.append(
            Figure(
                figure=f"store.{backend}.{writers}w",
                group="8. store appends",
                title=f"durable appends, {writers} writer{'s' if writers > 1 else ''}, {where}",
                unit="us/append",
                target="at least 10x LangGraph's durable write rate, same disk, same durability (issue 7)"
                if issue_shape
                else "none (issue 7 names 1 and 8 writers); how the write rate scales with concurrency",
                rules=[ratio_at_most("langgraph", 0.1)] if issue_shape else [],
                rounds=ROUNDS,
                args={
                    "n": 2048 if writers == 64 else 2000,
                    "writers": writers,
                    "backend": backend,
                    "per_flush": writers,
                    **PG,
                },
                sides=[
                    Side("keel", "keel", code=KEEL, how=f"runtime.store().append on keel-store-{backend}"),
                    Side(
                        "langgraph",
                        "langgraph",
                        code=LANGGRAPH,
                        how=f"{saver}.aput, same record as channel value",
                    ),
                    *([flush_floor_side(writers)] if backend == "sqlite" else []),
                ],
            )
        )
    return figs


def main() -> None:
    main_for(figures)


if __name__ == "__main__":
    main()
