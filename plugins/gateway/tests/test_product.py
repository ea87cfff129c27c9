"""The projection RuntimeEvent -> ProductEvent on real executions (ScriptedModel, offline)."""

from __future__ import annotations

import json

import anyio

import keel
from keel.testing import Reply, ScriptedModel, make_host
from keel_gateway import ProductHub, Projection

ANSWER = '{"title": "Otters", "points": ["float", "hold hands"], "meta": {"n": 2}}'


def agent() -> keel.Agent:
    return keel.Agent(
        "brief",
        "Write a brief.",
        output={"title": (str, "t"), "points": (list[str], "p"), "meta": (dict[str, int], "m")},
        max_retries=1,
    )


async def follow(script: list[str | Reply]) -> list[keel.ProductEvent]:
    async with keel.Runtime(make_host(), keel.Stack()) as runtime:
        runtime.use_model(ScriptedModel(script, chunks=3))
        execution = await agent().start("otters", runtime=runtime)
        log = ProductHub(runtime).log(execution)
        with anyio.fail_after(10):
            async for _ in log.follow():
                pass
        return [frame.event for frame in log.frames]


async def test_an_agent_run_projects_to_product_events() -> None:
    events = await follow([ANSWER])
    types = [e.type for e in events]
    assert types[0] == "task.started" and types[1] == "task.progress" and types[-1] == "task.completed"
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    titles = [e.data["value"] for e in events if e.type == "task.partial" and e.data["field"] == "title"]
    assert titles[-1] == "Otters" and len(titles) >= 2, "the title streams"
    points = [e.data["value"] for e in events if e.type == "task.partial" and e.data["field"] == "points"]
    assert points[-1] == ["float", "hold hands"]
    assert events[-1].data == {"title": "Otters", "points": ["float", "hold hands"], "meta": {"n": 2}}
    shown = "".join(e.model_dump_json() for e in events)
    for internal in ("model.delta", "scripted", "attempt", "points[0]", "meta.n"):
        assert internal not in shown


async def test_a_retry_resets_the_partial_fields_and_a_failure_is_safe() -> None:
    events = await follow(['{"title": 5}', ANSWER])
    assert any(e.type == "task.partial" and e.data == {"reset": True} for e in events)
    assert any(e.type == "task.progress" and "retrying" in e.message for e in events)
    assert events[-1].type == "task.completed"
    failed = await follow(['{"title": 5}', '{"title": 6}'])
    assert failed[-1].type == "task.failed"
    assert failed[-1].data == {"code": "invalid_output"}
    assert "title" not in failed[-1].message and "Error" not in failed[-1].message


def test_waiting_states_say_what_is_awaited_and_how_to_answer() -> None:
    projection = Projection("exe_1")
    event = keel.RuntimeEvent(
        kind="execution.waiting",
        payload={
            "interrupts": [
                {
                    "id": "i1",
                    "name": "approve",
                    "path": "a.b",
                    "payload": {"question": "OK?", "schema": {"type": "boolean"}, "amount": 3},
                }
            ]
        },
    )
    waiting = projection.runtime(event)
    assert waiting is not None and waiting.type == "task.waiting" and waiting.message == "OK?"
    (signal,) = waiting.waiting_for["signals"]
    assert signal["schema"] == {"type": "boolean"} and signal["details"] == {"amount": 3}
    assert signal["answer"]["path"] == "/v1/executions/exe_1/signals/approve"
    assert "a.b" not in json.dumps(waiting.waiting_for)


def test_progress_events_are_clamped_and_internal_events_dropped() -> None:
    projection = Projection("exe_1")
    progress = projection.runtime(
        keel.RuntimeEvent(kind="import.progress", payload={"message": "half", "percent": 250})
    )
    assert progress is not None and progress.percent == 100.0 and progress.message == "half"
    assert projection.runtime(keel.RuntimeEvent(kind="action.call", payload={"name": "drop_table"})) is None
    steps = [
        projection.runtime(keel.RuntimeEvent(kind="flow.step.completed", payload={"step": "secret_chunk"}))
        for _ in range(2)
    ]
    assert [s.message for s in steps if s] == ["1 step done", "2 steps done"]


def test_a_flow_stream_item_with_a_message_is_progress_and_other_items_stay_inside() -> None:
    projection = Projection("exe_1")
    shown = projection.runtime(
        keel.RuntimeEvent(
            kind="flow.stream", payload={"path": "desk.research", "item": {"message": "looking", "percent": 40}}
        )
    )
    assert shown is not None and (shown.type, shown.message, shown.percent) == ("task.progress", "looking", 40.0)
    assert "desk.research" not in shown.model_dump_json()
    for item in ("raw text", {"rows": [1, 2]}, {"message": 7}):
        assert projection.runtime(keel.RuntimeEvent(kind="flow.stream", payload={"path": "p", "item": item})) is None


