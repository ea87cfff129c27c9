"""The temporal runner against a real Temporal dev server.

keel-triggerflow is not installed here (a plugin's own tests run with the kernel alone), so the
flows are what the runner reads of a TriggerFlow: ``name``, ``definition`` (the data form) and
``registry.chunks``. tests/test_runner_temporal.py runs real TriggerFlow flows on both runners."""

from __future__ import annotations

import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import pytest

import keel
from keel import ExecutionStatus, Runtime
from keel.testing import make_host
from keel_runner_temporal import (
    TemporalExecutionFailed,
    TemporalRunner,
    TemporalRunnerError,
    TemporalUnavailableError,
    plugin,
)
from keel_runner_temporal.devserver import find_cli
from keel_runner_temporal.stepevents import Traces


def data_flow(name: str, steps: list[dict[str, Any]], **chunks: Any) -> Any:
    return SimpleNamespace(
        name=name,
        definition={"name": name, "steps": steps},
        registry=SimpleNamespace(chunks={k: (fn, None, None) for k, fn in chunks.items()}),
    )


async def fetch(ctx: Any) -> dict[str, Any]:
    return {"name": ctx.value, "by": ctx.execution_id, "tenant": ctx.tenant}


def shout(ctx: Any) -> dict[str, Any]:  # a sync chunk runs too
    return {**ctx.value, "name": ctx.value["name"].upper() + "!"}


def runner_for(runtime: Runtime, address: str, **options: Any) -> TemporalRunner:
    # a task queue of its own per test: no other test's worker takes its tasks
    return TemporalRunner(runtime, {"address": address, "task_queue": f"q-{uuid.uuid4().hex[:8]}", **options})


async def test_a_linear_flow_is_one_workflow_whose_id_is_the_execution_id(temporal_address: str) -> None:
    flow = data_flow("greet", [{"to": "fetch"}, {"to": "shout"}, {"end": True}, {"to": "never"}],
                     fetch=fetch, shout=shout, never=lambda ctx: "ran after end")  # fmt: skip
    async with Runtime(make_host()) as runtime:
        runner = runner_for(runtime, temporal_address)
        execution = await runner.start(flow, "ada", tenant="acme")
        with anyio.fail_after(60):
            result = await execution.result()
        assert result == {"name": "ADA!", "by": execution.id, "tenant": "acme"}
        assert isinstance(execution, keel.Execution)
        assert execution.status is ExecutionStatus.COMPLETED
        described = await (await runner.client()).get_workflow_handle(execution.id).describe()
        assert described.id == execution.id and described.workflow_type == "keel.flow"
        assert await execution.describe() is ExecutionStatus.COMPLETED
        # as on the local runner, `end` fixes the result and the steps after it still run
        assert await execution.position() == {"step": 4, "steps": 4, "chunk": "never", "waiting": None, "waits": []}
        events = [event async for event in execution.events()]
        steps = [(e.kind, e.payload["path"], e.payload["step"]) for e in events if e.kind.startswith("flow.step.")]
        assert steps == [
            (f"flow.step.{kind}", path, chunk)
            for path, chunk in (("@0", "fetch"), ("@1", "shout"), ("@3", "never"))
            for kind in ("started", "completed")
        ]  # as the local runner reports them
        assert [events[0].kind, events[-1].kind] == ["execution.started", "execution.completed"]
        # one trace; each step attempt's events in a span of its own, under the execution's
        assert {e.trace_id for e in events} == {execution.trace_id} and len(execution.trace_id) == 32
        assert {e.parent_span_id for e in events if e.kind.startswith("flow.step.")} == {execution.span_id}
        assert len({e.span_id for e in events if e.kind.startswith("flow.step.")}) == 3


