"""Acceptance: a writer killed with SIGKILL in the middle of 10,000 appends loses no acknowledged append.

The writer (a subprocess) prints ``seq task n`` on stdout only AFTER ``append`` returned, so every
line the parent reads is an acknowledged append. The parent kills the writer after a seeded number of
acknowledgements, reopens the file and checks: each acknowledged record is present at its sequence
number with its exact payload, the stream has no gap, no record is torn, and SQLite's integrity check
passes.
"""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import pytest

from keel.testing.drills import kill_after_acks
from keel_store_sqlite import SqliteStore

TOTAL = 10_000

WRITER = textwrap.dedent(
    """
    import sys, anyio
    from keel_store_sqlite import SqliteStore

    path, tasks, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

    async def main():
        store = SqliteStore(path)
        per_task = total // tasks

        async def writer(t):
            for n in range(per_task):
                seq = await store.append("t", "log", [{"task": t, "n": n, "pad": "x" * (n % 200)}])
                sys.stdout.write(f"{seq} {t} {n}\\n")
                sys.stdout.flush()

        async with anyio.create_task_group() as tg:
            for t in range(tasks):
                tg.start_soon(writer, t)
        await store.aclose()

    anyio.run(main)
    """
)


@pytest.mark.parametrize(("seed", "tasks"), [(1, 1), (2, 8), (3, 8)], ids=["1-writer", "8-writers-a", "8-writers-b"])
def test_sigkill_loses_no_acknowledged_append(tmp_path: Path, seed: int, tasks: int) -> None:
    kill_after = random.Random(seed).randint(300, 3000)
    path = tmp_path / "keel.db"
    acked = kill_after_acks([sys.executable, "-c", WRITER, str(path), str(tasks), str(TOTAL)], kill_after)
    assert len(acked) < TOTAL, "the writer finished before the kill: nothing was tested"

    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()

    async def check() -> None:
        store = SqliteStore(path)
        try:
            last = await store.last_seq("t", "log")
            records = await store.read("t", "log")
        finally:
            await store.aclose()
        assert [r.seq for r in records] == list(range(1, last + 1)), "a gap in the log"
        by_seq = {r.seq: r.data for r in records}
        for seq, task, n in acked:
            assert by_seq.get(seq) == {"task": task, "n": n, "pad": "x" * (n % 200)}, f"acknowledged {seq} lost"
        # nothing torn or duplicated: each (task, n) at most once, each task's numbers in order
        pairs = [(d["task"], d["n"]) for d in by_seq.values()]
        assert len(set(pairs)) == len(pairs)
        for t in range(tasks):
            ns = [n for task, n in pairs if task == t]
            assert ns == list(range(len(ns)))
        assert last >= max(seq for seq, _, _ in acked)

    anyio.run(check)


def test_writer_script_completes_without_a_kill(tmp_path: Path) -> None:
    """The control: the same writer, not killed, writes every record (so the test above can fail)."""
    path = tmp_path / "keel.db"
    proc = subprocess.run(
        [sys.executable, "-c", WRITER, str(path), "8", "400"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split()
    assert len(lines) == 3 * 400
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*), max(seq) FROM log").fetchone() == (400, 400)
    assert json.loads(conn.execute("SELECT data FROM log WHERE seq=1").fetchone()[0])["n"] == 0
    conn.close()


def test_two_processes_append_to_one_stream(tmp_path: Path) -> None:
    """Two writer processes on one file: every append lands once, with consecutive sequence numbers."""
    path = tmp_path / "keel.db"
    anyio.run(SqliteStore(path).aclose)  # create the schema first, so the two writers only race on appends
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), "4", "400"], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    acked = [int(line.split()[0]) for out in outputs for line in out.splitlines()]
    assert sorted(acked) == list(range(1, 801))  # no seq handed out twice, none skipped
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*), min(seq), max(seq) FROM log").fetchone() == (800, 1, 800)
    conn.close()


TRANSFERS = textwrap.dedent(
    """
    import sys, anyio
    from keel_store_sqlite import SqliteStore
    from keel.store import Append, Put
    from keel import ConflictError

    path = sys.argv[1]

    async def main():
        store = SqliteStore(path)
        await store.transact("t", [Put("acct", "a", 1000, expected_version=0), Put("acct", "b", 0, expected_version=0)])

        async def mover(t):
            n = 0
            while True:
                a, b = await store.get("t", "acct", "a"), await store.get("t", "acct", "b")
                try:
                    _, _, seq = await store.transact("t", [
                        Put("acct", "a", a.value - 1, expected_version=a.version),
                        Put("acct", "b", b.value + 1, expected_version=b.version),
                        Append("moves", [{"task": t, "n": n}]),
                    ])
                except ConflictError:
                    continue
                sys.stdout.write(f"{seq} {t} {n}\\n")
                sys.stdout.flush()
                n += 1

        async with anyio.create_task_group() as tg:
            for t in range(4):
                tg.start_soon(mover, t)

    anyio.run(main)
    """
)


def test_sigkill_during_transactions_keeps_them_whole(tmp_path: Path) -> None:
    """Transactions moving one unit between two keys and logging it: killed at a random point, the
    file holds every acknowledged transaction, and the keys and the log always agree."""
    path = tmp_path / "keel.db"
    acked = kill_after_acks([sys.executable, "-c", TRANSFERS, str(path)], random.Random(7).randint(200, 800))

    async def check() -> None:
        store = SqliteStore(path)
        try:
            a, b = await store.get("t", "acct", "a"), await store.get("t", "acct", "b")
            moves = await store.read("t", "moves")
        finally:
            await store.aclose()
        assert a is not None and b is not None
        assert a.value + b.value == 1000, "a transaction was applied in part"
        assert b.value == len(moves), "the keys and the log disagree"
        logged = {(r.data["task"], r.data["n"]): r.seq for r in moves}
        for seq, task, n in acked:
            assert logged.get((task, n)) == seq, f"acknowledged transfer {task}/{n} lost"

    anyio.run(check)