def test_a_flow_stream_item_with_a_partial_is_task_partial() -> None:
    """A flow step passes on the fields an agent streams (issue 22's desk: the page follows the flow)."""
    projection = Projection("exe_1")

    def shown(item: object) -> keel.ProductEvent | None:
        return projection.runtime(keel.RuntimeEvent(kind="flow.stream", payload={"path": "p", "item": item}))

    grew = shown({"partial": {"field": "summary", "delta": "A ", "value": "A ", "complete": False}})
    assert grew is not None and grew.type == "task.partial"
    assert grew.data == {"field": "summary", "delta": "A ", "value": "A ", "complete": False}
    done = shown({"partial": {"field": "category", "value": "refund", "complete": True}})
    assert done is not None and done.data == {"field": "category", "delta": "", "value": "refund", "complete": True}
    reset = shown({"partial": {"reset": True}})
    assert reset is not None and reset.data == {"reset": True}
    assert shown({"partial": {"value": "no field"}}) is None


def test_a_restored_log_keeps_its_seqs_and_fills_what_was_not_kept() -> None:
    from keel_gateway import ProductLog

    def event(kind: str, seq: int) -> keel.ProductEvent:
        return keel.ProductEvent(type=kind, task_id="e", execution_id="e", seq=seq)  # type: ignore[arg-type]

    log = ProductLog("acme", "e")
    log.restore([event("task.started", 1), event("task.waiting", 4)])  # 2 and 3 were partials
    assert [(f.event.seq, f.event.type) for f in log.frames] == [
        (1, "task.started"), (2, "task.progress"), (3, "task.progress"), (4, "task.waiting"),
    ]  # fmt: skip
    assert log.stored == 2 and log.frames[3].sse.startswith(b"id: 4\n") and len(log) == 4
    assert log.append(event("task.completed", 0)).seq == 5


async def test_a_hub_with_state_continues_a_kept_log_and_keeps_what_it_adds() -> None:
    from keel_gateway.state import GatewayState

    async with keel.Runtime(make_host(), keel.Stack()) as runtime:
        runtime.use_model(ScriptedModel([ANSWER], chunks=3))
        state = GatewayState(runtime)
        execution = await agent().start("otters", runtime=runtime)
        kept = keel.ProductEvent(type="task.progress", task_id=execution.id, execution_id=execution.id, seq=1)
        await state.append_product(execution.tenant, execution.id, kept, expected_seq=0)
        log = ProductHub(runtime, state=state).log(execution)
        with anyio.fail_after(10):
            async for _ in log.follow():
                pass
        events = [frame.event for frame in log.frames]
        seqs = [e.seq for e in events]
        assert seqs == list(range(1, len(seqs) + 1)) and events[0].type == "task.progress"
        stored = await state.product_events(execution.tenant, execution.id)
        assert [e.seq for e in stored] == [e.seq for e in events if e.type != "task.partial"]
        assert stored[-1].type == "task.completed"


def test_failures_are_classified_by_kernel_error_codes_not_class_names() -> None:
    from keel_gateway.product import failure_code

    class TimeoutLookalikeError(keel.KeelError):
        code = "demo.refused"

    class Renamed(keel.KeelError):
        code = "agent.timeout"

    assert failure_code(keel.AgentTimeoutError("slow")) == "timeout"
    assert failure_code(Renamed("a class name without the word")) == "timeout"
    assert failure_code(TimeoutLookalikeError("a class name with it")) == "error"
    assert failure_code(keel.ExecutionCancelled("stop")) == "cancelled"
    assert failure_code(keel.OutputValidationError("bad", attempts=[])) == "invalid_output"
    assert failure_code(TimeoutError()) == "timeout"
    assert failure_code(ValueError("a bug")) == "error"
    assert failure_code({"code": "flow.wait_timeout"}) == "timeout"
    assert failure_code({"type": "SomethingTimeout"}) == "error", "a record is read by its code only"


class Review(keel.BaseExecution):
    """Three steps, then a wait: what a durable execution found after a restart shows at once."""

    kind = "review"

    async def body(self) -> object:
        for _ in range(3):
            self.emit("flow.step.completed", {})
        return await self.wait_for("approve", {"message": "publish this?"})


