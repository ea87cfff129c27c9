"""Durability on the kernel's MemoryStore: several Runtimes over one store act as several processes."""

from __future__ import annotations

import json
import time
from typing import Any

import anyio
import pytest
from pydantic import BaseModel

from keel import ConflictError, ExecutionStatus, MemoryStore
from keel_triggerflow import (
    FlowError,
    LeaseError,
    MissingResourceError,
    StepFailed,
    TriggerFlow,
    WaitTimeout,
    purge_executions,
)


def counting_flow(runs: list[str], *, stop_at: int | None = None, steps: int = 6) -> TriggerFlow:
    """``steps`` steps adding one; the step ``stop_at`` hangs the first time (a process 'dies' there)."""
    flow = TriggerFlow("count")

    def make(i: int) -> Any:
        async def step(ctx: Any) -> int:
            runs.append(ctx.path)
            ctx.state.set("last", i)
            if i == stop_at and runs.count(ctx.path) == 1:
                await anyio.sleep(30)
            return ctx.value + 1

        step.__name__ = f"step{i}"
        return step

    for i in range(steps):
        flow.to(make(i))
    return flow


async def test_resume_in_a_new_process_never_reruns_completed_steps(make_runtime: Any) -> None:
    store = MemoryStore()
    runs: list[str] = []
    flow = counting_flow(runs, stop_at=3)
    first = flow.create_execution(make_runtime(store))
    with anyio.move_on_after(0.3):  # the 'process' dies while step 3 runs
        await first.run(0)
    assert runs == ["@0", "@1", "@2", "@3"]

    again = await flow.load(first.id, make_runtime(store))
    snapshot = await again.run()
    assert snapshot.status == "completed"
    assert snapshot.result == 6
    assert snapshot.state == {"last": 5}
    assert runs == ["@0", "@1", "@2", "@3", "@3", "@4", "@5"]  # only the unfinished step ran again


async def test_a_resume_in_a_new_process_stays_in_the_trace_the_execution_started_in(make_runtime: Any) -> None:
    store = MemoryStore()
    flow = counting_flow([], stop_at=3)
    first = flow.create_execution(make_runtime(store))
    with anyio.move_on_after(0.3):  # the 'process' dies while step 3 runs
        await first.run(0)
    with anyio.fail_after(5):  # the first run never finished: its events() would follow forever
        started = await anext(aiter(first.events(-1)))
    assert started.kind == "execution.started"

    again = await flow.load(first.id, make_runtime(store))
    assert (await again.run()).status == "completed"
    events = [e async for e in again.events(-1)]
    assert {e.trace_id for e in events} == {started.trace_id}  # one trace over both processes
    resumed = next(e for e in events if e.kind == "execution.started")
    assert resumed.payload["resumed"] is True
    assert resumed.span_id != started.span_id and resumed.parent_span_id == started.span_id
    steps = [e for e in events if e.kind == "flow.step.started"]
    assert steps and all(e.parent_span_id == resumed.span_id for e in steps)  # this run's steps


async def test_a_finished_execution_loads_with_its_result(make_runtime: Any) -> None:
    store = MemoryStore()
    runs: list[str] = []
    flow = counting_flow(runs)
    execution = flow.create_execution(make_runtime(store))
    await execution.run(0)
    loaded = await flow.load(execution.id, make_runtime(store))
    assert loaded.status is ExecutionStatus.COMPLETED
    assert await loaded.result() == 6
    assert len(runs) == 6


def approval_flow(published: list[Any], *, timeout: float | None = None, on_timeout: str = "fail") -> TriggerFlow:
    async def draft(ctx: Any) -> str:
        return f"draft: {ctx.value}"

    async def review(ctx: Any) -> Any:
        return await ctx.pause_for(
            "approval", {"draft": ctx.value}, timeout=timeout, on_timeout=on_timeout, default="auto"
        )

    async def publish(ctx: Any) -> dict[str, Any]:
        published.append((ctx.idempotency_key, ctx.value))
        return {"published": ctx.value}

    flow = TriggerFlow("approval")
    flow.to(draft).to(review).to(publish)
    return flow


