"""Record Temporal histories of the interpreter as it is now, for the replay test.

Before changing what ``keel_runner_temporal._workflow`` does, run this with the code as it was
(the interpreter on main) and keep the files it writes next to it under a new prefix:

    python tools/record_temporal_histories.py PREFIX [FLOW ...]

(naming flows records only those), then gate the change with ``workflow.patched(...)`` until ``test_replay.py`` passes on every file:
executions that were running when the workers were upgraded replay their own history.

It lives in tools/, not in the package's tests: it records flows built with keel-triggerflow, which
keel-runner-temporal does not depend on (its own tests run with the kernel alone), and it runs in
the workspace venv, which holds every package.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio

from keel import Runtime
from keel.testing import make_host
from keel_runner_temporal import TemporalRunner, dev_server

HERE = Path(__file__).resolve().parent.parent / "contrib" / "runner-temporal" / "tests" / "histories"


def data_flow(name: str, steps: list[dict[str, Any]], **chunks: Any) -> Any:
    return SimpleNamespace(
        name=name,
        definition={"name": name, "steps": steps},
        registry=SimpleNamespace(chunks={k: (fn, None, None) for k, fn in chunks.items()}, flows={}, conditions={}),
    )


def double(ctx: Any) -> Any:
    return ctx.value * 2


def flaky(ctx: Any) -> Any:
    if ctx.attempt < 2:
        raise ValueError("first attempt fails")
    return ctx.value + 1


FLOWS = {
    "linear": (data_flow("linear", [{"to": "double"}, {"to": "flaky", "retries": 1}], double=double, flaky=flaky), 5),
    "wait": (
        data_flow(
            "wait", [{"to": "double"}, {"pause_for": "approve", "payload": "ok?"}, {"to": "double"}], double=double
        ),
        3,
    ),
}


def python_flow() -> Any:
    """A flow built in Python (TriggerFlow's runner contract): if, for_each, batch, state, a wait."""
    from keel_triggerflow import TriggerFlow

    flow = TriggerFlow("python", reducers={"seen": "list"})
    flow.to(double).set_state("seen").if_condition(lambda v: v > 4).to(double).else_condition().end_condition()
    flow.to(lambda ctx: [ctx.value, ctx.value + 1]).for_each().to(double).end_for_each()
    flow.batch(("a", lambda ctx: ctx.value[0]), ("b", lambda ctx: ctx.value[1]))
    flow.pause_for("approve", lambda v: f"ok {v}?").to(lambda ctx: {"answer": ctx.value, "state": ctx.state.to_dict()})
    return flow


def events_flow() -> Any:
    """Event chains: an emit node, ctx.emit, an ``and`` join and a collect with steps after it."""
    from keel_triggerflow import TriggerFlow

    def left(ctx: Any) -> Any:
        ctx.emit("l", ctx.value)
        return ctx.value

    flow = TriggerFlow("events")
    flow.to(double).emit("go").to(double)
    flow.when("go").to(left)
    flow.when("go").to(double).emit("r")
    flow.when(["l", "r"], mode="and").to(lambda ctx: sorted(ctx.value))
    flow.when("l").to(double).collect("both", "x")
    flow.when("r").to(double).collect("both", "y").to(lambda ctx: ctx.value["x"] + ctx.value["y"]).end()
    return flow


def reducers_flow() -> Any:
    """Reducer functions: concurrent writes from a for_each, and a set_state, merged by a worker."""
    from keel_triggerflow import TriggerFlow

    def count(ctx: Any) -> Any:
        ctx.state["total"] = ctx.value
        return ctx.value

    flow = TriggerFlow("reducers", reducers={"total": lambda old, new: (old or 0) + new})
    flow.to(lambda ctx: [1, 2, 3]).for_each().to(count).end_for_each().to(lambda ctx: 10).set_state("total")
    flow.to(lambda ctx: ctx.state["total"])
    return flow


def external_flow() -> Any:
    """Events from outside (``execution.emit``, a workflow update) while the main chain waits."""
    from keel_triggerflow import TriggerFlow

    flow = TriggerFlow("external")
    flow.to(double).pause_for("approve").to(double)
    flow.when("ping").to(double)
    return flow


def loop_flow() -> Any:
    """An event loop: each tick emits the next; it continues as new between chains (continue_after)."""
    from keel_triggerflow import TriggerFlow

    def tick(ctx: Any) -> Any:
        if ctx.value < 8:
            ctx.emit("tick", ctx.value + 1)
        return ctx.value

    flow = TriggerFlow("loop")
    flow.to(lambda ctx: 1).emit("tick")
    flow.when("tick").to(tick)
    return flow


def chunk_wait_flow() -> Any:
    """``ctx.pause_for`` inside a chunk: the attempt stops, the workflow waits, the chunk runs again."""
    from keel_triggerflow import TriggerFlow

    async def ask(ctx: Any) -> Any:
        return ctx.value + await ctx.pause_for("approve", "ok?")

    flow = TriggerFlow("chunk-wait")
    flow.to(double).to(ask)
    return flow


def chunk_timeout_flow() -> Any:
    """A chunk's ``ctx.pause_for`` that times out with ``on_timeout="fail"`` (the chunk catches it)."""
    from keel_triggerflow import TriggerFlow

    async def ask(ctx: Any) -> Any:
        try:
            return await ctx.pause_for("approve", "ok?", timeout=0.2)
        except Exception as err:
            return type(err).__name__

    flow = TriggerFlow("chunk-timeout")
    flow.to(double).to(ask)
    return flow


def overlap_flow() -> Any:
    """Event chains that always overlap (each emits the next before its last step) beside a main
    chain of several steps (continue_after)."""
    from keel_triggerflow import TriggerFlow

    def tick(ctx: Any) -> Any:
        if ctx.value < 6:
            ctx.emit("tick", ctx.value + 1)
        return ctx.value

    flow = TriggerFlow("overlap")
    flow.to(lambda ctx: 1).emit("tick").to(double).to(double).to(double).to(double)
    flow.when("tick").to(tick).to(double)
    return flow


async def record(prefix: str, only: list[str]) -> None:
    async with dev_server() as address, Runtime(make_host()) as runtime:
        runner = TemporalRunner(runtime, {"address": address, "task_queue": f"rec-{uuid.uuid4().hex[:8]}"})
        flows = dict(FLOWS)
        try:
            flows["python"] = (python_flow(), 3)
            flows["events"] = (events_flow(), 3)
            flows["reducers"] = (reducers_flow(), 0)
            flows["external"] = (external_flow(), 1)
            flows["loop"] = (loop_flow(), 0)
            flows["chunk-wait"] = (chunk_wait_flow(), 5)
            flows["chunk-timeout"] = (chunk_timeout_flow(), 5)
            flows["overlap"] = (overlap_flow(), 1)
        except ImportError:  # keel-triggerflow is not installed: data flows only
            pass
        looping = TemporalRunner(
            runtime, {"address": address, "task_queue": f"rec-{uuid.uuid4().hex[:8]}", "continue_after": 3}
        )
        for name, (flow, value) in flows.items():
            if only and name not in only:
                continue
            starter = looping if name in ("loop", "overlap") else runner
            execution = await starter.start(flow, value, execution_id=f"flow_{prefix}_{name}")
            if name == "external":
                await execution.emit("ping", 5)
            if name in ("wait", "python", "external", "chunk-wait"):
                await execution.signal("approve", 21, request_id="r1")
            with anyio.fail_after(60):
                try:
                    print(name, await execution.result())
                except Exception as err:  # a history that ends failed replays too
                    print(name, "failed:", err)
            client = await starter.client()
            history = await client.get_workflow_handle(execution.id).fetch_history()
            (HERE / f"{prefix}-{name}.json").write_text(history.to_json())
            first = history.events[0].workflow_execution_started_event_attributes.first_execution_run_id
            if name == "overlap" and first:  # its first run too: it continued as new while chains ran
                history = await client.get_workflow_handle(execution.id, run_id=first).fetch_history()
                (HERE / f"{prefix}-{name}-first.json").write_text(history.to_json())


if __name__ == "__main__":
    anyio.run(record, sys.argv[1] if len(sys.argv) > 1 else "current", sys.argv[2:])
