"""Finished executions are freed by reference counting, not left for the cyclic garbage collector.

Each agent execution used to leave about 150 objects in reference cycles (the execution, its
events, its messages: all hanging off one cycle, execution -> meter -> the execution's bound
``emit``). Only a full collection freed them, and a full collection over a busy heap stalls the
event loop (40 to 170 ms on the bench machine, issue 15). These tests run executions with the
collector disabled, let the registry forget them, and count what a collection then finds.

The bound: fewer than one object per execution on average (``N`` executions, at most ``N``
objects). A regression that puts any per-execution object back in a cycle brings every object
reachable from it along (dozens at least), so the bound fails it by far; it leaves room for a few
objects of the runtime's own that a collection may find, which are not per execution.
"""

from __future__ import annotations

import gc
import json
import traceback
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import keel
from keel.testing import Reply, ScriptedModel, make_host

N = 40  # executions per measurement
REPORT = {"title": (str, "a short title"), "priority": (int, "1 to 5"), "tags": (list[str], "keywords")}
ANSWER = json.dumps({"title": "Quarterly report", "priority": 2, "tags": ["revenue", "costs"]})


@keel.action(risk="read", tags=["cycles"])
def look_up(name: str) -> dict[str, str]:
    """Find a record."""
    return {"name": name, "country": "NO"}


@keel.action(risk="read", tags=["cycles"])
def always_fails(name: str) -> str:
    """Fail (a sync handler: it runs in a worker thread)."""
    raise ValueError(f"no record for {name}")


@contextmanager
def collector_off() -> Iterator[list[int]]:
    """Disable the collector for the block; afterwards ``found[0]`` is what a full collection found."""
    found: list[int] = []
    gc.collect()
    gc.disable()
    try:
        yield found
        found.append(gc.collect())
    finally:
        gc.enable()


async def cyclic_objects(runtime: keel.Runtime, one: Callable[[], Awaitable[Any]]) -> int:
    """Objects in reference cycles left by ``N`` executions of ``one``, once the registry forgot them."""
    runtime.executions.keep_finished = 1  # forget each finished execution (the newest one stays)
    for _ in range(3):  # warm-up: lazily built models, caches
        await one()
    with collector_off() as found:
        for _ in range(N + 2):  # two more push the measured ones out of the registry
            await one()
    return found[0]


def tool_round(action: str) -> Callable[[keel.ModelRequest], str | Reply]:
    def respond(request: keel.ModelRequest) -> str | Reply:
        if request.messages[-1].role == "tool":
            return ANSWER
        return Reply(tool_calls=[keel.ToolCall(id="c1", name=action, arguments={"name": "Nordlys"})])

    return respond


async def test_structured_output_executions_leave_no_cycles(keel_runtime: keel.Runtime) -> None:
    # the workload of bench/agent_overhead.py: one structured answer, read as data and as events
    keel_runtime.use_model(ScriptedModel(lambda request: ANSWER, chunks=16))
    agent = keel.Agent("report", "Summarise the report.", output=REPORT)

    async def one() -> None:
        execution = await agent.start("Summarise this report.", runtime=keel_runtime)
        data = await execution.result()
        assert data.priority == 2
        assert [e.kind async for e in execution.events()][-1] == "execution.completed"

    found = await cyclic_objects(keel_runtime, one)
    assert found <= N, f"{found} objects in cycles after {N} executions (about 150 each before)"


async def test_tool_rounds_leave_no_cycles_even_when_the_action_fails(keel_runtime: keel.Runtime) -> None:
    # a sync action's exception comes back through anyio's worker-thread frame, which holds the
    # future that holds the exception: kept with its traceback, that was a cycle holding the execution
    for spec in (look_up, always_fails):
        keel_runtime.actions.add(spec)
    for action in ("look_up", "always_fails"):
        keel_runtime.use_model(ScriptedModel(tool_round(action), chunks=16))
        found = await cyclic_objects(keel_runtime, tool_execution(keel_runtime, action))
        assert found <= N, f"{action}: {found} objects in cycles after {N} executions"


def tool_execution(runtime: keel.Runtime, action: str) -> Callable[[], Awaitable[None]]:
    agent = keel.Agent("records", "Find the record.", output=REPORT, actions=["tag:cycles"])

    async def one() -> None:
        execution = await agent.start("Nordlys", runtime=runtime)
        await execution.result()
        kinds = [e.kind async for e in execution.events()]
        assert ("action.failed" in kinds) == (action == "always_fails")

    return one


async def frames_of_each_raise(result: Callable[[], Awaitable[Any]], times: int = 4) -> list[int]:
    counts = []
    for _ in range(times):
        try:
            await result()
        except Exception as err:
            counts.append(len(traceback.extract_tb(err.__traceback__)))
    return counts


class Failing(keel.BaseExecution):
    async def body(self) -> Any:
        raise ValueError("the ledger is closed")


async def test_result_raises_a_kept_error_again_without_growing_its_traceback(keel_runtime: keel.Runtime) -> None:
    # raising one exception object again adds the raiser's frames to its traceback: a failed
    # execution polled for its result (a UI, a gateway client) grew it by three frames a call
    def model_down(request: keel.ModelRequest) -> str:
        raise RuntimeError("the model is down")

    keel_runtime.use_model(ScriptedModel(model_down))
    agent = await keel.Agent("report", "Summarise.", output=REPORT).start("x", runtime=keel_runtime)
    handwritten = Failing(keel_runtime).launch()
    for execution in (agent, handwritten):
        counts = await frames_of_each_raise(execution.result)
        assert len(set(counts)) == 1, counts


async def test_a_closed_runtime_lets_go_of_the_executions_it_kept() -> None:
    # each execution refers to its runtime, which kept every finished one in runtime.executions:
    # once closed, the runtime and all of them were one cycle for a full collection to find
    # (~80 objects per execution). The runtime's own few hundred objects do not grow with the
    # executions, so the difference between a short and a long run is the per-execution part.
    agent = keel.Agent("report", "Summarise the report.", output=REPORT)

    async def run(n: int) -> int:
        with collector_off() as found:
            async with keel.Runtime(make_host(), keel.Stack()) as runtime:
                runtime.use_model(ScriptedModel(lambda request: ANSWER, chunks=16))
                for _ in range(n):
                    execution = await agent.start("Summarise this report.", runtime=runtime)
                    await execution.result()
                assert len(runtime.executions.list()) == n
            assert runtime.executions.list() == []
            del runtime, execution
        return found[0]

    await run(5)  # warm-up
    short, long = await run(10), await run(10 + N)
    assert long - short <= N, f"{long - short} more objects in cycles for {N} more executions"
