"""The chained builder's verbs, run in memory."""

from __future__ import annotations

import re
from typing import Any

import anyio
import pytest
from pydantic import BaseModel

from keel import ExecutionStatus
from keel_triggerflow import BranchError, FlowDefinitionError, StepFailed, TriggerFlow


async def inc(ctx: Any) -> int:
    return (ctx.value or 0) + 1


async def double(ctx: Any) -> int:
    return ctx.value * 2


async def test_linear_chain_returns_the_last_value() -> None:
    flow = TriggerFlow("linear")
    flow.to(inc).to(double).to(inc)
    assert await flow.run(1) == 5


async def test_the_same_chunk_at_several_places_never_loops() -> None:
    calls: list[str] = []

    async def step(ctx: Any) -> int:
        calls.append(ctx.path)
        return ctx.value + 1

    flow = TriggerFlow("reuse")
    flow.to(step).to(step).to(step)
    assert await flow.run(0) == 3
    assert calls == ["@0", "@1", "@2"]


async def test_if_elif_else() -> None:
    flow = TriggerFlow("cond")
    (
        flow.if_condition(lambda v: v > 5)
        .to(double)
        .elif_condition(lambda v: v > 2)
        .to(inc)
        .else_condition()
        .to(inc)
        .to(inc)
        .end_condition()
    )
    assert [await flow.run(v) for v in (10, 3, 0)] == [20, 4, 2]


async def test_condition_may_read_state() -> None:
    async def mark(ctx: Any) -> int:
        ctx.state.set("limit", 1)
        return ctx.value

    flow = TriggerFlow("state-cond")
    flow.to(mark).if_condition(lambda v, state: v > state["limit"]).to(double).end_condition()
    assert await flow.run(3) == 6
    assert await flow.run(1) == 1


async def test_match_hit_first_and_hit_all() -> None:
    first = TriggerFlow("m1")
    first.match().case("a").to(lambda ctx: "A").case(lambda v: v.startswith("b")).to(lambda ctx: "B").case_else().to(
        lambda ctx: "?"
    ).end_match()
    assert [await first.run(v) for v in ("a", "bee", "z")] == ["A", "B", "?"]
    every = TriggerFlow("m2")
    every.match(mode="hit_all").case(lambda v: v > 1).to(inc).case(lambda v: v > 2).to(double).end_match()
    assert await every.run(3) == [4, 6]


async def test_batch_joins_by_name() -> None:
    flow = TriggerFlow("batch")
    flow.batch(("plus", inc), ("times", double), concurrency=2).to(lambda ctx: ctx.value)
    assert await flow.run(5) == {"plus": 6, "times": 10}


async def test_for_each_1000_items_with_concurrency_16() -> None:
    running = 0
    peak = 0

    async def work(ctx: Any) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await anyio.sleep(0)
        running -= 1
        return ctx.value * 2

    flow = TriggerFlow("each")
    flow.for_each(concurrency=16).to(work).end_for_each()
    result = await flow.run(list(range(1000)))
    assert result == [i * 2 for i in range(1000)]
    assert peak == 16


async def test_batch_fail_fast_cancels_the_other_branches() -> None:
    cancelled: list[str] = []

    async def slow(ctx: Any) -> None:
        try:
            await anyio.sleep(30)
        except anyio.get_cancelled_exc_class():
            cancelled.append(ctx.path)
            raise

    async def boom(ctx: Any) -> None:
        await anyio.sleep(0.01)
        raise ValueError("no")

    flow = TriggerFlow("ff")
    flow.batch(("a", slow), ("b", boom), ("c", slow))
    execution = flow.create_execution()
    await execution.run(None)
    assert execution.status is ExecutionStatus.FAILED
    with pytest.raises(StepFailed, match="ValueError: no"):
        await execution.result()
    assert len(cancelled) == 2


async def test_batch_can_collect_errors() -> None:
    async def boom(ctx: Any) -> None:
        raise ValueError("no")

    flow = TriggerFlow("collect-errors")
    flow.batch(("ok", inc), ("bad", boom), on_error="collect")
    result = await flow.run(1)
    assert result["ok"] == 2
    assert BranchError.model_validate(result["bad"]).error == {"type": "ValueError", "message": "no"}