async def test_a_flow_started_in_a_callers_trace_is_in_it_in_every_process(temporal_address: str) -> None:
    async def traced(ctx: Any) -> list[str]:
        return [ctx.trace_id, ctx.span_id]  # what an agent the step starts joins

    caller = keel.TraceParent(trace_id="ab" * 16, span_id="cd" * 8)  # a gateway request's traceparent
    flow = data_flow("traced", [{"to": "traced"}], traced=traced)
    async with Runtime(make_host()) as runtime, Runtime(make_host()) as other:
        runner = runner_for(runtime, temporal_address)
        with keel.continuing_trace(caller):
            execution = await runner.start(flow)
        with anyio.fail_after(60):
            trace_id, span_id = await execution.result()
        events = [e async for e in execution.events()]
        assert trace_id == caller.trace_id and {e.trace_id for e in events} == {caller.trace_id}
        assert events[0].parent_span_id == caller.span_id  # the execution's span, under the caller's
        assert span_id == next(e.span_id for e in events if e.kind == "flow.step.started")
        follower = TemporalRunner(other, {**runner.options.model_dump(), "worker": False})
        found = await follower.find(execution.id, "default")  # another process: the same trace
        assert found is not None and (found.trace_id, found.span_id) == (execution.trace_id, execution.span_id)
        # a worker that does not follow it reads the trace from the start's memo
        assert await Traces(runner_for(other, temporal_address)).of(execution.id) == caller.trace_id


async def test_the_same_execution_id_twice_is_a_conflict_and_resume_follows_it(temporal_address: str) -> None:
    flow = data_flow("once", [{"to": "fetch"}], fetch=fetch)
    async with Runtime(make_host()) as runtime:
        runner = runner_for(runtime, temporal_address)
        first = await runner.start(flow, "x", execution_id="flow_dedup_" + uuid.uuid4().hex)
        with pytest.raises(keel.ConflictError, match="already exists on Temporal"):
            await runner.start(flow, "y", execution_id=first.id)
        followed = await runner.resume(flow, first.id)
        with anyio.fail_after(60):
            assert await followed.result() == await first.result()
        assert (await followed.result())["name"] == "x"


async def test_a_failing_chunk_retries_as_declared_then_fails_the_execution(temporal_address: str) -> None:
    attempts: list[int] = []

    async def flaky(ctx: Any) -> str:
        attempts.append(ctx.attempt)
        raise ValueError(f"no luck on attempt {ctx.attempt} ({ctx.idempotency_key})")

    flow = data_flow("flaky", [{"to": "flaky", "retries": 1}], flaky=flaky)
    async with Runtime(make_host()) as runtime:
        execution = await runner_for(runtime, temporal_address).start(flow)
        with (
            anyio.fail_after(60),
            pytest.raises(  # worded as the local runner's StepFailed
                TemporalExecutionFailed,
                match=r"failed on Temporal: step @0 failed after 2 attempt\(s\): ValueError: no luck on attempt 2",
            ),
        ):
            await execution.result()
        assert attempts == [1, 2]  # as on the local runner
        assert execution.status is ExecutionStatus.FAILED
        assert await execution.describe() is ExecutionStatus.FAILED
        events = [event async for event in execution.events()]
        assert events[-1].kind == "execution.failed" and "no luck" in events[-1].payload["reason"]
        steps = [(e.kind, e.payload.get("attempt"), e.level) for e in events if e.kind.startswith("flow.step.")]
        assert steps == [  # the local runner's: a retry ends the first attempt, the last one fails the step
            ("flow.step.started", 1, "info"), ("flow.step.retry", 1, "warning"),
            ("flow.step.started", 2, "info"), ("flow.step.failed", None, "error"),
        ]  # fmt: skip
        assert events[-2].payload["error"] == {
            "type": "ValueError",
            "message": f"no luck on attempt 2 ({execution.id}:@0:2)",
        }


async def test_a_ctx_feature_not_on_temporal_fails_at_once_naming_it(temporal_address: str) -> None:
    attempts: list[int] = []

    async def tracing(ctx: Any) -> Any:
        attempts.append(ctx.attempt)
        return ctx.journal

    flow = data_flow("tracing", [{"to": "tracing", "retries": 5}], tracing=tracing)
    async with Runtime(make_host()) as runtime:
        execution = await runner_for(runtime, temporal_address).start(flow)
        with anyio.fail_after(60), pytest.raises(TemporalExecutionFailed, match=r"ctx\.journal is not available"):
            await execution.result()
        assert attempts == [1]  # not retried: retrying cannot help


