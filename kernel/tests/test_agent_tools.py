"""The tool loop: model tool calls -> actions (scope, policy, approval, audit) -> results -> answer."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest

import keel
from keel.policy import CallbackApprover
from keel.testing import Reply, ScriptedModel, make_host

VENDOR = {"vendor": (str, "who issued it"), "country": (str, "ISO country code")}
deleted: list[int] = []


@keel.action(risk="read", tags=["crm"])
def lookup_vendor(name: str) -> dict[str, str]:
    """Find a vendor's registered country."""
    return {"name": name, "country": "NO"}


@keel.action(risk="irreversible")
def delete_vendor(vendor_id: int) -> str:
    """Delete a vendor."""
    deleted.append(vendor_id)
    return "deleted"


def call(action: str, call_id: str = "c1", **arguments: Any) -> keel.ToolCall:
    return keel.ToolCall(id=call_id, name=action, arguments=arguments)


def setup(runtime: keel.Runtime, *replies: str | Reply) -> ScriptedModel:
    for spec in (lookup_vendor, delete_vendor):
        if spec.name not in runtime.actions:
            runtime.actions.add(spec)
    return runtime.use_model(ScriptedModel(list(replies), chunks=4))  # type: ignore[return-value]


def agent(**options: Any) -> keel.Agent:
    return keel.Agent(
        "vendor", "Find the vendor's country.", output=VENDOR, actions=["tag:crm", "delete_vendor"], **options
    )


FINAL = json.dumps({"vendor": "Nordlys AS", "country": "NO"})


async def test_a_tool_result_goes_back_and_the_answer_is_validated(keel_runtime: keel.Runtime) -> None:
    model = setup(keel_runtime, Reply(tool_calls=[call("lookup_vendor", name="Nordlys AS")]), FINAL)
    execution = await agent().start("Invoice from Nordlys AS", runtime=keel_runtime)
    data = await execution.get_data()
    assert data.country == "NO"
    first, second = model.requests
    assert sorted(t.name for t in first.tools) == ["delete_vendor", "lookup_vendor"]
    assistant, tool = second.messages[-2:]
    assert assistant.tool_calls[0].name == "lookup_vendor"
    assert tool.role == "tool" and tool.tool_call_id == "c1" and json.loads(tool.content)["country"] == "NO"
    events = [e async for e in execution.events()]
    kinds = [e.kind for e in events]
    for kind in ("model.tool_call", "action.requested", "action.approved", "action.started", "action.completed"):
        assert kind in kinds
    audit = next(e for e in events if e.kind == "action.completed")
    assert audit.execution_id == execution.id and audit.payload["caller"]["agent"] == "vendor"


async def test_an_irreversible_action_without_approver_is_denied_and_never_runs(keel_runtime: keel.Runtime) -> None:
    deleted.clear()
    model = setup(keel_runtime, Reply(tool_calls=[call("delete_vendor", vendor_id=9)]), FINAL)
    execution = await agent().start("remove vendor 9", runtime=keel_runtime)
    await execution.get_data()
    assert deleted == []
    error = json.loads(model.requests[1].messages[-1].content)["error"]
    assert error["type"] == "denied" and "fail closed" in error["message"]
    assert "action.denied" in [e.kind async for e in execution.events()]


async def test_the_runtime_approver_can_approve(keel_runtime: keel.Runtime) -> None:
    deleted.clear()
    keel_runtime.approver = CallbackApprover(lambda request: request.action == "delete_vendor")
    setup(keel_runtime, Reply(tool_calls=[call("delete_vendor", vendor_id=9)]), FINAL)
    await (await agent().start("remove vendor 9", runtime=keel_runtime)).get_data()
    assert deleted == [9]


async def test_unknown_and_unlisted_actions_are_errors_to_the_model(keel_runtime: keel.Runtime) -> None:
    model = setup(keel_runtime, Reply(tool_calls=[call("drop_tables"), call("lookup_vendor", "c2", name="x")]), FINAL)
    plain = keel.Agent("plain", "No tools.", output=VENDOR)  # names no actions: sees none
    await (await plain.start("hi", runtime=keel_runtime)).get_data()
    assert model.requests[0].tools == []
    errors = [json.loads(m.content)["error"]["type"] for m in model.requests[1].messages if m.role == "tool"]
    assert errors == ["unknown_action", "unknown_action"]


async def test_parallel_calls_run_concurrently(keel_runtime: keel.Runtime) -> None:
    both = {"a": anyio.Event(), "b": anyio.Event()}

    def make(name: str, other: str) -> keel.ActionSpec:
        async def wait_for_other() -> str:
            both[name].set()
            with anyio.fail_after(5):  # would deadlock if the calls ran one after the other
                await both[other].wait()
            return name

        return keel.action(wait_for_other, name=f"wait_{name}", tags=["crm"])

    keel_runtime.actions.add(make("a", "b"))
    keel_runtime.actions.add(make("b", "a"))
    model = setup(keel_runtime, Reply(tool_calls=[call("wait_a", "1"), call("wait_b", "2")]), FINAL)
    await (await agent().start("go", runtime=keel_runtime)).get_data()
    assert [m.content for m in model.requests[1].messages if m.role == "tool"] == ["a", "b"]


