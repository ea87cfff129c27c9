"""Figure 6, checkpoint size: bytes stored per step for a linear flow of 1,000 trivial steps.

Workload: the flow of figure 4 (linear, durable, SQLite on disk) at 1,000 steps and at 100 steps,
each in a fresh SQLite file. Number: bytes the SQLite file holds after the run (WAL checkpointed,
free pages excluded: ``(page_count - freelist_count) * page_size``) divided by the step count — the
same measure for both sides, SQLite's own overhead included. ``growth`` = bytes/step at 1,000 steps
÷ bytes/step at 100 steps: 1 means the cost of a step does not grow with the size of the graph.

- keel: ``keel_triggerflow`` with ``durability="sync"`` on the ``sqlite`` store (history records).
- langgraph: ``SqliteSaver`` with ``durability="sync"`` (a checkpoint per super-step; the issue
  measured ~71 kB per checkpoint, 73 MB per run). LangGraph's blob bytes (checkpoints + writes
  tables) are recorded beside it as ``blob_bytes_per_step``.

Target (issue 8): bytes per step constant in graph size (rule: Keel's growth ≤ 1.2).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Figure, Side, extra_at_most, main_for

ROUNDS = 2  # the sizes are deterministic; the second round checks that

SIZE = """
import sqlite3
def stored_bytes(path):
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    return (pages - free) * size
"""

KEEL = (
    SIZE
    + """
import asyncio, tempfile, pathlib
try:
    import keel
    from keel_triggerflow import TriggerFlow
except ImportError as err:
    not_built(f"{err}")
def make(i):
    async def step(ctx):
        return (ctx.input or 0) + 1
    step.__name__ = f"step{i}"
    return step
async def per_step(n):
    flow = TriggerFlow(f"size-{n}", durability="sync")
    chain = flow.to(make(0))
    for i in range(1, n):
        chain = chain.to(make(i))
    folder = pathlib.Path(tempfile.mkdtemp())
    (folder / "keel.toml").write_text(f'[store]\\ndriver = "sqlite"\\npath = "{folder}/keel.db"\\n')
    async with keel.Runtime.open(folder / "keel.toml") as rt:
        execution = flow.create_execution(rt)
        await execution.run(0)
        assert await execution.result() == n
    return stored_bytes(str(folder / "keel.db")) / n
small = asyncio.run(per_step(100))
big = asyncio.run(per_step(ARGS["steps"]))
emit(big, growth=big / small, per_step_at_100=small)
"""
)

LANGGRAPH = (
    SIZE
    + """
import tempfile, pathlib
from typing import TypedDict
from langgraph.graph import StateGraph, START, END
from langgraph.checkpoint.sqlite import SqliteSaver
class State(TypedDict):
    x: int
def make(i):
    def step(state: State):
        return {"x": state["x"] + 1}
    step.__name__ = f"step{i}"
    return step
def per_step(n):
    g = StateGraph(State)
    for i in range(n):
        g.add_node(f"n{i}", make(i))
    g.add_edge(START, "n0")
    for i in range(1, n):
        g.add_edge(f"n{i-1}", f"n{i}")
    g.add_edge(f"n{n-1}", END)
    path = str(pathlib.Path(tempfile.mkdtemp()) / "lg.db")
    conn = sqlite3.connect(path, check_same_thread=False)
    app = g.compile(checkpointer=SqliteSaver(conn))
    out = app.invoke({"x": 0}, {"recursion_limit": 3 * n + 10, "configurable": {"thread_id": "t"}}, durability="sync")
    assert out["x"] == n
    blobs = conn.execute("SELECT COALESCE(SUM(LENGTH(checkpoint) + LENGTH(metadata)), 0) FROM checkpoints").fetchone()[0]
    blobs += conn.execute("SELECT COALESCE(SUM(LENGTH(value)), 0) FROM writes").fetchone()[0]
    checkpoints = conn.execute("SELECT COUNT(*) FROM checkpoints").fetchone()[0]
    conn.close()
    return stored_bytes(path) / n, blobs / n, checkpoints
small, _, _ = per_step(100)
big, blob, checkpoints = per_step(ARGS["steps"])
emit(big, growth=big / small, per_step_at_100=small, blob_bytes_per_step=blob, checkpoints=checkpoints)
"""
)


def figures() -> list[Figure]:
    return [
        Figure(
            figure="checkpoint_size",
            group="6. checkpoint size",
            title="bytes stored per step, linear durable flow of 1,000 steps (SQLite file)",
            unit="bytes/step",
            target="bytes per step constant in graph size (issue 8)",
            rules=[extra_at_most("growth", 1.2)],
            rounds=ROUNDS,
            args={"steps": 1000},
            sides=[
                Side("keel", "keel", code=KEEL, how='TriggerFlow durability="sync", sqlite store: history records'),
                Side(
                    "langgraph",
                    "langgraph",
                    code=LANGGRAPH,
                    how='SqliteSaver, durability="sync": one checkpoint per super-step',
                ),
            ],
            notes=["growth (bytes/step at 1,000 steps ÷ at 100 steps) is in each side's extras in the JSON"],
        )
    ]


def main() -> None:
    main_for(figures)


if __name__ == "__main__":
    main()
