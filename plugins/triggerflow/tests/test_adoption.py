"""Executions that outlive their process: adoption through the kernel, restarts, cancels, waits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import SharedStore

import keel
from keel import ConflictError, ExecutionStatus, MemoryStore, NotFoundError, Runtime, load_stack
from keel.testing import make_host
from keel.testing.conformance import AdoptionConformance
from keel_triggerflow import FlowError, TriggerFlow, _history, plugin
from keel_triggerflow._history import due_waits, rows_by_status
from keel_triggerflow.definition import Registry


def approval() -> TriggerFlow:
    flow = TriggerFlow("approval")
    flow.to(lambda ctx: {"draft": ctx.value}).pause_for("approve").to(lambda ctx: ctx.value)
    return flow


def process(store: Any, tmp_path: Path, *flows: TriggerFlow, **kwargs: Any) -> Runtime:
    """A 'process': a fresh runtime over ``store`` with the TriggerFlow plugin and these runnables."""
    stack_file = tmp_path / "keel.toml"
    stack_file.write_text('store = "shared"\n')
    runtime = Runtime(make_host(plugin, SharedStore(store)), load_stack(stack_file), **kwargs)
    for flow in flows:
        runtime.add(flow)
    return runtime


class TestFlowAdoption(AdoptionConformance):
    @pytest.fixture
    def new_runtime(self, tmp_path: Path) -> Any:
        store, flow = MemoryStore(), approval()
        return lambda: process(store, tmp_path, flow)

    @pytest.fixture
    def start_waiting(self) -> Any:
        async def start(runtime: Runtime) -> Any:
            return await runtime.runnables.get("approval").start("t", runtime=runtime)

        return start


async def waiting_execution(runtime: Runtime, name: str = "approval", value: Any = "t", tenant: str = "default") -> str:
    execution = await runtime.runnables.get(name).start(value, runtime=runtime, tenant=tenant)
    with anyio.fail_after(10):
        while execution.status is not ExecutionStatus.WAITING:
            await anyio.sleep(0.01)
    return str(execution.id)


async def test_an_unknown_definition_is_still_found_readable_and_cancellable(tmp_path: Path) -> None:
    store = MemoryStore()
    async with process(store, tmp_path, approval()) as runtime:
        execution_id = await waiting_execution(runtime)
    async with process(store, tmp_path) as runtime:  # this process does not list the flow
        found = await runtime.find_execution(execution_id)
        assert found.status is ExecutionStatus.WAITING  # a reader sees it: not a 404
        with pytest.raises(FlowError, match="runs flow 'approval', which this process cannot find"):
            await found.signal("approve", "yes")
        await found.cancel("no definition here")
        assert found.status is ExecutionStatus.CANCELLED


async def test_a_data_flow_resumes_from_its_recorded_definition(tmp_path: Path) -> None:
    registry = Registry()

    @registry.chunk()
    async def ask(ctx: Any) -> Any:
        return await ctx.pause_for("approve", ctx.value)

    @registry.chunk()
    async def finish(ctx: Any) -> Any:
        return {"answer": ctx.value}

    store = MemoryStore()
    plan = {"name": "planned", "steps": [{"to": "ask"}, {"to": "finish"}]}
    async with process(store, tmp_path) as runtime:
        execution = registry.load(plan).create_execution(runtime)
        assert (await execution.run("q")).status == "waiting"
    # the next process knows the registry (through any flow it built), not this plan
    other = registry.load({"name": "other", "steps": [{"to": "finish"}]})
    async with process(store, tmp_path, other) as runtime:
        found = await runtime.find_execution(execution.id)
        await found.signal("approve", "yes")
        with anyio.fail_after(10):
            assert await found.result() == {"answer": "yes"}


async def test_cancel_after_run_returned_at_a_wait_is_durable(tmp_path: Path) -> None:
    store = MemoryStore()
    async with process(store, tmp_path) as runtime:
        execution = approval().create_execution(runtime)
        assert (await execution.run("x")).status == "waiting"
        await execution.cancel("changed my mind")
        assert execution.status is ExecutionStatus.CANCELLED
    async with process(store, tmp_path, approval()) as runtime:
        assert (await runtime.find_execution(execution.id)).status is ExecutionStatus.CANCELLED
        [row] = await rows_by_status(store, "default", "cancelled")
        assert row["id"] == execution.id and await rows_by_status(store, "default", "waiting") == []


async def test_cancel_then_close_at_a_wait_ends_cancelled_everywhere(tmp_path: Path) -> None:
    store = MemoryStore()
    async with process(store, tmp_path) as runtime:
        execution = approval().create_execution(runtime)
        await execution.start("x")
        with anyio.fail_after(10):
            while execution.status is not ExecutionStatus.WAITING:
                await anyio.sleep(0.01)
        await execution.cancel("stop")
        assert (await execution.close()).status == "cancelled"
    async with process(store, tmp_path, approval()) as runtime:
        assert (await runtime.find_execution(execution.id)).status is ExecutionStatus.CANCELLED


def test_flow_run_sync_waits_out_a_timed_wait() -> None:
    for on_timeout, expected in (("continue", "late"), ("fail", None)):
        flow = TriggerFlow(f"timed-{on_timeout}")
        flow.to(lambda ctx: ctx.value).pause_for("go", timeout=0.2, on_timeout=on_timeout, default="late")  # type: ignore[arg-type]
        flow.to(lambda ctx: ctx.value)
        if expected is None:
            with pytest.raises(FlowError, match="timed out"):
                flow.run_sync(1)
        else:
            assert flow.run_sync(1) == expected


def test_flow_run_of_an_untimed_wait_says_how_to_answer() -> None:
    with pytest.raises(FlowError, match="waits for 'approve' with no timeout"):
        approval().run_sync("x")


async def test_a_conflicting_answer_for_an_execution_owned_elsewhere_is_an_error(tmp_path: Path) -> None:
    store = MemoryStore()
    async with process(store, tmp_path, approval()) as owner:
        execution_id = await waiting_execution(owner)  # the owner keeps running it (and its lease)
        async with process(store, tmp_path, approval()) as other:
            found = await other.find_execution(execution_id)
            await found.signal("approve", "yes", request_id="r1")  # goes to the owner's inbox
            await found.signal("approve", "yes", request_id="r1")  # the same again: a no-op
            with pytest.raises(ConflictError, match="'r1' was already used with another payload"):
                await found.signal("approve", "no", request_id="r1")
        live = owner.executions.get(execution_id)
        with anyio.fail_after(10):
            assert await live.result() == "yes"


async def test_interrupt_ids_differ_between_executions(tmp_path: Path) -> None:
    async with process(MemoryStore(), tmp_path) as runtime:
        flow = approval()
        first, second = flow.create_execution(runtime), flow.create_execution(runtime)
        await first.run(1)
        await second.run(2)
        assert first.get_pending_interrupts()[0].id != second.get_pending_interrupts()[0].id


async def test_state_keys_can_be_deleted_and_stay_deleted_on_replay(tmp_path: Path) -> None:
    async def put(ctx: Any) -> Any:
        ctx.state["draft"] = "d"
        ctx.state["keep"] = 1
        return ctx.value

    async def drop(ctx: Any) -> Any:
        del ctx.state["draft"]
        with pytest.raises(KeyError):
            del ctx.state["never-set"]
        return await ctx.pause_for("go")

    flow = TriggerFlow("state")
    flow.to(put).to(drop).to(lambda ctx: sorted(ctx.state.to_dict()))
    store = MemoryStore()
    async with process(store, tmp_path) as runtime:
        execution = flow.create_execution(runtime)
        assert (await execution.run(0)).state == {"keep": 1}
    async with process(store, tmp_path, flow) as runtime:
        found = await runtime.find_execution(execution.id)
        await found.signal("go")
        with anyio.fail_after(10):
            assert await found.result() == ["keep"]


async def test_a_missing_resource_fails_only_that_execution(tmp_path: Path) -> None:
    from keel_triggerflow.runners import LocalRunner

    async def use(ctx: Any) -> Any:
        return ctx.resource("db")["x"] + ctx.value

    needy = TriggerFlow("needy", resources=["db"])
    needy.to(use)
    plain = TriggerFlow("plain")
    plain.to(lambda ctx: ctx.value * 2)
    store = MemoryStore()
    ids = {}
    async with process(store, tmp_path) as runtime:
        for flow, resources in ((needy, {"db": {"x": 1}}), (plain, None)):
            execution = flow.create_execution(runtime, resources=resources, lease_ttl=0.05)
            execution._input = 2
            await execution._prepare()  # history, index and lease written, then the process 'dies'
            runtime.executions.discard(execution.id)
            ids[flow.name] = execution.id
    await anyio.sleep(0.1)
    async with process(store, tmp_path) as runtime:
        recovered = await LocalRunner(runtime).recover([needy, plain], resources={})
        results = {e.id: e for e in recovered}
        with anyio.fail_after(10):
            with pytest.raises(FlowError, match="'db'"):
                await results[ids["needy"]].result()
            assert await results[ids["plain"]].result() == 4
    async with process(store, tmp_path, needy, plain, resources={"db": {"x": 1}}) as runtime:
        assert (await runtime.find_execution(ids["needy"])).status is ExecutionStatus.FAILED


async def test_ls_filters_by_status_in_the_store(tmp_path: Path) -> None:
    store = MemoryStore()
    done = TriggerFlow("done")
    done.to(lambda ctx: ctx.value)
    async with process(store, tmp_path) as runtime:
        waiting = [approval().create_execution(runtime) for _ in range(3)]
        for execution in waiting:
            await execution.run(1)
        finished = done.create_execution(runtime)
        await finished.run(1)
    rows = await rows_by_status(store, "default", "waiting")
    assert [r["id"] for r in rows] == [e.id for e in waiting]  # oldest first
    assert [r["id"] for r in await rows_by_status(store, "default", "waiting", last=2)] == [e.id for e in waiting[1:]]
    assert [r["id"] for r in await rows_by_status(store, "default", "completed")] == [finished.id]
    assert await rows_by_status(store, "default", "running") == []


async def test_a_foreign_answer_to_find_execution_is_refused(tmp_path: Path) -> None:
    class Liar:
        @keel.hookimpl
        def keel_find_execution(self, runtime: Any, execution_id: str, tenant: str) -> Any:
            return runtime.executions.list("other")[0] if runtime.executions.list("other") else None

    async with Runtime(make_host(Liar())) as runtime:
        execution = approval().create_execution(runtime, tenant="other")
        await execution.run(1)
        runtime.executions.add(execution)
        with pytest.raises(keel.KeelError, match="must return an Execution with that id and tenant"):
            await runtime.find_execution("x", "default")
        with pytest.raises(NotFoundError):
            await Runtime(make_host()).find_execution("x", "default")


async def test_a_deposed_owner_cannot_append_a_single_record(tmp_path: Path) -> None:
    """Fencing: the owner's heartbeat stops (as when its event loop is blocked past the TTL);
    another process takes the execution over; the old owner's step then completes, and its
    append is refused: the history holds the new owner's records only."""
    from keel_triggerflow._history import stream_name

    gate = anyio.Event()
    runs: list[str] = []

    async def slow(ctx: Any) -> Any:
        runs.append(ctx.idempotency_key)
        await gate.wait()
        return ctx.value + 1

    flow = TriggerFlow("fenced")
    flow.to(slow).to(lambda ctx: ctx.value * 10)
    store = MemoryStore()
    async with process(store, tmp_path) as first, process(store, tmp_path) as second:
        old = flow.create_execution(first, lease_ttl=0.2)

        async def no_heartbeat() -> None:
            return None

        old._journal.heartbeat = no_heartbeat  # type: ignore[method-assign]
        await old.start(1)
        with anyio.fail_after(10):
            while not runs:
                await anyio.sleep(0.01)
        await anyio.sleep(0.3)  # the lease expires: nobody renewed it
        new = await flow.load(old.id, second, lease_ttl=5)
        await new.resume()
        with anyio.fail_after(10):
            while len(runs) < 2:
                await anyio.sleep(0.01)
        gate.set()
        with anyio.fail_after(10):
            assert await new.result() == 20
            with pytest.raises(FlowError, match="taken over by another process"):
                await old.result()
    records = [r.data for r in await store.read("default", stream_name(old.id))]
    assert [r["t"] for r in records] == ["start", "c", "c", "end"], records
    assert records[-1]["status"] == "completed"