async def test_approval_across_processes(make_runtime: Any) -> None:
    store = MemoryStore()
    published: list[Any] = []
    flow = approval_flow(published)
    first = flow.create_execution(make_runtime(store))
    snapshot = await first.run("hello")
    assert snapshot.status == "waiting"
    [interrupt] = snapshot.pending_interrupts
    assert interrupt.name == "approval" and interrupt.payload == {"draft": "draft: hello"}

    second = await flow.load(first.id, make_runtime(store))
    assert [i.id for i in second.get_pending_interrupts()] == [interrupt.id]
    await second.continue_with(interrupt.id, "yes", request_id="req-1")
    await second.continue_with(interrupt.id, "yes", request_id="req-1")  # duplicate: no-op
    with pytest.raises(ConflictError):
        await second.continue_with(interrupt.id, "no", request_id="req-1")
    snapshot = await second.run()
    assert snapshot.status == "completed" and snapshot.result == {"published": "yes"}
    assert len(published) == 1
    with pytest.raises(FlowError, match="completed"):
        await second.signal("approval", "again", request_id="req-2")


async def test_reject_path(make_runtime: Any) -> None:
    published: list[Any] = []
    flow = approval_flow(published)
    approve_or_reject = TriggerFlow("gate")
    approve_or_reject.to(flow).if_condition(lambda v: v["published"] == "reject").to(
        lambda ctx: "rejected"
    ).end_condition()
    execution = approve_or_reject.create_execution(make_runtime(MemoryStore()))
    async with execution:
        await execution.start("x")
        with anyio.fail_after(10):
            while not execution.get_pending_interrupts():
                await anyio.sleep(0.01)
        await execution.signal("approval", "reject")
        assert await execution.result() == "rejected"


async def test_answering_an_interrupt_that_is_not_waiting_is_an_error(make_runtime: Any) -> None:
    flow = approval_flow([])
    execution = flow.create_execution(make_runtime(MemoryStore()))
    await execution.run("x")
    with pytest.raises(FlowError, match="not waiting"):
        await execution.continue_with("i-unknown", "yes")
    with pytest.raises(FlowError, match="not waiting for 'nothing-like-this'"):
        await execution.signal("nothing-like-this", 1)


@pytest.mark.parametrize("on_timeout", ["fail", "continue"])
async def test_wait_timeout(make_runtime: Any, on_timeout: str) -> None:
    published: list[Any] = []
    flow = approval_flow(published, timeout=0.05, on_timeout=on_timeout)
    execution = flow.create_execution(make_runtime(MemoryStore()))
    async with execution:
        await execution.start("x")
        if on_timeout == "fail":
            with pytest.raises(Exception, match="timed out"):
                await execution.result()
            assert published == []
        else:
            assert await execution.result() == {"published": "auto"}


async def test_a_timeout_that_passed_while_no_process_ran_fires_on_resume(make_runtime: Any) -> None:
    store = MemoryStore()
    flow = approval_flow([], timeout=0.05)
    first = flow.create_execution(make_runtime(store))
    assert (await first.run("x")).status == "waiting"
    await anyio.sleep(0.1)
    second = await flow.load(first.id, make_runtime(store))
    snapshot = await second.run()
    assert snapshot.status == "failed" and "timed out" in (snapshot.error or "")
    with pytest.raises(StepFailed) as failed:
        await second.result()
    assert failed.value.error_type == WaitTimeout.__name__


async def test_one_owner_at_a_time_and_an_expired_lease_is_recoverable(make_runtime: Any) -> None:
    store = MemoryStore()
    runs: list[str] = []
    flow = counting_flow(runs, stop_at=1)
    owner = flow.create_execution(make_runtime(store), lease_ttl=0.3)
    async with anyio.create_task_group() as tg:
        tg.start_soon(owner.run, 0)
        with anyio.fail_after(10):
            while len(runs) < 2:
                await anyio.sleep(0.01)
        other = await flow.load(owner.id, make_runtime(store))
        with pytest.raises(LeaseError, match="owned by"):
            await other.run()
        tg.cancel_scope.cancel()
    # the owner's process is gone without releasing: simulate by re-taking the lease as a stranger
    lease = f"lease:{owner.id}"
    await store.put("default", "triggerflow", lease, {"owner": "dead", "expires": time.time() + 60})
    blocked = await flow.load(owner.id, make_runtime(store))
    with pytest.raises(LeaseError):
        await blocked.run()
    # the stranger's lease runs out (written as expired: no sleep racing a TTL)
    await store.put("default", "triggerflow", lease, {"owner": "dead", "expires": time.time() - 1})
    recovered = await flow.load(owner.id, make_runtime(store))
    assert (await recovered.run()).result == 6