async def test_cancel_reaches_every_running_branch() -> None:
    started = anyio.Event()
    cancelled: list[int] = []
    count = 0

    async def hang(ctx: Any) -> None:
        nonlocal count
        count += 1
        if count == 8:
            started.set()
        try:
            await anyio.sleep(30)
        except anyio.get_cancelled_exc_class():
            cancelled.append(ctx.value)
            raise

    flow = TriggerFlow("hang")
    flow.for_each().to(hang).end_for_each()
    async with flow.create_execution() as execution:
        await execution.start(list(range(8)))
        await started.wait()
        await execution.cancel("test")
        with pytest.raises(Exception, match="cancelled"):
            await execution.result()
    assert execution.status is ExecutionStatus.CANCELLED
    assert sorted(cancelled) == list(range(8))


async def test_loop_by_event_runs_to_its_end() -> None:
    flow = TriggerFlow("loop")
    flow.to(inc).emit("tick")
    flow.when("tick").to(inc).if_condition(lambda v: v < 500).emit("tick").else_condition().end().end_condition()
    assert await flow.run(0) == 500


async def test_a_loop_by_emits_from_a_chunk_runs_deep_in_one_task() -> None:
    tasks: set[int] = set()
    paths: set[int] = set()

    async def tick(ctx: Any) -> int:
        tasks.add(anyio.get_current_task().id)
        paths.add(len(ctx.path))
        value = ctx.value + 1
        if value < 3000:  # deeper than the recursion limit: the chain continues in a loop, not a call
            await ctx.async_emit("tick", value)
        else:
            ctx.set_result(value)
        return value

    async def start(ctx: Any) -> None:
        ctx.emit("tick", 0)

    flow = TriggerFlow("ctx-loop")
    flow.to(start)
    flow.when("tick").to(tick)
    execution = flow.create_execution(durability="none")
    assert (await execution.run(None)).result == 3000
    assert len(tasks) == 1 and len(paths) == 1
    kinds = [e.kind async for e in execution.events()]
    assert kinds.count("flow.emit") == 3000 and kinds.count("flow.step.completed") == 3001
    # each emit is announced inside its step, before that step completes, and the next step follows
    assert kinds[1:6] == ["flow.step.started", "flow.emit", "flow.step.completed", "flow.step.started", "flow.emit"]


async def test_a_chunk_that_emits_then_waits_lets_the_chain_run_meanwhile() -> None:
    answered = anyio.Event()

    async def ask(ctx: Any) -> str:
        ctx.emit("question", "why?")
        with anyio.fail_after(5):  # the emitted chain must run while this chunk waits
            await answered.wait()
        return "asked"

    async def answer(ctx: Any) -> None:
        answered.set()

    flow = TriggerFlow("emit-then-wait")
    flow.to(ask)
    flow.when("question").to(answer)
    assert await flow.run(None) == "asked"


async def test_a_chunk_that_emits_then_fails_still_starts_the_chain() -> None:
    seen: list[Any] = []
    release = anyio.Event()

    async def flaky(ctx: Any) -> int:
        ctx.emit("note", ctx.attempt)
        if ctx.attempt == 1:
            raise RuntimeError("once")
        with anyio.fail_after(5):  # both attempts' emits reach the chain
            await release.wait()
        return ctx.attempt

    async def note(ctx: Any) -> None:
        seen.append(ctx.value)
        if len(seen) == 2:
            release.set()

    flow = TriggerFlow("emit-then-fail")
    flow.to(flaky, retries=1)
    flow.when("note").to(note)
    assert await flow.run(None) == 2
    assert seen == [1, 2]


async def test_events_nobody_received_are_built_when_read(keel_runtime: Any) -> None:
    flow = TriggerFlow("lazy-events")
    flow.to(inc).to(double)
    execution = flow.create_execution(keel_runtime)
    await execution.run(1)
    first = [e async for e in execution.events()]
    again = [e async for e in execution.events(2)]
    assert [e.seq for e in first] == list(range(1, len(first) + 1))
    assert [e.id for e in first] == [f"{execution.id}.{e.seq}" for e in first]
    assert all(e.execution_id == execution.id and e.source == "triggerflow" for e in first)
    assert [e.time for e in first] == sorted(e.time for e in first)
    assert again == first[2:] and again[0] is first[2]  # built once, then the same object