async def test_a_wait_is_a_workflow_update_answered_once_per_request_id(temporal_address: str) -> None:
    def approved(ctx: Any) -> dict[str, Any]:
        return {"approved": ctx.value["ok"], "by": ctx.value["who"]}

    flow = data_flow(
        "approval",
        [{"to": "fetch"}, {"pause_for": "approve", "payload": "approve the order?"}, {"to": "approved"}],
        fetch=fetch,
        approved=approved,
    )
    async with Runtime(make_host()) as runtime:
        execution = await runner_for(runtime, temporal_address).start(flow, "ada")
        with anyio.fail_after(60):
            async for event in execution.events():
                if event.kind == "execution.waiting":
                    break
        interrupt = {"id": "i1", "name": "approve", "payload": "approve the order?", "path": "@1", "deadline": None}
        assert event.payload == {"interrupts": [interrupt]}
        assert execution.status is ExecutionStatus.WAITING
        position = await execution.position()
        assert position["waiting"] == interrupt and position["step"] == 1
        answer = {"ok": True, "who": "lee"}
        await execution.signal("approve", answer, request_id="r1")
        await execution.signal("approve", answer, request_id="r1")  # the same request again: a no-op
        with pytest.raises(keel.ConflictError, match="'r1' was already used"):
            await execution.signal("approve", {"ok": False, "who": "eve"}, request_id="r1")
        with anyio.fail_after(60):
            assert await execution.result() == {"approved": True, "by": "lee"}
        assert (await execution.position())["waiting"] is None


async def test_a_wait_that_times_out_continues_with_its_default_or_fails(temporal_address: str) -> None:
    steps: list[dict[str, Any]] = [{"pause_for": "go", "timeout": 0.5, "on_timeout": "continue", "default": "dflt"}]
    async with Runtime(make_host()) as runtime:
        runner = runner_for(runtime, temporal_address)
        with anyio.fail_after(60):
            going = await runner.start(data_flow("t1", steps))
            assert await going.result() == "dflt"
            failing = await runner.start(data_flow("t2", [{"pause_for": "go", "timeout": 0.5}]))
            with pytest.raises(TemporalExecutionFailed, match="no 'go' signal within 0.5s"):
                await failing.result()
        # the pause is a step with its wait inside, as on the local runner: it times out, then ends
        for execution, end in ((going, "flow.step.completed"), (failing, "flow.step.failed")):
            kinds = [(e.kind, e.payload.get("step")) async for e in execution.events()][1:-1]
            assert kinds == [("flow.step.started", "pause_for:go"), ("execution.waiting", None),
                             ("flow.wait.timeout", None), (end, "pause_for:go")]  # fmt: skip
        last_step = [e async for e in failing.events()][-2]
        assert last_step.payload["error"] == {"type": "WaitTimeout", "message": "no 'go' signal within 0.5s"}


async def test_what_does_not_run_on_temporal_yet_is_refused_before_anything_starts() -> None:
    async with Runtime(make_host()) as runtime:
        runner = TemporalRunner(runtime, {"address": "127.0.0.1:1"})  # never contacted
        not_a_flow = SimpleNamespace(name="py", definition=None, registry=None)
        with pytest.raises(TemporalRunnerError, match="'py' is neither a flow built from data.*flow.plan()"):
            await runner.start(not_a_flow)
        plan = {"format": 2, "name": "future", "main": [{"kind": "step", "id": "0", "ref": "0", "name": "x"}]}
        from_the_future = SimpleNamespace(name="future", plan=lambda: SimpleNamespace(model_dump=lambda mode: plan))
        with pytest.raises(TemporalRunnerError, match="plan format 2 is not one this runner knows"):
            await runner.start(from_the_future)
        waits = data_flow("waits", [{"to": "fetch"}, {"emit": "x"}, {"to": "ghost"}], fetch=fetch)
        with pytest.raises(TemporalRunnerError) as caught:
            await runner.start(waits)
        message = str(caught.value)
        assert "steps.1: a 'emit' node does not run" in message
        assert "steps.2: unknown chunk 'ghost' (registered: fetch)" in message
        with pytest.raises(TemporalRunnerError, match="does not take durability"):
            await runner.start(data_flow("f", [{"to": "fetch"}], fetch=fetch), durability="none")


