"""The runner contract (docs/flows.md, "Runner contract"): ``flow.plan()`` is a public, JSON
round-trippable op tree of every op kind, and a runner that interprets it with only the public
calls (``run_step``, ``decide``, ``pause_payload``) gets what the local engine gets."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel

from keel import MemoryStore
from keel_triggerflow import (
    FlowError,
    FlowPlan,
    StepContext,
    TriggerFlow,
    call_chunk,
    decide,
    pause_payload,
    run_step,
)
from keel_triggerflow.plan import emit_thread, step_key

ALL_KINDS = {
    "step", "pause_for", "subflow", "if", "match", "batch", "for_each", "emit", "collect", "end", "set_state",
}  # fmt: skip


class Summary(BaseModel):
    text: str
    n: int


async def double(ctx: Any) -> Any:
    return ctx.value * 2


def every_kind() -> TriggerFlow:
    sub = TriggerFlow("sub", reducers={"seen": "list"})
    sub.to(double)
    flow = TriggerFlow("every_kind", reducers={"log": "list", "custom": lambda a, b: b})
    flow.to(double, retries=2).set_state("doubled")
    flow.if_condition(lambda v: v > 10).to(double).elif_condition(lambda v, s: s.get("x")).to(double)
    flow.else_condition().end_condition()
    flow.match(lambda v: v % 3, mode="hit_all").case(0).to(double).case(lambda s: s > 0).to(double).case_else()
    flow.to(double).end_match()
    flow.to(lambda ctx: 4).to(sub).batch(("a", double), ("b", double), concurrency=2, on_error="collect")
    flow.to(lambda ctx: [1, 2]).for_each(concurrency=1).to(double).end_for_each()
    flow.emit("tick").pause_for("approve", {"q": 1}, timeout=5, on_timeout="continue", default="no")
    flow.pause_for("review", lambda v: {"value": v}).collect("pair", "left").to(double).end()
    flow.when("tick").collect("pair", "right")
    flow.when(["a", "b"], mode="and").to(double)
    return flow


def walk(nodes: list[Any]) -> list[Any]:
    found = []
    for node in nodes:
        found.append(node)
        for attr in ("ops", "else_ops", "then"):
            found += walk(getattr(node, attr, None) or [])
        for branch in getattr(node, "branches", None) or []:
            found += walk(branch.ops)
        for case in getattr(node, "cases", None) or []:
            found += walk(case.ops)
        if node.kind == "subflow":
            found += walk(node.flow.main)
    return found


def test_the_plan_has_every_op_kind_and_round_trips_through_json() -> None:
    plan = every_kind().plan()
    nodes = walk(plan.main) + [n for when in plan.whens for n in walk(when.ops)]
    assert {n.kind for n in nodes} == ALL_KINDS
    text = plan.model_dump_json()
    again = FlowPlan.model_validate_json(text)
    assert again == plan and again.model_dump_json() == text
    assert FlowPlan.model_validate(json.loads(text)) == plan
    assert plan.digest() == every_kind().plan().digest()
    changed = every_kind()
    changed.to(double)
    assert changed.plan().digest() != plan.digest()


def test_the_plan_says_what_each_node_needs() -> None:
    plan = every_kind().plan()
    by_ref = {n.ref: n for n in walk(plan.main) + [n for when in plan.whens for n in walk(when.ops)]}
    first = plan.main[0]
    assert (first.kind, first.ref, first.retries, first.name) == ("step", "0", 2, "double")
    assert first.function.endswith(":double")
    assert by_ref["1"].kind == "set_state" and by_ref["1"].key == "doubled"
    assert by_ref["2"].kind == "if" and len(by_ref["2"].branches) == 2 and by_ref["2"].else_ops == []
    assert by_ref["3"].kind == "match" and by_ref["3"].mode == "hit_all" and by_ref["3"].keyed
    assert [c.predicate for c in by_ref["3"].cases] == [False, True] and by_ref["3"].cases[0].value == 0
    sub = by_ref["5"]
    assert sub.kind == "subflow" and sub.flow.main[0].ref == "5>0" and sub.flow.reducers == {"seen": "list"}
    assert [(b.name, b.ops[0].ref) for b in by_ref["6"].branches] == [("a", "6.a.0"), ("b", "6.b.0")]
    assert by_ref["8"].kind == "for_each" and by_ref["8"].ops[0].ref == "8.f.0" and by_ref["8"].concurrency == 1
    approve = next(n for n in by_ref.values() if n.kind == "pause_for" and n.signal == "approve")
    assert (approve.payload, approve.payload_fn, approve.timeout, approve.on_timeout, approve.default) == (
        {"q": 1}, False, 5, "continue", "no",
    )  # fmt: skip
    review = next(n for n in by_ref.values() if n.kind == "pause_for" and n.signal == "review")
    assert review.payload_fn and pause_payload(every_kind(), review.ref, 7) == {"value": 7}
    assert plan.collects == {"pair": ["left", "right"], "when:1": ["a", "b"]}
    assert [(w.events, w.mode, w.join) for w in plan.whens] == [(["tick"], "or", None), (["a", "b"], "and", "when:1")]
    assert plan.reducers == {"log": "list", "custom": "custom"}


async def test_decisions_are_the_engines() -> None:
    flow = every_kind()
    assert await decide(flow, "2", 11, {}) == 0
    assert await decide(flow, "2", 3, {"x": True}) == 1
    assert await decide(flow, "2", 3, {}) == 2  # len(branches): the else
    assert await decide(flow, "3", 3, {}) == [0]
    assert await decide(flow, "3", 4, {}) == [1]
    with pytest.raises(FlowError, match="only if and match decide"):
        await decide(flow, "0", 1, {})


async def test_a_bad_reference_says_where_references_come_from() -> None:
    flow = every_kind()
    with pytest.raises(FlowError, match=r"no node '99'.*flow.plan\(\)"):
        await run_step(flow, "99", 1, execution_id="e")
    with pytest.raises(FlowError, match="not a sub-flow"):
        await run_step(flow, "0>0", 1, execution_id="e")
    with pytest.raises(FlowError, match="not a step"):
        await run_step(flow, "2", 1, execution_id="e")
    assert (await run_step(flow, "5>0", 4, execution_id="e")).output == 8


async def test_run_step_gives_what_the_chunk_did_as_data() -> None:
    async def busy(ctx: Any) -> Summary:
        ctx.state["count"] = ctx.state.get("count", 0) + 1
        ctx.state.set("log", "one")
        del ctx.state["gone"]
        ctx.emit("done", {"n": ctx.value})
        ctx.put_into_stream("halfway")
        ctx.set_result("early")
        assert ctx.idempotency_key == "e1:@0:2" and ctx.input == ctx.value
        return Summary(text="ok", n=ctx.value)

    flow = TriggerFlow("busy", reducers={"log": "list"})
    flow.to(busy)
    outcome = await run_step(flow, "0", 3, execution_id="e1", attempt=2, state={"count": 1, "log": ["zero"], "gone": 1})
    assert outcome.output == {"text": "ok", "n": 3}
    assert outcome.model is not None and outcome.model.endswith(":Summary")
    assert outcome.state_writes == [["count", 2], ["log", "one"], ["gone"]]
    assert outcome.emits == [["done", {"n": 3}]] and outcome.stream == ["halfway"]
    assert outcome.result == {"result": "early"}
    assert json.loads(outcome.model_dump_json()) == outcome.model_dump()


async def test_run_step_shows_a_failed_attempts_items_names_an_emitted_model_and_raises_a_wait_timeout() -> None:
    """What a runner needs to match the local engine: the stream items of an attempt that fails
    (``on_stream``), an emitted model's class (a third item), and ``WaitTimeout`` in the chunk for
    an ``on_pause`` that raises ``TimeoutError``."""
    from keel_triggerflow import WaitTimeout

    async def chunk(ctx: Any) -> Any:
        ctx.put_into_stream("before")
        ctx.emit("made", Summary(text="x", n=1))
        try:
            await ctx.pause_for("approve", timeout=1)
        except WaitTimeout as err:
            ctx.put_into_stream(str(err))
        raise ValueError("fails after")

    async def timed_out(*_: Any) -> Any:
        raise TimeoutError("wait 'approve' at @0 timed out")

    flow = TriggerFlow("fails")
    flow.to(chunk)
    items: list[Any] = []
    with pytest.raises(ValueError, match="fails after"):
        await run_step(flow, "0", 1, execution_id="e1", on_pause=timed_out, on_stream=items.append)
    assert items == ["before", "wait 'approve' at @0 timed out"]
    ctx = StepContext(None, path="@0", execution_id="e1")
    ctx.emit("made", Summary(text="x", n=1))
    ctx.emit("plain", 2)
    assert ctx.outcome.emits[0][:2] == ["made", {"text": "x", "n": 1}] and ctx.outcome.emits[0][2].endswith(":Summary")
    assert ctx.outcome.emits[1] == ["plain", 2]


async def test_a_chunk_gets_its_resources_and_a_clear_error_for_a_missing_one() -> None:
    async def uses(ctx: Any) -> Any:
        return ctx.resource("client")["name"]

    flow = TriggerFlow("uses")
    flow.to(uses)
    assert (await run_step(flow, "0", None, execution_id="e", resources={"client": {"name": "c"}})).output == "c"
    with pytest.raises(Exception, match="needs the resource 'client'"):
        await run_step(flow, "0", None, execution_id="e")
    ctx = StepContext(1, path="@0", execution_id="e")
    with pytest.raises(FlowError, match="put the wait in the chain"):
        await ctx.pause_for("x")
    assert await call_chunk(TriggerFlow("plain").to(lambda ctx: ctx.value + 1)._flow, "0", ctx) == 2


# ------------------------------------------------------------------ a runner built on the contract
async def interpret(flow: TriggerFlow, plan: FlowPlan, value: Any, answers: dict[str, Any]) -> dict[str, Any]:
    """A sequential runner using only the public contract (if, match, set_state, end, emit chains,
    pause_for from ``answers``): what keel-runner-temporal's workflow does, without Temporal."""
    run: dict[str, Any] = {"state": {}, "result": None, "records": {}}
    whens = {event: when for when in plan.whens for event in when.events}

    async def chain(nodes: list[Any], value: Any, thread: str) -> Any:
        for node in nodes:
            key = step_key(thread, node.id)
            if node.kind == "step":
                outcome = await run_step(flow, node.ref, value, execution_id="e", path=key, state=run["state"])
                run["records"][key] = outcome
                for write in outcome.state_writes:
                    run["state"].pop(write[0], None) if len(write) == 1 else run["state"].__setitem__(*write)
                for k, (event, emitted) in enumerate(outcome.emits, start=1):
                    await chain(whens[event].ops, emitted, emit_thread(key, event, k))
                value = outcome.output
            elif node.kind == "pause_for":
                assert pause_payload(flow, node.ref, value) is not None
                value = answers[node.signal]
            elif node.kind == "if":
                index = await decide(flow, node.ref, value, run["state"])
                assert isinstance(index, int)
                ops = node.branches[index].ops if index < len(node.branches) else node.else_ops
                value = await chain(ops or [], value, thread)
            elif node.kind == "match":
                hits = await decide(flow, node.ref, value, run["state"])
                assert isinstance(hits, list) and node.mode == "hit_first"
                value = await chain(node.cases[hits[0]].ops if hits else node.else_ops or [], value, thread)
            elif node.kind == "set_state":
                run["state"][node.key] = value
            elif node.kind == "end":
                run["result"] = value
            else:
                raise AssertionError(f"this test's runner has no {node.kind}")
        return value

    await chain(plan.main, value, "")
    return run


