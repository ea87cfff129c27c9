"""Figure 23, durable executions at scale: start-up adoption, idle CPU, listing the waiting ones.

The workload (built once per machine, then reused from the temp folder): a SQLite store holding
10,000 TriggerFlow executions waiting for an approval (100 of them with a timed wait, a day away)
and 2,000 completed executions started after them, all run by the real engine.

- ``durable.adopt_10k``: a fresh process opens the store and calls ``runtime.adopt_executions()``
  (what ``keel serve`` does at start-up: resume the running executions whose owner is gone, arm
  one timer for the timed waits). Number: ms of wall clock for the call; CPU ms beside it. Target
  (issue 23): < 1 s. Reference side "sqlite floor": the same reads as bare SQL on the same file
  (the ``running`` status keys and the deadline keys), with the sqlite3 module. No peer: LangGraph
  has no start-up step (an interrupted thread is inert until invoked), so there is nothing to
  compare; the floor says what reading the same keys costs at least.
- ``durable.idle_cpu``: after that adoption, CPU time of the process over 3 s of idling, in ms of
  CPU per second. Target: ~0 (here: < 5 ms/s, half a percent of a core). Reference side "bare
  anyio": a process that only sleeps 3 s in anyio.
- ``durable.ls_waiting_last20``: what ``keel flow ls --status waiting --last 20`` does with the
  store once it is open: the index version check, the last 20 ``waiting`` keys and their rows, the
  table's lines. Number: ms. Target (issue 23): < 100 ms. In the extras: the whole command run
  in-process a second time (``keel.cli.main``: stack, plugin discovery, runtime and store open
  included; imports done) and the cold command (interpreter start-up and imports included: the
  start-up figure's business, issue 14). Peer: LangGraph 1.2's SqliteSaver holding the same workload (10,000
  threads interrupted at an ``interrupt()`` node, then 2,000 completed threads), listing the 20
  most recent interrupted threads the way its API allows: ``saver.list(None)`` newest first, one
  latest checkpoint per thread, interrupted when its pending writes hold ``__interrupt__``
  (https://langchain-ai.github.io/langgraph/reference/checkpoints/; there is no status index).
  Reference side "sqlite floor": ``SELECT ... WHERE status = 'waiting' ORDER BY created DESC LIMIT
  20`` on a bare 12,000-row table with an index on (status, created).

- ``durable.sigterm_exit``: the restart drill (tests/test_serve_restart_drill.py: a real ``keel
  serve`` on SQLite, flows with a fan-out, keyed effects and a wait) with ``KEEL_BENCH_DRILL_KILLS``
  kill points (default 20; the record of issue 23 ran 50), SIGTERM and SIGKILL mixed at random.
  Number: the slowest SIGTERM-to-exit, seconds, with ``keel serve --grace 5``; every measured exit
  time and the drill's counts (executions, keyed effects applied once, steps re-run after a kill)
  are in the extras. Target (issue 23): within the grace period plus 1 s. The test itself only
  fails on a hang (grace + 30 s); the times live here.

CPU and wall clock are both recorded; read wall-clock figures with the load average in ``machine``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Figure, Side, keel_below, main_for

ROUNDS = 3
WAITING, TIMED, COMPLETED = 10_000, 100, 2_000

# Builds (once) and opens the Keel workload; every Keel side starts with it.
KEEL_STORE = """
try:
    import anyio, pathlib, tempfile, os, resource
    import keel
    from keel.testing import make_host
    from keel_store_sqlite import plugin as sqlite_plugin
    from keel_triggerflow import TriggerFlow, plugin as tf_plugin
    from keel_triggerflow import _history
except ImportError as err:
    not_built(f"{err}")
if not hasattr(_history, "due_waits"):
    not_built("no deadline index in this keel-triggerflow")
W, T, C = ARGS["waiting"], ARGS["timed"], ARGS["completed"]
folder = pathlib.Path(tempfile.gettempdir()) / f"keel-bench-durable-{W}-{T}-{C}-v{_history.INDEX_VERSION}"
folder.mkdir(exist_ok=True)
(folder / "keel.toml").write_text(f'[store]\\ndriver = "sqlite"\\npath = "{folder / "store.db"}"\\n')