async def test_live_resources_are_reinjected_by_name(make_runtime: Any) -> None:
    store = MemoryStore()

    async def use(ctx: Any) -> str:
        return ctx.resource("db").lookup(ctx.value)

    class Db:
        def lookup(self, key: str) -> str:
            return key.upper()

    flow = TriggerFlow("res", resources=["db"])
    flow.to(use).pause_for("go").to(lambda ctx: ctx.value)
    first = flow.create_execution(make_runtime(store), resources={"db": Db()})
    assert (await first.run("a")).status == "waiting"
    with pytest.raises(MissingResourceError, match="'db'"):
        await (await flow.load(first.id, make_runtime(store))).run()
    loaded = await flow.load(first.id, make_runtime(store), resources={"db": Db()})
    await loaded.signal("go", "B")
    assert (await loaded.run()).result == "B"


async def test_history_bytes_per_step_do_not_grow_with_the_graph(make_runtime: Any) -> None:
    sizes = {}
    for n in (100, 1000):
        store = MemoryStore()
        flow = counting_flow([], steps=n)
        execution = flow.create_execution(make_runtime(store))
        await execution.run(0)
        records = await store.read("default", f"triggerflow/{execution.id}")
        steps = [r.data for r in records if r.data["t"] == "c"]
        assert len(steps) == n
        sizes[n] = max(len(json.dumps(r)) for r in steps)
    assert sizes[1000] <= sizes[100] + 3  # one more digit in step id, output and state: nothing else grows


async def test_loop_history_stays_constant_per_iteration(make_runtime: Any) -> None:
    store = MemoryStore()

    async def inc(ctx: Any) -> int:
        return ctx.value + 1

    flow = TriggerFlow("loop")
    flow.to(inc).emit("tick")
    flow.when("tick").to(inc).if_condition(lambda v: v < 300).emit("tick").else_condition().end().end_condition()
    execution = flow.create_execution(make_runtime(store))
    await execution.run(0)
    assert await execution.result() == 300
    records = [r.data for r in await store.read("default", f"triggerflow/{execution.id}") if r.data["t"] == "c"]
    assert len({len(r["p"]) for r in records[1:]}) == 1  # every iteration's step id has the same size


async def test_durable_emit_loop_and_batch_resume(make_runtime: Any) -> None:
    store = MemoryStore()
    runs: list[str] = []
    hung: list[str] = []

    async def work(ctx: Any) -> int:
        runs.append(ctx.path)
        if ctx.value == 7 and not hung:
            hung.append(ctx.path)
            await anyio.sleep(30)
        return ctx.value * 10

    flow = TriggerFlow("fan")
    flow.for_each(concurrency=4).to(work).end_for_each().to(lambda ctx: sum(ctx.value))
    first = flow.create_execution(make_runtime(store))
    with anyio.move_on_after(0.3):
        await first.run(list(range(10)))
    done_before = {r.data["p"] for r in await store.read("default", f"triggerflow/{first.id}") if r.data["t"] == "c"}
    runs.clear()
    second = await flow.load(first.id, make_runtime(store))
    assert (await second.run()).result == 450
    assert not done_before & set(runs[:-1])  # nothing completed before ran again


async def test_retention_deletes_closed_histories(make_runtime: Any) -> None:
    store = MemoryStore()
    runtime = make_runtime(store)
    flow = counting_flow([], steps=2)
    done = flow.create_execution(runtime)
    await done.run(0)
    waiting = approval_flow([]).create_execution(runtime)
    await waiting.run("x")
    assert await purge_executions(store, older_than=3600) == 0
    assert await purge_executions(store, older_than=0) == 1
    assert await store.last_seq("default", f"triggerflow/{done.id}") == 0
    assert await store.last_seq("default", f"triggerflow/{waiting.id}") > 0


