"""Figure 4, flow steps: linear 1,000 steps, a loop of 1,000 iterations, a fan-out of 1,000 joined,
in memory and durable (SQLite on disk). Number: run time / 1,000, in microseconds per step (the
graph is built before the clock starts; its build time is recorded as ``build_s``). Each step is a
trivial async function adding 1, a distinct function per step. Every side checks the result.

- keel: ``keel_triggerflow.TriggerFlow`` — ``.to(chunk)`` x 1,000; a loop as ``when("Tick")`` whose
  chunk emits ``Tick`` again; ``for_each()`` over 1,000 items then a join (docs/flows.md). In memory:
  ``durability="none"`` with the private in-memory runtime; durable: ``durability="sync"`` on a
  runtime whose stack says ``store = "sqlite"`` (a file in a temp folder).
- langgraph: ``StateGraph`` with 1,000 nodes chained by edges; a loop as one node with a conditional
  edge back to itself; a fan-out with ``Send`` to a worker node whose results an ``operator.add``
  reducer joins (LangGraph docs "Graph API": edges, conditional edges, Send/map-reduce). In memory:
  no checkpointer; durable: ``SqliteSaver`` on a file with ``durability="sync"`` (docs "Persistence",
  "Durable execution"). ``recursion_limit`` raised to fit 1,000 steps.
- agently: ``TriggerFlow`` ``.to(chunk)`` x 1,000; loop by ``when("Tick")`` re-emitting; fan-out by
  ``for_each().to(work).end_for_each().to(join)``; each run ``create_execution(auto_close=False)`` →
  ``async_start`` → ``async_close`` (Agently docs "TriggerFlow"; auto_close=False avoids the 10 s idle
  close, reference §5). Agently has no per-step durable store, so it has no durable rows.

Every side first runs one untimed execution of the same graph (warm-up: imports, lazily built
models, the store's files), collects the garbage (``gc.collect()``), then times a second one: the
figure is the per-step cost of a running system, not of a process's first call. (Results before
2026-11-26T14:00Z timed the first execution.)

Targets (issue 8): in memory ≤ 1/10 of both peers' per-step time; durable ≤ 1/10 of LangGraph's
SqliteSaver with durability="sync".
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import flush_floor_side
from harness import Figure, Side, main_for, ratio_at_most

ROUNDS = 3
N = 1000

KEEL = """
import asyncio, gc, tempfile, pathlib
try:
    import keel
    from keel_triggerflow import TriggerFlow
except ImportError as err:
    not_built(f"{err}")
N, SHAPE, DURABLE = ARGS["n"], ARGS["shape"], ARGS["durable"]

def value_of(ctx):
    return ctx.input

def make(i):
    async def step(ctx):
        return (value_of(ctx) or 0) + 1
    step.__name__ = f"step{i}"
    return step

def build():
    flow = TriggerFlow(f"bench-{SHAPE}", durability="sync" if DURABLE else "none")
    if SHAPE == "linear":
        chain = flow.to(make(0))
        for i in range(1, N):
            chain = chain.to(make(i))
    elif SHAPE == "loop":
        async def start(ctx):
            await ctx.async_emit("Tick", 0)
        async def tick(ctx):
            v = value_of(ctx) + 1
            if v < N:
                await ctx.async_emit("Tick", v)
            else:
                ctx.set_result(v)
            return v
        flow.to(start)
        flow.when("Tick").to(tick)
    else:
        async def seed(ctx):
            return list(range(N))
        async def work(ctx):
            return value_of(ctx) + 1
        async def join(ctx):
            return sum(value_of(ctx))
        flow.to(seed).for_each().to(work).end_for_each().to(join)
    return flow

async def main():
    t0 = _time.perf_counter()
    flow = build()
    build_s = _time.perf_counter() - t0
    folder = pathlib.Path(tempfile.mkdtemp())
    (folder / "keel.toml").write_text(
        f'[store]\\ndriver = "sqlite"\\npath = "{folder}/keel.db"\\n' if DURABLE else 'store = "memory"\\n'
    )
    async with keel.Runtime.open(folder / "keel.toml") as rt:
        await flow.create_execution(rt).run(0)  # warm-up, untimed
        gc.collect()
        execution = flow.create_execution(rt)
        t0 = _time.perf_counter()
        await execution.run(0)
        elapsed = _time.perf_counter() - t0
        result = await execution.result()
    expected = N if SHAPE != "fanout" else sum(range(1, N + 1))
    assert result == expected, repr(result)[:200]
    emit(elapsed * 1e6 / N, build_s=build_s)
asyncio.run(main())
"""

LANGGRAPH = """
import gc, operator, sqlite3, tempfile, pathlib
from typing import Annotated, TypedDict
from langgraph.graph import StateGraph, START, END
from langgraph.types import Send
N, SHAPE, DURABLE = ARGS["n"], ARGS["shape"], ARGS["durable"]

class State(TypedDict):
    x: int
    results: Annotated[list, operator.add]

def make(i):
    def step(state: State):
        return {"x": state["x"] + 1}
    step.__name__ = f"step{i}"
    return step