async def test_an_unreachable_server_is_an_error_naming_the_address_and_the_fix() -> None:
    with anyio.fail_after(60):
        async with Runtime(make_host()) as runtime:
            runner = TemporalRunner(runtime, {"address": "127.0.0.1:1"})
            with pytest.raises(TemporalUnavailableError, match=r"127\.0\.0\.1:1.*start-dev.*address"):
                await runner.start(data_flow("f", [{"to": "fetch"}], fetch=fetch))


def test_options_are_checked_and_the_plugin_registers_the_runner_by_name() -> None:
    with pytest.raises(keel.StackError, match=r"runner 'temporal': invalid options \(task_queeu"):
        TemporalRunner(Runtime(make_host()), {"task_queeu": "x"})
    (spec,) = list(plugin.keel_triggerflow_runners())
    runner = spec.factory(Runtime(make_host()), {"task_queue": "jobs"})
    assert spec.name == "temporal" and isinstance(runner, TemporalRunner)
    assert runner.options.task_queue == "jobs" and runner.options.address == "127.0.0.1:7233"


def test_the_cli_comes_from_the_python_environment(tmp_path: Path) -> None:
    assert Path(find_cli()).name == "temporal"


async def test_another_process_reusing_a_request_id_is_refused_by_the_workflow(temporal_address: str) -> None:
    flow = data_flow("two-waits", [{"pause_for": "a"}, {"pause_for": "b"}])
    async with Runtime(make_host()) as runtime:
        runner = runner_for(runtime, temporal_address)
        execution = await runner.start(flow)
        await execution.signal("a", 1, request_id="r1")
        elsewhere = await runner.resume(flow, execution.id)  # an object that never sent r1
        with pytest.raises(keel.ConflictError, match="'r1' was already used"):
            await elsewhere.signal("a", 2, request_id="r1")
        await elsewhere.signal("b", "done", request_id="r2")
        with anyio.fail_after(60):
            assert await execution.result() == "done"


async def test_cancel_reaches_a_running_async_chunk(temporal_address: str) -> None:
    """The chunk heartbeats, so a cancel of the execution cancels it instead of abandoning it."""
    started, cancelled = anyio.Event(), anyio.Event()

    async def forever(ctx: Any) -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.set()

    flow = data_flow("forever", [{"to": "forever"}], forever=forever)
    async with Runtime(make_host()) as runtime:
        execution = await runner_for(runtime, temporal_address, heartbeat_timeout=1).start(flow)
        with anyio.fail_after(60):
            await started.wait()
            await execution.cancel("stop it")
            await cancelled.wait()
        assert execution.status is ExecutionStatus.CANCELLED


async def test_a_3_mb_step_output_passes_by_reference(temporal_address: str) -> None:
    """Temporal's payload limit is 2 MB: the output goes to the stack's store, only its ref to history."""

    def big(ctx: Any) -> str:
        return "x" * (3 * 1024 * 1024)

    def measure(ctx: Any) -> int:
        return len(ctx.value)

    flow = data_flow("big", [{"to": "big"}, {"to": "measure"}, {"to": "big"}], big=big, measure=measure)
    async with Runtime(make_host()) as runtime:
        runner = runner_for(runtime, temporal_address)
        execution = await runner.start(flow)
        with anyio.fail_after(60):
            assert len(await execution.result()) == 3 * 1024 * 1024  # the result is read back from the store
        history = await (await runner.client()).get_workflow_handle(execution.id).fetch_history()
        assert len(history.to_json()) < 256 * 1024, "only refs entered the history"
        completed = [e for e in history.events if e.HasField("activity_task_completed_event_attributes")]
        assert len(completed) == 3


async def test_an_output_over_the_limit_that_no_store_takes_fails_at_once_naming_the_fix(
    temporal_address: str,
) -> None:
    class Full(keel.MemoryStore):
        async def put_blob(self, tenant: str, data: bytes, media_type: str = "application/octet-stream") -> Any:
            raise OSError("disk full")

    attempts: list[int] = []

    def big(ctx: Any) -> str:
        attempts.append(ctx.attempt)
        return "x" * (3 * 1024 * 1024)

    async with Runtime(make_host()) as runtime:
        runtime.use_store(Full())
        execution = await runner_for(runtime, temporal_address).start(data_flow("big", [{"to": "big"}], big=big))
        with anyio.fail_after(60), pytest.raises(TemporalExecutionFailed, match=r"PayloadTooLarge.*over Temporal's "
                                                 r"payload limit.*disk full.*store = \"sqlite\""):  # fmt: skip
            await execution.result()
        assert attempts == [1], "not retried: the same output would fail the same way"