async def test_durability_none_writes_nothing(make_runtime: Any) -> None:
    store = MemoryStore()
    flow = counting_flow([], steps=3)
    execution = flow.create_execution(make_runtime(store), durability="none")
    await execution.run(0)
    assert await store.list_streams("default") == []


async def test_batch_mode_groups_appends(make_runtime: Any) -> None:
    store = MemoryStore()
    flow = counting_flow([], steps=200)
    execution = flow.create_execution(make_runtime(store), durability="batch")
    await execution.run(0)
    records = await store.read("default", f"triggerflow/{execution.id}")
    assert sum(1 for r in records if r.data["t"] == "c") == 200
    assert len({r.time for r in records}) < 20  # a handful of appends, not one per step


async def test_signals_are_recorded_once_per_request_id_across_processes(make_runtime: Any) -> None:
    store = MemoryStore()
    flow = approval_flow([])
    first = flow.create_execution(make_runtime(store))
    await first.run("x")
    a = await flow.load(first.id, make_runtime(store))
    await a.signal("approval", "ok", request_id="r")
    await a.run()
    b = await flow.load(first.id, make_runtime(store))
    with pytest.raises(ConflictError):
        await b.signal("approval", "different", request_id="r")
    sigs = [r for r in await store.read("default", f"triggerflow/{first.id}") if r.data["t"] == "sig"]
    assert len(sigs) == 1


async def test_a_released_waiting_execution_continues_in_the_same_process(make_runtime: Any) -> None:
    published: list[Any] = []
    flow = approval_flow(published)
    execution = flow.create_execution(make_runtime(MemoryStore()))
    assert (await execution.run("x")).status == "waiting"
    await execution.signal("approval", "ok")
    snapshot = await execution.run()
    assert snapshot.status == "completed" and snapshot.result == {"published": "ok"}
    seqs = [e.seq async for e in execution.events()]
    assert seqs == list(range(1, len(seqs) + 1))


async def test_durability_none_cannot_continue_after_release() -> None:
    execution = approval_flow([]).create_execution(durability="none")
    assert (await execution.run("x")).status == "waiting"
    with pytest.raises(FlowError, match="durability='none'"):
        await execution.run()


class Point(BaseModel):
    x: int


async def test_pydantic_outputs_come_back_as_models_on_replay(make_runtime: Any) -> None:
    store = MemoryStore()

    async def make_point(ctx: Any) -> Point:
        return Point(x=ctx.value)

    async def use(ctx: Any) -> int:
        return ctx.value.x * 10  # attribute access: a dict would fail here

    async def gate(ctx: Any) -> Any:
        await ctx.pause_for("go")
        return ctx.value

    flow = TriggerFlow("models")
    flow.to(make_point).to(gate).to(use)
    first = flow.create_execution(make_runtime(store))
    assert (await first.run(4)).status == "waiting"
    records = [r.data for r in await store.read("default", f"triggerflow/{first.id}") if r.data["t"] == "c"]
    assert records[0]["m"].endswith(":Point")
    replayed = await flow.load(first.id, make_runtime(store))
    await replayed.signal("go")
    assert (await replayed.run()).result == 40


async def test_an_execution_is_a_keel_execution(make_runtime: Any) -> None:
    from keel import Execution

    execution = counting_flow([], steps=1).create_execution(make_runtime(MemoryStore()))
    assert isinstance(execution, Execution)
    assert execution.kind == "flow" and execution.status.value == "pending"