def business() -> TriggerFlow:
    async def score(ctx: Any) -> Any:
        ctx.state["scored"] = True
        ctx.emit("audit", {"score": ctx.value * 10})
        return ctx.value * 10

    async def audit(ctx: Any) -> Any:
        ctx.state["audited"] = ctx.value["score"]
        return ctx.value

    async def big(ctx: Any) -> Any:
        return {"size": "big", "score": ctx.value}

    async def small(ctx: Any) -> Any:
        return {"size": "small", "score": ctx.value}

    async def finish(ctx: Any) -> Any:
        return {**ctx.value, "approved": ctx.value.get("approved"), "audited": ctx.state["audited"]}

    flow = TriggerFlow("business")
    flow.to(score).set_state("score").if_condition(lambda v: v >= 50).to(big).else_condition().to(small)
    flow.end_condition().match(lambda v: v["size"]).case("big").to(lambda ctx: {**ctx.value, "tier": 1})
    flow.case_else().to(lambda ctx: {**ctx.value, "tier": 2}).end_match()
    flow.pause_for("approve", lambda v: {"tier": v["tier"]}).to(lambda ctx: {"approved": ctx.value}).to(finish).end()
    flow.when("audit").to(audit)
    return flow


@pytest.mark.parametrize("value", [2, 7])
async def test_a_runner_on_the_public_contract_gets_what_the_local_engine_gets(make_runtime: Any, value: int) -> None:
    flow = business()
    store = MemoryStore()
    execution = flow.create_execution(make_runtime(store))
    await execution.run(value)
    await execution.signal("approve", "yes")
    local = await execution.run()
    assert local.status == "completed", local
    history = [r.data for r in await store.read("default", f"triggerflow/{execution.id}")]

    plan = FlowPlan.model_validate_json(flow.plan().model_dump_json())  # as a workflow receives it
    remote = await interpret(business(), plan, value, {"approve": "yes"})
    assert remote["result"] == local.result
    assert remote["state"] == local.state
    completions = {r["p"]: r for r in history if r["t"] == "c"}
    assert set(remote["records"]) <= set(completions)  # same step keys (the waits are the engine's own steps)
    for key, outcome in remote["records"].items():
        recorded = completions[key]
        assert outcome.output == recorded["o"], key
        assert outcome.state_writes == recorded.get("s", []), key
        assert outcome.emits == recorded.get("e", []), key