async def test_emit_from_a_chunk_and_collect() -> None:
    async def fan(ctx: Any) -> None:
        ctx.emit("A", 1)
        ctx.emit("B", 2)

    flow = TriggerFlow("collect")
    flow.to(fan)
    flow.when("A").to(inc).collect("both", "a").to(lambda ctx: ctx.value).end()
    flow.when("B").to(double).collect("both", "b")
    assert await flow.run(None) == {"a": 2, "b": 4}
    drawn = flow.to_mermaid().splitlines()
    [collect] = [line.split("[")[0].strip() for line in drawn if '"collect both: a, b"' in line]
    assert sum(line.endswith(f"| {collect}") for line in drawn) == 2  # one edge per key, labelled
    assert any(line.startswith(f"  {collect} --> ") for line in drawn)  # the steps after it, once


async def test_when_all_events() -> None:
    async def fan(ctx: Any) -> None:
        ctx.emit("x", 1)
        ctx.emit("y", 2)

    flow = TriggerFlow("and")
    flow.to(fan)
    flow.when(["x", "y"], mode="and").to(lambda ctx: ctx.value).end()
    assert await flow.run(None) == {"x": 1, "y": 2}


class Question(BaseModel):
    topic: str


class Answer(BaseModel):
    text: str


async def test_sub_flow_returns_its_result_with_its_own_state() -> None:
    async def research(ctx: Any) -> dict[str, str]:
        ctx.state.set("seen", ctx.value.topic)
        return {"text": f"about {ctx.value.topic}"}

    child = TriggerFlow("child", input_model=Question, output_model=Answer)
    child.to(research)

    async def parent_step(ctx: Any) -> str:
        assert "seen" not in ctx.state  # the child's state stayed in the child
        return ctx.value.text.upper()

    parent = TriggerFlow("parent")
    parent.to(child).to(parent_step)
    assert await parent.run({"topic": "tides"}) == "ABOUT TIDES"


async def test_a_chain_built_in_one_expression_is_its_flow_as_a_sub_flow() -> None:
    """``TriggerFlow("sub").to(a).to(b)`` is the chain, not the flow; passed as a chunk it means the flow."""

    async def add(ctx: Any) -> int:
        return int(ctx.value) + 1

    async def double(ctx: Any) -> int:
        return int(ctx.value) * 2

    sub = TriggerFlow("sub").to(add).to(double)
    parent = TriggerFlow("parent")
    parent.batch(("r", sub), ("s", TriggerFlow("other").to(double))).to(lambda ctx: ctx.value)
    assert await parent.run(1) == {"r": 4, "s": 2}
    again = TriggerFlow("again")
    again.to(sub)
    assert await again.run(2) == 6
    loop = TriggerFlow("loop")
    with pytest.raises(FlowDefinitionError, match="cannot contain itself"):
        loop.to(add).to(loop.to(double))


async def test_sub_flow_refuses_input_outside_its_contract() -> None:
    child = TriggerFlow("child", input_model=Question)
    child.to(lambda ctx: ctx.value.topic)
    parent = TriggerFlow("parent")
    parent.to(child)
    with pytest.raises(Exception, match="topic"):
        await parent.run({"nope": 1})


async def test_reducers_merge_parallel_state_writes() -> None:
    async def find(ctx: Any) -> int:
        ctx.state.set("found", ctx.value)
        ctx.state.set("by", {str(ctx.value): True})
        return ctx.value

    flow = TriggerFlow("reduce", reducers={"found": "list", "by": "dict", "total": lambda old, new: (old or 0) + new})
    flow.for_each(concurrency=4).to(find).end_for_each().to(lambda ctx: sum(ctx.value)).set_state("total")
    execution = flow.create_execution()
    snapshot = await execution.run([1, 2, 3])
    assert sorted(snapshot.state["found"]) == [1, 2, 3]
    assert snapshot.state["by"] == {"1": True, "2": True, "3": True}
    assert snapshot.state["total"] == 6