def build():
    g = StateGraph(State)
    if SHAPE == "linear":
        for i in range(N):
            g.add_node(f"n{i}", make(i))
        g.add_edge(START, "n0")
        for i in range(1, N):
            g.add_edge(f"n{i-1}", f"n{i}")
        g.add_edge(f"n{N-1}", END)
    elif SHAPE == "loop":
        g.add_node("step", make(0))
        g.add_edge(START, "step")
        g.add_conditional_edges("step", lambda s: "step" if s["x"] < N else END, ["step", END])
    else:
        def fan(state: State):
            return {}
        def work(item: dict):
            return {"results": [item["i"] + 1]}
        def join(state: State):
            return {"x": sum(state["results"])}
        g.add_node("fan", fan)
        g.add_node("work", work)
        g.add_node("join", join)
        g.add_edge(START, "fan")
        g.add_conditional_edges("fan", lambda s: [Send("work", {"i": i}) for i in range(N)], ["work"])
        g.add_edge("work", "join")
        g.add_edge("join", END)
    return g

t0 = _time.perf_counter()
graph = build()
config = {"recursion_limit": 3 * N + 10, "configurable": {"thread_id": "bench"}}
kwargs = {}
if DURABLE:
    from langgraph.checkpoint.sqlite import SqliteSaver
    folder = pathlib.Path(tempfile.mkdtemp())
    conn = sqlite3.connect(str(folder / "lg.db"), check_same_thread=False)
    app = graph.compile(checkpointer=SqliteSaver(conn))
    kwargs["durability"] = "sync"
else:
    app = graph.compile()
build_s = _time.perf_counter() - t0
warm = {**config, "configurable": {"thread_id": "warm-up"}}
app.invoke({"x": 0, "results": []}, warm, **kwargs)  # warm-up, untimed
gc.collect()
t0 = _time.perf_counter()
out = app.invoke({"x": 0, "results": []}, config, **kwargs)
elapsed = _time.perf_counter() - t0
expected = N if SHAPE != "fanout" else sum(range(1, N + 1))
assert out["x"] == expected, out["x"]
emit(elapsed * 1e6 / N, build_s=build_s)
"""

AGENTLY = """
import asyncio, gc
from agently import TriggerFlow
N, SHAPE = ARGS["n"], ARGS["shape"]

def make(i):
    async def step(d):
        return (d.input or 0) + 1
    step.__name__ = f"step{i}"
    return step

def build():
    flow = TriggerFlow(name=f"bench-{SHAPE}")
    if SHAPE == "linear":
        chain = flow.to(make(0))
        for i in range(1, N):
            chain = chain.to(make(i))
        async def done(d):
            d.state.set("result", d.input)
        chain.to(done)
    elif SHAPE == "loop":
        async def start(d):
            await d.async_emit("Tick", 0)
        async def tick(d):
            v = d.input + 1
            if v < N:
                await d.async_emit("Tick", v)
            else:
                d.state.set("result", v)
        flow.to(start)
        flow.when("Tick").to(tick)
    else:
        async def seed(d):
            return list(range(N))
        async def work(d):
            return d.input + 1
        async def join(d):
            d.state.set("result", sum(d.input))
        flow.to(seed).for_each().to(work).end_for_each().to(join)
    return flow

async def main():
    t0 = _time.perf_counter()
    flow = build()
    build_s = _time.perf_counter() - t0
    warm = flow.create_execution(auto_close=False)  # warm-up, untimed
    await warm.async_start(0)
    await warm.async_close(timeout=120)
    gc.collect()
    execution = flow.create_execution(auto_close=False)
    t0 = _time.perf_counter()
    await execution.async_start(0)
    snapshot = await execution.async_close(timeout=120)
    elapsed = _time.perf_counter() - t0
    expected = N if SHAPE != "fanout" else sum(range(1, N + 1))
    assert snapshot.get("result") == expected, snapshot
    emit(elapsed * 1e6 / N, build_s=build_s)
asyncio.run(main())
"""


def figures() -> list[Figure]:
    figs = []
    for shape, words in (
        ("linear", "linear chain of 1,000 steps"),
        ("loop", "loop of 1,000 iterations"),
        ("fanout", "fan-out of 1,000 parallel branches, joined"),
    ):
        for durable in (False, True):
            mode = "durable" if durable else "memory"
            sides = [
                Side(
                    "keel",
                    "keel",
                    code=KEEL,
                    how="keel_triggerflow.TriggerFlow, durability=" + ('"sync", SQLite store' if durable else '"none"'),
                ),
                Side(
                    "langgraph",
                    "langgraph",
                    code=LANGGRAPH,
                    how="StateGraph; " + ('SqliteSaver on disk, durability="sync"' if durable else "no checkpointer"),
                ),
            ]
            if durable and shape == "linear":  # sync: one flush per step, since each waits for the last
                sides.append(flush_floor_side())
            if not durable:
                sides.append(
                    Side("agently", "agently", code=AGENTLY, how="TriggerFlow, create_execution(auto_close=False)")
                )
            rules = [ratio_at_most("langgraph", 0.1)] + ([] if durable else [ratio_at_most("agently", 0.1)])
            target = (
                'durable ≤ 1/10 of LangGraph\'s SqliteSaver with durability="sync" (issue 8)'
                if durable
                else "in memory ≤ 1/10 of both peers' per-step time (issue 8)"
            )
            figs.append(
                Figure(
                    figure=f"flow.{shape}.{mode}",
                    group="4. flow steps",
                    title=f"{words}, {'durable (SQLite on disk)' if durable else 'in memory'}",
                    unit="us/step",
                    sides=sides,
                    target=target,
                    rules=rules,
                    rounds=ROUNDS,
                    args={"n": N, "shape": shape, "durable": durable},
                    notes=[
                        "warm-up: every side runs one untimed execution of the same graph first, gc.collect(), then times a second",
                        *(["agently: no durable per-step store; not in durable rows"] if durable else []),
                    ],
                )
            )
    return figs


def main() -> None:
    main_for(figures)


if __name__ == "__main__":
    main()