async def test_step_keys_from_the_plan_are_the_engines(make_runtime: Any) -> None:
    """A runner naming steps with step_key/emit_thread/collect_thread/join_thread names them as the
    local engine does, so idempotency keys agree across runners."""
    from keel_triggerflow.plan import collect_thread, join_thread

    async def one(ctx: Any) -> Any:
        return ctx.value

    flow = TriggerFlow("keys")
    flow.to(one).for_each().to(one).end_for_each().emit("left").emit("right").collect("pair", "main").to(one)
    flow.when("left").collect("pair", "side")
    flow.when(["left", "right"], mode="and").to(one)
    store = MemoryStore()
    execution = flow.create_execution(make_runtime(store))
    assert (await execution.run([1, 2])).status == "completed"
    keys = {r.data["p"] for r in await store.read("default", f"triggerflow/{execution.id}") if r.data["t"] == "c"}
    plan = flow.plan()
    each, collect = plan.main[1], plan.main[4]
    assert each.kind == "for_each" and collect.kind == "collect"
    expected = {
        step_key("", plan.main[0].id),
        *(step_key(f"{step_key('', each.id)}[{i}]", each.ops[0].id) for i in range(2)),
        step_key(collect_thread("", "pair", 1), collect.then[0].id),
        step_key(join_thread("", plan.whens[1].join or "", 1), plan.whens[1].ops[0].id),
    }
    assert keys == expected


