"""A writer killed with SIGKILL in the middle of its appends loses no acknowledged append (issue 7's
acceptance, here against the machine's PostgreSQL): every append is one statement, so a killed
client leaves each append either whole or absent.

The writer (a subprocess, 8 tasks, each append carrying three records) prints ``seq task n`` only
after ``append`` returned. The parent kills it after a seeded number of acknowledgements, then
checks with a fresh store: every acknowledged append is present at its sequence numbers with its
exact records, the stream has no gap, and no append is torn (its three records are all there or none).
"""

from __future__ import annotations

import random
import sys
import textwrap
import uuid

import anyio
import pytest

from keel.testing.drills import kill_after_acks
from keel_store_postgres import PostgresStore

WRITER = textwrap.dedent(
    """
    import sys, anyio
    from keel_store_postgres import PostgresStore

    dsn, schema = sys.argv[1], sys.argv[2]

    async def main():
        store = PostgresStore(dsn, schema=schema)

        async def writer(t):
            for n in range(100_000):
                records = [{"task": t, "n": n, "part": p} for p in range(3)]
                seq = await store.append("t", "log", records)
                sys.stdout.write(f"{seq} {t} {n}\\n")
                sys.stdout.flush()

        async with anyio.create_task_group() as tg:
            for t in range(8):
                tg.start_soon(writer, t)

    anyio.run(main)
    """
)


@pytest.mark.parametrize("seed", [1, 2])
def test_sigkill_loses_no_acknowledged_append(pg_dsn: str, seed: int) -> None:
    schema = f"crash_{uuid.uuid4().hex[:10]}"
    anyio.run(_create, pg_dsn, schema)  # the schema first, so the writer only appends
    kill_after = random.Random(seed).randint(200, 1500)
    acked = kill_after_acks([sys.executable, "-c", WRITER, pg_dsn, schema], kill_after)
    anyio.run(_check, pg_dsn, schema, acked)


async def _create(dsn: str, schema: str) -> None:
    store = PostgresStore(dsn, schema=schema)
    await store.append("t", "warm-up", [0])
    await store.aclose()


async def _check(dsn: str, schema: str, acked: list[tuple[int, ...]]) -> None:
    store = PostgresStore(dsn, schema=schema)
    try:
        last = await store.last_seq("t", "log")
        records = await store.read("t", "log")
    finally:
        await store.aclose()
    assert [r.seq for r in records] == list(range(1, last + 1)), "a gap in the log"
    by_seq = {r.seq: r.data for r in records}
    for seq, task, n in acked:  # seq is the last of the append's three records
        assert [by_seq.get(seq - 2 + p) for p in range(3)] == [{"task": task, "n": n, "part": p} for p in range(3)]
    appends: dict[tuple[int, int], list[int]] = {}
    for seq, data in by_seq.items():
        appends.setdefault((data["task"], data["n"]), []).append(seq)
    for (task, n), seqs in appends.items():  # nothing torn, nothing twice: three consecutive records
        assert sorted(seqs) == list(range(min(seqs), min(seqs) + 3)), f"append {task}/{n} is torn"
    assert last >= max(seq for seq, _, _ in acked)