async def test_chunks_read_and_write_state_and_get_the_worker_runtime_resources(temporal_address: str) -> None:
    def count(ctx: Any) -> int:
        ctx.state["seen"] = ctx.state.get("seen", 0) + 1
        return ctx.state["seen"]

    def report(ctx: Any) -> str:
        return f"{ctx.resource('bank')}: seen {ctx.state['seen']}, value {ctx.value}"

    flow = data_flow("stateful", [{"to": "count"}, {"to": "count"}, {"to": "report"}], count=count, report=report)
    async with Runtime(make_host(), resources={"bank": "acme-bank"}) as runtime:
        execution = await runner_for(runtime, temporal_address).start(flow)
        with anyio.fail_after(60):
            assert await execution.result() == "acme-bank: seen 2, value 2"
    async with Runtime(make_host()) as runtime:  # a worker without the resource: fails at once, naming it
        execution = await runner_for(runtime, temporal_address).start(flow)
        with (
            anyio.fail_after(60),
            pytest.raises(TemporalExecutionFailed, match=r"needs the resource 'bank'.*resources="),
        ):
            await execution.result()


async def test_a_long_flow_continues_as_new_carrying_value_state_and_answers(temporal_address: str) -> None:
    def add(ctx: Any) -> int:
        ctx.state["adds"] = ctx.state.get("adds", 0) + 1
        return ctx.value + 1

    def final(ctx: Any) -> Any:
        return {"value": ctx.value, "adds": ctx.state["adds"]}

    steps = [{"to": "add"}] * 5 + [{"pause_for": "go"}, {"to": "add"}, {"to": "final"}]
    flow = data_flow("long", steps, add=add, final=final)
    async with Runtime(make_host()) as runtime:
        runner = runner_for(runtime, temporal_address, continue_after=2)
        execution = await runner.start(flow, 0)
        await execution.signal("go", 100, request_id="g1")  # before its wait, in another run: kept for it
        with anyio.fail_after(60):
            assert await execution.result() == {"value": 101, "adds": 6}
        client = await runner.client()
        runs = [w async for w in client.list_workflows(f"WorkflowId = '{execution.id}'")]
        assert len(runs) >= 4, "continued as new every 2 steps"


async def test_chunks_declared_local_run_as_local_activities(temporal_address: str) -> None:
    tries: list[int] = []

    def cheap(ctx: Any) -> int:
        tries.append(ctx.attempt)
        if ctx.attempt == 1:
            raise ValueError("a first failure, retried as on the local runner")
        return ctx.value + 1

    flow = data_flow("mixed", [{"to": "cheap", "retries": 1}, {"to": "fetch"}], cheap=cheap, fetch=fetch)
    async with Runtime(make_host()) as runtime:
        runner = runner_for(runtime, temporal_address, local_chunks=["cheap"])
        execution = await runner.start(flow, 1, tenant="acme")
        with anyio.fail_after(60):
            assert await execution.result() == {"name": 2, "by": execution.id, "tenant": "acme"}
        assert tries == [1, 2]
        history = await (await runner.client()).get_workflow_handle(execution.id).fetch_history()
        scheduled = [e for e in history.events if e.HasField("activity_task_scheduled_event_attributes")]
        markers = [e for e in history.events if e.HasField("marker_recorded_event_attributes")]
        assert len(scheduled) == 1, "only fetch went through the task queue"
        assert len(markers) >= 2, "cheap's two attempts are local-activity markers"


async def test_the_workflow_runs_in_temporalio_sandbox_when_asked(temporal_address: str) -> None:
    flow = data_flow("sandboxed", [{"to": "fetch"}, {"pause_for": "go"}, {"to": "shout"}], fetch=fetch, shout=shout)
    async with Runtime(make_host()) as runtime:
        execution = await runner_for(runtime, temporal_address, workflow_sandbox=True).start(flow, "ada")
        await execution.signal("go", {"name": "bob"}, request_id="g")
        with anyio.fail_after(60):
            assert await execution.result() == {"name": "BOB!"}