async def test_the_engines_context_and_step_context_are_chunk_contexts() -> None:
    from keel_triggerflow import ChunkContext

    seen: list[bool] = []

    async def check(ctx: Any) -> Any:
        seen.append(isinstance(ctx, ChunkContext))
        return ctx.value

    flow = TriggerFlow("ctx")
    flow.to(check)
    await flow.run(1)
    await run_step(flow, "0", 1, execution_id="e")
    assert seen == [True, True]


async def test_the_calls_are_reachable_from_the_flow_itself() -> None:
    """A runner plugin cannot import keel_triggerflow: it calls the contract through the flow object."""
    from keel_triggerflow import TriggerFlow

    async def triple(ctx: Any) -> Any:
        ctx.state["seen"] = ctx.value
        return ctx.value * 3

    flow = TriggerFlow("reach")
    flow.to(triple).if_condition(lambda v: v > 5).to(triple).end_condition().pause_for("ok", lambda v: {"v": v})
    step, branch, wait = flow.plan().main
    outcome = await flow.run_step(step.ref, 2, execution_id="e1", state={})
    assert (outcome.output, outcome.state_writes) == (6, [["seen", 2]])
    assert await flow.decide(branch.ref, outcome.output, {}) == 0
    assert flow.pause_payload(wait.ref, 6) == {"v": 6}


def test_a_reducer_function_is_applied_by_the_flow_that_owns_the_node() -> None:
    """A runner cannot run a reducer function itself (``custom`` in the plan): it asks the flow."""

    def longest(old: Any, new: Any) -> Any:
        return new if old is None or len(new) > len(old) else old

    inner = TriggerFlow("inner", reducers={"best": longest})
    inner.to(double).set_state("best")
    flow = TriggerFlow("outer", reducers={"total": lambda old, new: (old or 0) + new})
    flow.to(double).set_state("total").to(inner)
    plan = flow.plan()
    assert plan.reducers == {"total": "custom"} and plan.main[2].flow.reducers == {"best": "custom"}
    assert flow.reduce_state("1", "total", None, 2) == 2
    assert flow.reduce_state("1", "total", 2, 3) == 5
    assert flow.reduce_state("2>1", "best", "ab", "abc") == "abc"  # the sub-flow's own reducer
    assert flow.reduce_state("2>1", "best", "abc", "x") == "abc"
    with pytest.raises(FlowError, match="no node '9'"):
        flow.reduce_state("9", "total", None, 1)