async def test_runtime_stream_and_rejoin_by_sequence() -> None:
    async def talk(ctx: Any) -> str:
        for word in ("a", "b", "c"):
            ctx.put_into_stream(word)
        return "done"

    flow = TriggerFlow("stream")
    flow.to(talk)
    execution = flow.create_execution()
    await execution.run(None)
    assert [item async for item in execution.stream()] == ["a", "b", "c"]
    events = [e async for e in execution.events()]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    later = [e async for e in execution.events(since=events[2].seq)]
    assert later == events[3:]
    assert events[0].kind == "execution.started" and events[-1].kind == "execution.completed"


async def test_unclosed_constructs_are_listed_together() -> None:
    flow = TriggerFlow("open")
    flow.if_condition(lambda v: True).to(inc).for_each().to(inc)
    flow.when("E").match().case(1)
    with pytest.raises(FlowDefinitionError) as caught:
        flow.compile()
    assert len(caught.value.problems) == 3


async def test_misplaced_verbs_are_refused() -> None:
    with pytest.raises(FlowDefinitionError, match="end_condition"):
        TriggerFlow("x").to(inc).end_condition()


async def test_retries_then_succeeds_with_a_new_attempt_number() -> None:
    keys: list[str] = []

    async def flaky(ctx: Any) -> str:
        keys.append(ctx.idempotency_key)
        if ctx.attempt < 3:
            raise RuntimeError("try again")
        return "ok"

    flow = TriggerFlow("retry")
    flow.to(flaky, retries=2)
    execution = flow.create_execution()
    await execution.run(None)
    assert await execution.result() == "ok"
    assert keys == [f"{execution.id}:@0:{n}" for n in (1, 2, 3)]
    steps = [(e.kind, e.payload.get("attempt")) async for e in execution.events() if e.kind.startswith("flow.step")]
    assert steps == [
        ("flow.step.started", 1), ("flow.step.retry", 1), ("flow.step.started", 2), ("flow.step.retry", 2),
        ("flow.step.started", 3), ("flow.step.completed", None),
    ]  # fmt: skip
    retries = [e async for e in execution.events() if e.kind == "flow.step.retry"]
    assert retries[0].payload["error"] == {"type": "RuntimeError", "message": "try again"}


async def test_flow_is_a_runnable_registered_with_the_runtime(keel_runtime: Any) -> None:
    flow = TriggerFlow("runnable")
    flow.to(inc)
    keel_runtime.add(flow)
    execution = await keel_runtime.runnables.get("runnable").start(1, runtime=keel_runtime)
    assert await execution.result() == 2
    assert keel_runtime.executions.get(execution.id) is execution


def test_sync_facade() -> None:
    flow = TriggerFlow("sync")
    flow.to(inc)
    assert flow.run_sync(1) == 2


async def test_external_events_reach_when_chains_and_close_returns_the_snapshot() -> None:
    seen: list[Any] = []

    async def wait_for_orders(ctx: Any) -> str:
        return await ctx.pause_for("stop")

    async def record(ctx: Any) -> None:
        seen.append(ctx.value)

    flow = TriggerFlow("events")
    flow.to(wait_for_orders)
    flow.when("order").to(record)
    async with flow.create_execution() as execution:
        await execution.start(None)
        with anyio.fail_after(10):
            while not execution.get_pending_interrupts():
                await anyio.sleep(0.01)
        await execution.emit("order", {"id": 1})
        await execution.signal("order", {"id": 2})  # a signal no wait expects, but a when() handles
        await execution.signal("stop", "enough")
        snapshot = await execution.close()
    assert snapshot.status == "completed" and snapshot.result == "enough"
    assert sorted(o["id"] for o in seen) == [1, 2]
    assert snapshot.pending_interrupts == []