async def test_a_blocking_plain_chunk_keeps_its_lease(tmp_path: Path) -> None:
    """A plain chunk runs in a worker thread: while it blocks past the TTL the heartbeat goes on,
    so no other process can take the execution over."""
    import time

    from keel_triggerflow import LeaseError

    started = anyio.Event()

    def blocking(ctx: Any) -> Any:
        anyio.from_thread.run_sync(started.set)
        time.sleep(0.8)  # four lease TTLs
        return ctx.value + 1

    flow = TriggerFlow("blocking")
    flow.to(blocking)
    store = MemoryStore()
    async with process(store, tmp_path) as first, process(store, tmp_path) as second:
        owner = flow.create_execution(first, lease_ttl=0.2)
        await owner.start(1)
        with anyio.fail_after(10):
            await started.wait()
        await anyio.sleep(0.5)  # well past the TTL, while the chunk still blocks
        other = await flow.load(owner.id, second)
        with pytest.raises(LeaseError, match="owned by"):
            await other.resume()
        with anyio.fail_after(10):
            assert await owner.result() == 2


async def test_a_stale_copy_never_runs_an_execution_again(tmp_path: Path) -> None:
    """Process B read an execution while it waited; process A then answered it and ran it to the
    end. B's copy is stale: the same answer sent to B again (a client retrying through another
    server) must not run the rest of the flow a second time (the two-server drill found this),
    and neither may a cancel or a resume through B's copy."""
    store = MemoryStore()
    runs: list[str] = []

    async def shipped(ctx: Any) -> Any:
        runs.append(ctx.idempotency_key)
        return ctx.value

    flow = TriggerFlow("approval")
    flow.to(lambda ctx: {"draft": ctx.value}).pause_for("approve").to(shipped)
    async with process(store, tmp_path, flow) as a, process(store, tmp_path, flow) as b:
        execution_id = await waiting_execution(a)
        stale = await b.find_execution(execution_id)
        assert stale.status is ExecutionStatus.WAITING
        owned = a.executions.get(execution_id)
        await owned.signal("approve", "yes", request_id="r1")
        with anyio.fail_after(10):
            assert await owned.result() == "yes"
        await stale.signal("approve", "yes", request_id="r1")  # the retry: a no-op, as on A
        with pytest.raises(FlowError, match="waits for no signal|not waiting"):
            await stale.signal("approve", "no", request_id="r2")
        await stale.cancel("too late")
        assert stale.status is ExecutionStatus.COMPLETED
        with anyio.fail_after(10):
            assert await stale.result() == "yes"
    records = [r.data["t"] for r in await store.read("default", f"triggerflow/{execution_id}")]
    assert records.count("end") == 1 and records.count("sig") == 1, records
    assert len(runs) == 1, runs