async def test_the_log_shows_a_wait_without_waiting_for_the_store_to_keep_what_came_before(monkeypatch) -> None:
    """The projection runs ahead of the store: while every write of the product stream is held, a
    log that starts on an execution already waiting (found after a restart) shows its wait, then
    keeps every event once the store takes them (a view read that wait from the log, and missed it
    when the store was slow: tests/test_gateway_temporal.py)."""
    from keel_gateway.state import GatewayState

    async with keel.Runtime(make_host(), keel.Stack()) as runtime:
        store, held = runtime.store(), anyio.Event()
        append = store.append

        async def slow_append(tenant: str, stream: str, records: object, **options: object) -> int:
            if stream.startswith("gateway.product."):
                await held.wait()
            return await append(tenant, stream, records, **options)  # type: ignore[arg-type]

        monkeypatch.setattr(store, "append", slow_append)
        execution = Review(runtime).launch()
        with anyio.fail_after(10):
            while execution.status is not keel.ExecutionStatus.WAITING:
                await anyio.sleep(0.01)
        state = GatewayState(runtime)
        log = ProductHub(runtime, state=state).log(execution)
        with anyio.fail_after(10):
            while log.waiting_for is None:
                await log.changed()
        assert log.waiting_for["signals"][0]["message"] == "publish this?"
        assert await state.product_events(execution.tenant, execution.id) == []  # nothing kept yet
        held.set()
        await execution.signal("approve", {"ok": True}, request_id="r1")
        with anyio.fail_after(10):
            async for _ in log.follow():
                pass
        kept = await state.product_events(execution.tenant, execution.id)
        assert [(e.seq, e.type) for e in kept] == [(f.event.seq, f.event.type) for f in log.frames]
        assert [e.type for e in kept] == ["task.started", *["task.progress"] * 3, "task.waiting", "task.completed"]


async def test_a_restart_does_not_say_again_what_a_replaying_execution_said_before() -> None:
    """A found execution that tells its events again, seq for seq (a Temporal execution replays its
    steps and wait from the store), reaches the restarted gateway's log as the wait said once more
    (docs/service.md), then only what is new: not its start and steps a second time, which push
    channels sent on with new seqs (their X-Keel-Delivery did not catch them)."""
    from keel_gateway.state import GatewayState

    async with keel.Runtime(make_host(), keel.Stack()) as runtime:
        first = Review(runtime).launch()
        log = ProductHub(runtime, state=GatewayState(runtime)).log(first, new=True)
        with anyio.fail_after(10):
            await log.settled()
            while len(await GatewayState(runtime).product_events(first.tenant, first.id)) < len(log):
                await anyio.sleep(0.01)  # kept behind the log
        before = [(f.event.type, f.event.message) for f in log.frames]
        assert before == [("task.started", "started"), *[("task.progress", f"{n} step{'s' * (n > 1)} done") for n in (1, 2, 3)], ("task.waiting", "publish this?")]  # fmt: skip

        # the gateway restarts (a new hub and state over the same store); the execution, found
        # again, tells the same events with the same seqs, then goes on once answered
        again = Review(runtime)
        again.id = first.id
        runtime.task_group.start_soon(again.run)
        state = GatewayState(runtime)
        log = ProductHub(runtime, state=state).log(again)
        with anyio.fail_after(10):
            await log.ready.wait()
            while len(log) == log.restored:
                await log.changed()
        await again.signal("approve", {"ok": True}, request_id="r1")
        with anyio.fail_after(10):
            async for _ in log.follow():
                pass
        events = [(f.event.type, f.event.message) for f in log.frames]
        assert events[: len(before)] == before
        assert events[len(before) :] == [("task.waiting", "publish this?"), ("task.completed", "completed")]
        kept = await state.kept_products(first.tenant, first.id)
        assert [e.type for e, _ in kept] == [e for e, _ in events]
        assert [source for _, source in kept] == [1, 2, 3, 4, 5, 5, 6], "each with the seq it was projected from"


def test_repeats_end_at_the_first_event_that_was_not_kept_for_its_source_seq() -> None:
    """A found execution that numbers its events anew (a TriggerFlow copy: its start, then its
    wait) repeats only what projects to the very event kept for that seq; from the first that
    does not, everything is new, however it looks."""
    from keel_gateway.repeats import Repeats

    projection = Projection("exe_1")
    started = projection.runtime(keel.RuntimeEvent(kind="execution.started"))
    step = projection.runtime(keel.RuntimeEvent(kind="flow.step.completed"))
    wait = projection.waiting([{"name": "approve", "payload": "publish this?"}])
    assert started is not None and step is not None
    repeats = Repeats({1: started, 3: step, 5: wait}, wait)
    assert repeats.repeat(1, started.model_copy(), waiting=True), "its start again"
    assert not repeats.repeat(2, wait.model_copy(), waiting=True), "nothing was kept for seq 2: new"
    assert not repeats.repeat(3, step.model_copy(), waiting=False), "and all after it"

    replay = Repeats({1: started, 3: step, 5: wait}, wait)  # the same events, seq for seq
    assert replay.repeat(1, started.model_copy(), waiting=True) and replay.repeat(3, step.model_copy(), waiting=True)
    assert not replay.repeat(5, wait.model_copy(), waiting=True), "the wait it was at: said once more"
    assert Repeats({5: wait}, wait).repeat(5, wait.model_copy(), waiting=False), "answered since: a repeat"
    assert Repeats({5: wait}, step).repeat(5, wait.model_copy(), waiting=True), "an earlier wait: a repeat"