approval = TriggerFlow("approval")
approval.to(lambda ctx: {"draft": ctx.value}).pause_for("approve").to(lambda ctx: ctx.value)
timed = TriggerFlow("timed")
timed.to(lambda ctx: ctx.value).pause_for("approve", timeout=86400).to(lambda ctx: ctx.value)
done = TriggerFlow("done")
done.to(lambda ctx: ctx.value)

def new_runtime():
    runtime = keel.Runtime(make_host(sqlite_plugin, tf_plugin), keel.load_stack(folder / "keel.toml"))
    for flow in (approval, timed, done):
        runtime.add(flow)
    return runtime

async def build():
    async with new_runtime() as runtime:
        async def run(flow, i):
            await flow.create_execution(runtime).run(i)
        plan = [approval] * (W - T) + [timed] * T
        for start in range(0, len(plan), 200):
            async with anyio.create_task_group() as tg:
                for i, flow in enumerate(plan[start:start + 200]):
                    tg.start_soon(run, flow, start + i)
        for start in range(0, C, 200):
            async with anyio.create_task_group() as tg:
                for i in range(start, min(C, start + 200)):
                    tg.start_soon(run, done, i)
        rows = await _history.rows_by_status(runtime.store(), "default", "waiting")
        assert len(rows) == W, len(rows)
        assert len(await _history.due_waits(runtime.store(), "default")) == T

if not (folder / "built").exists():
    anyio.run(build)
    (folder / "built").write_text("ok")
os.chdir(folder)
"""

ADOPT = (
    KEEL_STORE
    + """
async def main():
    async with new_runtime() as runtime:
        runtime.store()
        await runtime.store().list_keys("default", "nothing")  # the store is open: not timed
        cpu0, t0 = _time.process_time(), _time.perf_counter()
        await runtime.adopt_executions()
        ms, cpu_ms = (_time.perf_counter() - t0) * 1000, (_time.process_time() - cpu0) * 1000
        idle0 = _time.process_time()
        await anyio.sleep(3)
        idle = (_time.process_time() - idle0) * 1000 / 3
        return ms, cpu_ms, idle

ms, cpu_ms, idle = anyio.run(main)
emit(ARGS["pick"] == "idle" and idle or ms, adoption_ms=round(ms, 2), adoption_cpu_ms=round(cpu_ms, 2),
     idle_cpu_ms_per_s=round(idle, 3))
"""
)

ADOPT_FLOOR = (
    KEEL_STORE
    + """
import sqlite3
db = sqlite3.connect(folder / "store.db")
db.execute("SELECT count(*) FROM kv WHERE tenant = 'none'").fetchall()  # open, as Keel's store is: not timed
t0 = _time.perf_counter()
keys = [
    r[0]
    for low, high in (("by:running:", "by:running;"), ("due:", "due;"))
    for r in db.execute(
        "SELECT key FROM kv WHERE tenant = 'default' AND namespace = 'triggerflow' AND key >= ? AND key < ?",
        (low, high),
    )
]
ms = (_time.perf_counter() - t0) * 1000
assert len(keys) == ARGS["timed"], len(keys)
emit(ms, keys=len(keys))
"""
)

IDLE_FLOOR = """
import anyio
async def main():
    await anyio.sleep(0.1)
    idle0 = _time.process_time()
    await anyio.sleep(3)
    return (_time.process_time() - idle0) * 1000 / 3
emit(anyio.run(main))
"""

LS = (
    KEEL_STORE
    + """
import subprocess, io, contextlib
from keel.cli import main as keel_main
args = ["flow", "ls", "--status", "waiting", "--last", "20"]
env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
env["KEEL_LOAD_PLUGINS"] = os.environ["KEEL_LOAD_PLUGINS"] = "sqlite,triggerflow"

def invoke():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            keel_main(args)
        except SystemExit as exit:
            assert not exit.code, exit.code
    return out.getvalue()

invoke()  # imports and caches: not timed
t0 = _time.perf_counter()
output = invoke()  # the whole command again: stack, plugin discovery, store open, query, table
command_ms = (_time.perf_counter() - t0) * 1000
assert len([l for l in output.splitlines() if "waiting" in l]) == 20, output