async def test_a_reader_of_a_copy_sees_what_the_owner_did(tmp_path: Path) -> None:
    """Process B holds a copy of an execution that process A runs; each find_execution in B (what
    the gateway's GET does) shows where A has got to, not where it was when B first read it."""
    store, flow = MemoryStore(), approval()
    async with process(store, tmp_path, flow) as a, process(store, tmp_path, flow) as b:
        execution_id = await waiting_execution(a)
        copy = await b.find_execution(execution_id)
        assert copy.status is ExecutionStatus.WAITING
        owned = a.executions.get(execution_id)
        await owned.signal("approve", "yes", request_id="r1")
        with anyio.fail_after(10):
            assert await owned.result() == "yes"
        again = await b.find_execution(execution_id)
        assert again is copy and again.status is ExecutionStatus.COMPLETED
        with anyio.fail_after(10):
            assert await again.result() == "yes"
            assert [e async for e in again.events()]  # a reader following the copy ends too


def timed_approval() -> TriggerFlow:
    flow = TriggerFlow("timed")
    flow.to(lambda ctx: ctx.value).pause_for("approve", timeout=0.5, on_timeout="continue", default="late").to(
        lambda ctx: {"answer": ctx.value}
    )
    return flow


async def test_a_timed_wait_has_a_deadline_key_until_it_is_answered(tmp_path: Path) -> None:
    store = MemoryStore()
    async with process(store, tmp_path, timed_approval()) as runtime:
        execution = timed_approval().create_execution(runtime)
        await execution.run(1)
        [(deadline, execution_id)] = await due_waits(store, "default")
        assert execution_id == execution.id and deadline == pytest.approx(
            execution.get_pending_interrupts()[0].deadline
        )
        await execution.signal("approve", "yes", request_id="r1")
        await execution.run()
        assert execution.status is ExecutionStatus.COMPLETED
    assert await due_waits(store, "default") == []