async def test_a_10000_step_flow_continues_as_new_when_temporal_suggests_it(temporal_address: str) -> None:
    """The issue's long flow: 10,000 steps (local chunks, ~30 s here) in one execution id; Temporal
    suggests continue-as-new as the history grows (no continue_after set), the value goes on."""

    def add(ctx: Any) -> int:
        return ctx.value + 1

    flow = data_flow("long", [{"to": "add"}] * 10_000, add=add)
    async with Runtime(make_host()) as runtime:
        runner = runner_for(runtime, temporal_address, local_chunks=["add"])
        execution = await runner.start(flow, 0)
        with anyio.fail_after(600):
            assert await execution.result() == 10_000
        client = await runner.client()
        runs = [w async for w in client.list_workflows(f"WorkflowId = '{execution.id}'")]
        assert len(runs) >= 2, "continued as new"
        assert sum(1 for w in runs if w.status is not None and w.status.name == "CONTINUED_AS_NEW") == len(runs) - 1


async def test_a_schedule_skips_a_run_while_the_last_one_is_still_going(temporal_address: str) -> None:
    """A Temporal Schedule every second, overlap skip: while the first run is held, Temporal counts
    skipped actions and starts no second execution; released, the run completes and is found by id."""
    release = anyio.Event()
    started: list[str] = []

    async def hold(ctx: Any) -> str:
        started.append(ctx.execution_id)
        await release.wait()
        return f"done {ctx.value}"

    flow = data_flow("nightly", [{"to": "hold"}], hold=hold)
    schedule_id = f"nightly-{uuid.uuid4().hex[:8]}"
    async with Runtime(make_host()) as runtime:
        runner = runner_for(runtime, temporal_address, heartbeat_timeout=5)
        with pytest.raises(TemporalRunnerError, match="overlap 'sometimes' is not one of"):
            await runner.schedule(flow, schedule_id, every=1, overlap="sometimes")
        handle = await runner.schedule(flow, schedule_id, every=1, input="report", tenant="acme")
        try:
            with anyio.fail_after(60):
                while (await handle.describe()).info.num_actions_skipped_overlap < 2:
                    await anyio.sleep(0.2)
            assert len(started) == 1, started  # skipped, not started: one run at a time
            release.set()
            found = await runner.find(started[0], "acme")  # as runtime.find_execution does on a temporal stack
            assert found is not None and started[0].startswith(schedule_id)
            with anyio.fail_after(60):
                assert await found.result() == "done report"
        finally:
            await handle.delete()


async def test_a_keel_schedule_spec_is_a_temporal_spec_the_server_takes(temporal_address: str) -> None:
    """keel-scheduler's spec (as data) mapped to Temporal's: six cron fields with seconds first, a
    time zone, skip dates, an interval counted from its start. The server takes each and computes the
    times keel would fire at."""
    import datetime as dt
    import itertools

    from temporalio.client import Schedule, ScheduleActionStartWorkflow

    from keel_runner_temporal.schedules import _spec

    async with Runtime(make_host()) as runtime:
        client = await runner_for(runtime, temporal_address).client()
        skipped = (dt.date.today() + dt.timedelta(days=1)).isoformat()
        specs = {
            "cron": {"cron": "*/20 * * * * *", "timezone": "Europe/Oslo", "skip_dates": [skipped]},
            "every": {"every": 3600, "start": "2026-01-01T00:30:00+00:00"},
        }
        for kind, spec in specs.items():
            schedule_id = f"map-{kind}-{uuid.uuid4().hex[:8]}"
            action = ScheduleActionStartWorkflow("keel.flow", {}, id=schedule_id, task_queue="nowhere")
            handle = await client.create_schedule(schedule_id, Schedule(action=action, spec=_spec(spec)))
            try:
                times = (await handle.describe()).info.next_action_times
            finally:
                await handle.delete()
            assert times, kind
            if kind == "cron":
                assert {(b - a).total_seconds() for a, b in itertools.pairwise(times)} == {20.0}, times
            else:
                assert all((t.minute, t.second) == (30, 0) for t in times), times