async def test_steps_are_runtime_events_on_the_bus(keel_runtime: Any) -> None:
    flow = TriggerFlow("observed")
    flow.to(inc).to(double)
    async with keel_runtime.bus.subscribe() as subscription:
        execution = flow.create_execution(keel_runtime)
        await execution.run(1)
        kinds = []
        async for event in subscription:
            assert event.execution_id == execution.id and event.source == "triggerflow"
            kinds.append(event.kind)
            if event.kind == "execution.completed":
                break
    assert kinds.count("flow.step.completed") == 2
    quiet = flow.create_execution(keel_runtime, step_events=False)
    await quiet.run(1)
    assert [e.kind async for e in quiet.events()] == ["execution.started", "execution.completed"]


def test_emit_thread_ids_are_the_recorded_ones() -> None:
    from keel_triggerflow._ops import emit_thread, thread_hash

    # histories written before name event chains with thread_hash: the fast form must give the same ids
    for origin, event, k in (("", "tick", 0), ("t1a2b3c4d5e6f@w0:0", "Tick", 1), ("@0", "a|b", 12)):
        assert emit_thread(origin, event, k) == thread_hash(origin, event, k)


class FakeWorkspace:
    """Anything with child(name) follows the flow's topology; keel-workspace's Workspace is one."""

    def __init__(self, scope: str):
        self.scope = scope
        self.notes: list[str] = []

    def child(self, name: str) -> FakeWorkspace:
        return FakeWorkspace(f"{self.scope}/{name}")


async def test_a_sub_flow_gets_its_own_child_workspace() -> None:
    seen: list[str] = []

    async def note(ctx: Any) -> str:
        seen.append(ctx.resource("workspace").scope)
        return ctx.value

    role = TriggerFlow("role")
    role.to(note)
    parent = TriggerFlow("team")
    parent.to(note).batch(("a", role), ("b", role)).to(note)
    execution = parent.create_execution(resources={"workspace": FakeWorkspace("task-1")})
    await execution.run("go")
    roots = [s for s in seen if s == "task-1"]
    children = sorted(s for s in seen if s != "task-1")
    assert len(roots) == 2, "the parent's steps see the shared workspace"
    assert len(children) == 2 and children[0] != children[1], "each sub-flow instance has its own child"
    for child in children:  # a valid workspace scope under the parent's: safe characters, '/'-separated
        assert re.fullmatch(r"task-1(/[A-Za-z0-9_.:@-]+)+", child), child
    other = TriggerFlow("plain").to(lambda ctx: ctx.resource("db"))
    db = object()
    assert (await other.create_execution(resources={"db": db}).run(None)).result is db, "other resources pass as given"


async def test_each_step_attempt_has_a_span_and_an_agent_step_runs_inside_it(keel_runtime: Any) -> None:
    import keel
    from keel.testing import ScriptedModel

    def flaky(ctx: Any) -> str:
        if ctx.attempt == 1:
            raise RuntimeError("once")
        return "draft"

    flow = TriggerFlow("traced")
    flow.to(flaky, retries=1).to(keel.Agent("editor", "Edit."))
    keel_runtime.use_model(ScriptedModel(["edited"]))
    execution = flow.create_execution(keel_runtime)
    await execution.run("x")
    assert await execution.result() == "edited"
    events = [e async for e in execution.events()]
    root = events[0].span_id
    assert root and {e.trace_id for e in events} == {events[0].trace_id}
    steps = [e for e in events if e.kind.startswith("flow.step.")]
    assert [e.kind for e in steps] == [
        "flow.step.started", "flow.step.retry", "flow.step.started", "flow.step.completed",
        "flow.step.started", "flow.step.completed",
    ]  # fmt: skip
    assert all(e.parent_span_id == root for e in steps)
    spans = [e.span_id for e in steps]
    assert spans[0] == spans[1] != spans[2] == spans[3] != spans[4] == spans[5]  # one span per attempt
    assert all(e.span_id == root for e in events if not e.kind.startswith("flow.step."))
    (agent_run,) = [x for x in keel_runtime.executions.list() if x.kind == "agent"]
    assert agent_run.trace_id == events[0].trace_id  # the agent's events join the flow's trace...
    assert agent_run.parent_span_id == spans[4]  # ...inside the step that ran it