async def test_executions_indexed_before_the_status_keys_are_reindexed_on_open(tmp_path: Path) -> None:
    """A store written before the status and deadline keys (issue 23's trap): `ls --status` and
    start-up adoption missed its executions. The first process that opens it indexes them again."""
    store = MemoryStore()
    async with process(store, tmp_path, approval(), timed_approval()) as runtime:
        untimed = approval().create_execution(runtime)
        await untimed.run("t")
        timed = timed_approval().create_execution(runtime)
        await timed.run("t")
    # what the older version left: index rows only (no status keys, deadline keys, version, tenant list)
    for key in await store.list_keys("default", "triggerflow"):
        if key.startswith(("by:", "due:")) or key == "index":
            await store.delete("default", "triggerflow", key)
    await store.delete(_history.TENANTS, "tenants", "default")
    _history._indexed.clear()  # a new process: nothing known about this store yet
    _history._known_tenants.clear()
    assert await rows_by_status(store, "default", "waiting") == []
    async with process(store, tmp_path, approval(), timed_approval()) as runtime:
        await runtime.adopt_executions()
        waiting = {row["id"] for row in await rows_by_status(store, "default", "waiting")}
        assert untimed.id in waiting
        found = await runtime.find_execution(timed.id)
        with anyio.fail_after(20):  # its timer was armed from the rebuilt deadline key: it fires
            assert await found.result() == {"answer": "late"}
    assert await _history.list_tenants(store) == ["default"]
    assert (await store.get("default", "triggerflow", "index")).value == {"v": _history.INDEX_VERSION}
    assert await _history.reindex(store, "default") == 2  # idempotent: the same keys again
    assert [r["id"] for r in await rows_by_status(store, "default", "waiting")] == [untimed.id]