async def listing():
    async with new_runtime() as runtime:
        store = runtime.store()
        await store.list_keys("default", "nothing")  # open: not timed (as the peer's connection)
        t0 = _time.perf_counter()
        await _history.ensure_index(store, "default")
        rows = await _history.rows_by_status(store, "default", "waiting", last=20)
        table = [f"{r['id']}  {r.get('flow')}  {r['status']}  {r.get('created')}" for r in rows]
        ms = (_time.perf_counter() - t0) * 1000
        assert len(table) == 20
        return ms

ms = anyio.run(listing)
keel_bin = pathlib.Path(_sys.executable).parent / "keel"
t0 = _time.perf_counter()
cold = subprocess.run([str(keel_bin), *args], env=env, capture_output=True, text=True)
cold_ms = (_time.perf_counter() - t0) * 1000
assert cold.returncode == 0, cold.stderr
emit(ms, command_in_process_ms=round(command_ms, 1), cold_command_ms=round(cold_ms, 1))
"""
)

LANGGRAPH_LS = """
try:
    import pathlib, tempfile, sqlite3
    from typing import TypedDict
    from langgraph.graph import StateGraph, START, END
    from langgraph.types import interrupt
    from langgraph.checkpoint.sqlite import SqliteSaver
except ImportError as err:
    raise SystemExit(f"langgraph venv incomplete: {err}")
W, C = ARGS["waiting"], ARGS["completed"]
path = pathlib.Path(tempfile.gettempdir()) / f"keel-bench-durable-langgraph-{W}-{C}.db"

class State(TypedDict):
    value: object

def draft(state):
    return {"value": {"draft": state["value"]}}

def gate(state):
    return {"value": interrupt("approve?")}

def build(saver):
    waiting = StateGraph(State)
    waiting.add_node("draft", draft)
    waiting.add_node("gate", gate)
    waiting.add_edge(START, "draft")
    waiting.add_edge("draft", "gate")
    waiting.add_edge("gate", END)
    finished = StateGraph(State)
    finished.add_node("draft", draft)
    finished.add_edge(START, "draft")
    finished.add_edge("draft", END)
    return waiting.compile(checkpointer=saver), finished.compile(checkpointer=saver)

if not path.exists():
    building = path.with_suffix(".building")
    with SqliteSaver.from_conn_string(str(building)) as saver:
        waiting, finished = build(saver)
        for i in range(W):
            waiting.invoke({"value": i}, {"configurable": {"thread_id": f"w{i}"}})
        for i in range(C):
            finished.invoke({"value": i}, {"configurable": {"thread_id": f"c{i}"}})
    building.rename(path)

with SqliteSaver.from_conn_string(str(path)) as saver:
    next(iter(saver.list(None, limit=1)))  # connection open, modules loaded: not timed
    t0 = _time.perf_counter()
    seen, interrupted = set(), []
    for item in saver.list(None):
        thread = item.config["configurable"]["thread_id"]
        if thread in seen:
            continue
        seen.add(thread)
        if any(write[1] == "__interrupt__" for write in item.pending_writes or ()):
            interrupted.append(thread)
            if len(interrupted) == 20:
                break
    ms = (_time.perf_counter() - t0) * 1000
assert len(interrupted) == 20, interrupted
emit(ms, threads_read=len(seen))
"""

LS_FLOOR = """
import sqlite3, random
db = sqlite3.connect(":memory:")
db.execute("CREATE TABLE executions (id TEXT PRIMARY KEY, flow TEXT, status TEXT, created REAL, updated REAL)")
db.execute("CREATE INDEX by_status ON executions (status, created)")
rows = [(f"w{i}", "approval", "waiting", float(i), float(i)) for i in range(ARGS["waiting"])]
rows += [(f"c{i}", "done", "completed", float(ARGS["waiting"] + i), 0.0) for i in range(ARGS["completed"])]
db.executemany("INSERT INTO executions VALUES (?, ?, ?, ?, ?)", rows)
db.commit()
t0 = _time.perf_counter()
found = db.execute(
    "SELECT id, flow, status, created, updated FROM executions WHERE status = 'waiting' ORDER BY created DESC LIMIT 20"
).fetchall()
ms = (_time.perf_counter() - t0) * 1000
assert len(found) == 20
emit(ms)
"""

DRILL = """
import subprocess, tempfile, pathlib, os
record = pathlib.Path(tempfile.mkdtemp()) / "drill.json"
env = {**os.environ, "KEEL_DRILL_KILLS": str(ARGS["kills"]), "KEEL_DRILL_RECORD": str(record)}
root = pathlib.Path(ARGS["root"])
done = subprocess.run(
    [_sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "tests/test_serve_restart_drill.py"],
    cwd=root, env=env, capture_output=True, text=True,
)
if done.returncode != 0:
    raise SystemExit("the drill failed:\\n" + done.stdout[-3000:])