async def test_the_tool_step_limit_is_a_clear_error(keel_runtime: keel.Runtime) -> None:
    loop = Reply(tool_calls=[call("lookup_vendor", name="x")])
    setup(keel_runtime, loop, loop, loop)
    execution = await agent(max_tool_steps=2).start("go", runtime=keel_runtime)
    with pytest.raises(keel.KeelError, match="limit of 2 tool-call rounds"):
        await execution.get_data()
    assert execution.status is keel.ExecutionStatus.FAILED


async def test_text_before_tool_calls_is_reset_in_the_instant_stream(keel_runtime: keel.Runtime) -> None:
    setup(keel_runtime, Reply(text='{"vendor": "guess', tool_calls=[call("lookup_vendor", name="x")]), FINAL)
    execution = await agent().start("go", runtime=keel_runtime)
    await execution.get_data()
    events = [e async for e in execution.instant()]
    resets = [e for e in events if e.kind == "reset"]
    assert len(resets) == 1 and resets[0].delta == "tool_calls"
    after = events[events.index(resets[0]) + 1 :]
    assert {e.path for e in after if e.is_complete} >= {"vendor", "country"}


async def test_events_carry_what_a_replay_needs(keel_runtime: keel.Runtime) -> None:
    """A recorder (DevTools) can rebuild the run from the events alone: input, each request sent,
    each answer with its tool calls' arguments, each tool result as the model saw it, the output."""
    setup(keel_runtime, Reply(tool_calls=[call("lookup_vendor", name="Nordlys AS")]), FINAL)
    execution = await agent().start("Invoice from Nordlys AS", runtime=keel_runtime)
    data = await execution.get_data()
    by_kind: dict[str, list[keel.RuntimeEvent]] = {}
    async for event in execution.events():
        by_kind.setdefault(event.kind, []).append(event)
    assert by_kind["execution.started"][0].payload["input"] == "Invoice from Nordlys AS"
    first, second = (e.payload["request"] for e in by_kind["model.request"])
    assert isinstance(first, keel.ModelRequest) and first.messages[-1].content == "Invoice from Nordlys AS"
    assert second.messages[-1].role == "tool"
    assert by_kind["model.tool_call"][0].payload["arguments"] == {"name": "Nordlys AS"}
    completed = by_kind["action.completed"][0].payload
    assert completed["content"] == second.messages[-1].content
    assert by_kind["model.response"][-1].payload["text"] == FINAL
    assert by_kind["execution.completed"][0].payload["output"] == data
    dumped = by_kind["model.request"][0].model_dump(mode="json")
    assert dumped["payload"]["request"]["messages"][-1]["content"] == "Invoice from Nordlys AS"


async def test_clock_random_and_id_draws_inside_an_execution_are_recorded(keel_runtime: keel.Runtime) -> None:
    from keel import draws

    @keel.action(risk="read")
    def stamp(label: str) -> dict[str, Any]:
        """Stamp a label with a time, a lot number and an id."""
        return {"label": label, "at": draws.now(), "lot": draws.random(), "id": draws.uuid()}

    keel_runtime.actions.add(stamp)
    keel_runtime.use_model(ScriptedModel([Reply(tool_calls=[call("stamp", label="x")]), FINAL]))
    execution = await keel.Agent("stamper", "Stamp.", output=VENDOR, actions=["stamp"]).start(
        "go", runtime=keel_runtime
    )
    await execution.get_data()
    events = [e async for e in execution.events()]
    drawn = [e.payload for e in events if e.kind == "draw"]
    assert [d["kind"] for d in drawn] == ["clock", "random", "id"]
    result = json.loads(next(e for e in events if e.kind == "action.completed").payload["content"])
    assert [result["at"], result["lot"], result["id"]] == [d["value"] for d in drawn]
    # a replay serves them instead
    keel_runtime.draw_source = lambda execution, kind: {"clock": 1.5, "random": 0.25, "id": "fixed"}[kind]
    keel_runtime.use_model(ScriptedModel([Reply(tool_calls=[call("stamp", label="y")]), FINAL]))
    again = await keel.Agent("stamper", "Stamp.", output=VENDOR, actions=["stamp"]).start("go", runtime=keel_runtime)
    await again.get_data()
    completed = [e async for e in again.events() if e.kind == "action.completed"]
    served = json.loads(completed[0].payload["content"])
    assert (served["at"], served["lot"], served["id"]) == (1.5, 0.25, "fixed")
    # outside an execution, a draw is a plain one and records nothing
    assert isinstance(draws.now(), float) and len(draws.uuid()) == 32


def test_a_draw_in_a_worker_thread_is_recorded_from_the_event_loop_thread() -> None:
    import threading

    from keel import draws

    threads: list[str] = []

    async def main() -> None:
        async with keel.Runtime(make_host(), keel.Stack()) as runtime:
            execution = keel.AgentExecution(keel.Agent("t", "x"), "in", runtime=runtime, model=ScriptedModel(["ok"]))
            original = execution.emit

            def spy(kind: str, payload: dict[str, Any], **kw: Any) -> keel.RuntimeEvent:
                threads.append(threading.current_thread().name)
                return original(kind, payload, **kw)

            execution.emit = spy  # type: ignore[method-assign]
            with draws.drawing(execution._draw):
                await anyio.to_thread.run_sync(draws.now)

    anyio.run(main)
    assert threads == [threading.main_thread().name]