async def test_an_answer_left_in_the_inbox_reaches_the_next_owner(make_runtime: Any) -> None:
    store = MemoryStore()
    published: list[Any] = []
    flow = approval_flow(published)
    first = flow.create_execution(make_runtime(store))
    assert (await first.run("x")).status == "waiting"
    [interrupt] = first.get_pending_interrupts()
    # what a process that found the lease held writes; here its owner went away before reading it
    await store.append("default", f"triggerflow/{first.id}/inbox", [{"i": interrupt.id, "r": "r-7", "v": "yes"}])
    async with make_runtime(store) as runtime:
        again = await flow.load(first.id, runtime)
        await again.start()
        with anyio.fail_after(10):
            assert await again.result() == {"published": "yes"}
    sigs = [r.data for r in await store.read("default", f"triggerflow/{first.id}") if r.data["t"] == "sig"]
    assert [(s["r"], s.get("x")) for s in sigs] == [("r-7", 1)]


async def test_an_execution_that_never_waits_never_reads_its_inbox(make_runtime: Any) -> None:
    class CountingStore(MemoryStore):
        subscribed: list[str] = []

        def subscribe(self, tenant: str, stream: str, *, after: int = 0) -> Any:
            self.subscribed.append(stream)
            return super().subscribe(tenant, stream, after=after)

    store = CountingStore()
    execution = counting_flow([], steps=20).create_execution(make_runtime(store))
    await execution.run(0)
    assert store.subscribed == []
    waiting = approval_flow([]).create_execution(make_runtime(store))
    assert (await waiting.run("x")).status == "waiting"
    assert store.subscribed == [f"triggerflow/{waiting.id}/inbox"]


async def test_a_signal_from_another_process_reaches_the_live_owner(make_runtime: Any) -> None:
    store = MemoryStore()
    published: list[Any] = []
    flow = approval_flow(published)
    async with make_runtime(store) as owner_runtime:
        owner = flow.create_execution(owner_runtime)
        await owner.start("x")
        with anyio.fail_after(10):
            while not owner.get_pending_interrupts():
                await anyio.sleep(0.01)
        other = await flow.load(owner.id, make_runtime(store))  # another process, lease held by the owner
        await other.signal("approval", "yes", request_id="r-1")
        with pytest.raises(ConflictError):
            await other.signal("approval", "no", request_id="r-1")
        with anyio.fail_after(10):
            assert await owner.result() == {"published": "yes"}
    assert len(published) == 1
    sigs = [r.data for r in await store.read("default", f"triggerflow/{owner.id}") if r.data["t"] == "sig"]
    assert [s["r"] for s in sigs] == ["r-1"]


async def test_the_index_keeps_the_latest_fact_when_writes_land_out_of_order() -> None:
    from keel_triggerflow._history import list_index, write_index

    store = MemoryStore()
    await write_index(store, "default", "e1", seq=1, flow="f", status="running")
    await write_index(store, "default", "e1", seq=9, status="completed")
    await write_index(store, "default", "e1", seq=5, status="waiting")  # a background write, late
    [row] = await list_index(store, "default")
    assert (row["status"], row["seq"], row["flow"]) == ("completed", 9, "f")

    async def write(seq: int) -> None:  # racing writers: the highest seq wins, whatever the order
        await write_index(store, "default", "e2", seq=seq, status=f"s{seq}")

    async with anyio.create_task_group() as tg:
        for seq in (3, 7, 5, 1):
            tg.start_soon(write, seq)
    rows = {r["id"]: r for r in await list_index(store, "default")}
    assert rows["e2"]["status"] == "s7"


async def test_a_flush_that_comes_while_another_writes_returns_once_that_write_is_done() -> None:
    """A flush with nothing of its own queued (an answer's commit_with_index flushes first) that
    comes while another commit is being written returns once that write is done; it waited for a
    next batch that never came (a signal right after an external event's chain hung for ever)."""
    from keel_triggerflow._history import History

    gate = anyio.Event()

    class SlowStore(MemoryStore):
        async def append(self, *args: Any, **kwargs: Any) -> int:
            await gate.wait()
            return await super().append(*args, **kwargs)

    history = History(SlowStore(), "default", "e1", 0, "sync")
    flushed = anyio.Event()

    async def flush() -> None:
        await history.flush()
        flushed.set()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(history.commit, {"t": "c", "p": "@0"})
            await anyio.wait_all_tasks_blocked()  # the commit is being written
            tg.start_soon(flush)
            await anyio.wait_all_tasks_blocked()
            gate.set()
            await flushed.wait()
    assert history.seq == 1