data = _json.loads(record.read_text())
emit(max(data["sigterm_exit_seconds"]), **data)
"""

ARGS = {"waiting": WAITING, "timed": TIMED, "completed": COMPLETED}
DRILL_KILLS = int(os.environ.get("KEEL_BENCH_DRILL_KILLS", "20"))
GRACE = 5.0  # tests/test_serve_restart_drill.py's GRACE


def figures() -> list[Figure]:
    group = "23. durable executions at scale"
    return [
        Figure(
            figure="durable.adopt_10k",
            group=group,
            title=f"start-up adoption with {WAITING:,} waiting executions ({TIMED} timed) on SQLite",
            unit="ms",
            sides=[
                Side("keel", "keel", code=ADOPT, how="runtime.adopt_executions() in a fresh process", timeout=1800),
                Side(
                    "sqlite floor",
                    "keel",
                    code=ADOPT_FLOOR,
                    how="the same keys (running status keys, deadline keys) read with bare sqlite3",
                    reference=True,
                    timeout=1800,
                ),
            ],
            target="< 1 s (issue 23)",
            rules=[keel_below(1000)],
            rounds=ROUNDS,
            args={**ARGS, "pick": "adopt"},
        ),
        Figure(
            figure="durable.idle_cpu",
            group=group,
            title=f"CPU while idle after adopting {WAITING:,} waiting executions",
            unit="ms CPU/s",
            sides=[
                Side("keel", "keel", code=ADOPT, how="process_time over 3 s of idling after adoption", timeout=1800),
                Side("bare anyio", "keel", code=IDLE_FLOOR, how="a process that only sleeps 3 s", reference=True),
            ],
            target="~0 (issue 23): < 5 ms of CPU per second",
            rules=[keel_below(5)],
            rounds=ROUNDS,
            args={**ARGS, "pick": "idle"},
        ),
        Figure(
            figure="durable.sigterm_exit",
            group=group,
            title=f"keel serve: slowest SIGTERM-to-exit over a {DRILL_KILLS}-kill restart drill (grace {GRACE:g} s)",
            unit="s",
            sides=[
                Side(
                    "keel",
                    "keel",
                    code=DRILL,
                    how="tests/test_serve_restart_drill.py with KEEL_DRILL_KILLS and KEEL_DRILL_RECORD",
                    timeout=3600,
                )
            ],
            target="within the grace period + 1 s (issue 23)",
            rules=[keel_below(GRACE + 1)],
            rounds=1,
            args={"kills": DRILL_KILLS, "root": str(Path(__file__).resolve().parent.parent)},
        ),
        Figure(
            figure="durable.ls_waiting_last20",
            group=group,
            title=f"keel flow ls --status waiting --last 20 over {WAITING:,} waiting + {COMPLETED:,} completed",
            unit="ms",
            sides=[
                Side(
                    "keel",
                    "keel",
                    code=LS,
                    how="ensure_index + rows_by_status(last=20) + the lines, store open; whole command in extras",
                    timeout=1800,
                ),
                Side(
                    "langgraph",
                    "langgraph",
                    code=LANGGRAPH_LS,
                    how="SqliteSaver.list(None) newest first; a thread is interrupted when its latest "
                    "checkpoint's pending writes hold __interrupt__ (no status index in its API)",
                    timeout=3600,
                ),
                Side(
                    "sqlite floor", "keel", code=LS_FLOOR, how="bare SQL on an indexed 12,000-row table", reference=True
                ),
            ],
            target="< 100 ms (issue 23)",
            rules=[keel_below(100)],
            rounds=ROUNDS,
            args=dict(ARGS),
        ),
    ]


if __name__ == "__main__":
    main_for(figures)
