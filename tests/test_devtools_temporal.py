"""DevTools records a TriggerFlow execution that Temporal runs, as it records a local one.

A real Temporal dev server (the suite starts it; never mocked). The flow's events reach the
recorder through the bus of the runtime that started and follows the execution (the
``keel_on_runtime_event`` observers), the agent its step ran through the worker's runtime (here
the same process), each an execution of its own in the recording, in one trace: the flow's steps
and the agent under its step's span, as the local runner records them (compared), so a replay
serves the agent. Two runtimes following one execution into one file record it once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from click.testing import CliRunner

import keel
from keel import Runtime, load_stack
from keel.cli import CliState
from keel.testing import ScriptedModel, make_host
from keel_devtools import ExecutionFilter, RecordingDB, configure
from keel_devtools import plugin as devtools_plugin
from keel_devtools.cli import replay as replay_command
from keel_devtools.exchange import Recording, parent_span
from keel_devtools.flowgraph import flow_drawing, path_taken
from keel_devtools.replayer import replay
from keel_runner_temporal import DevServer, TemporalExecution
from keel_runner_temporal import plugin as temporal_plugin
from keel_store_sqlite import plugin as sqlite_plugin
from keel_triggerflow import TriggerFlow
from keel_triggerflow import plugin as triggerflow_plugin
from keel_triggerflow.runners import get_runner


@pytest.fixture(scope="module")
def temporal_address() -> Iterator[str]:
    with DevServer(start_timeout=90) as address:
        yield address


classifier = keel.Agent("classifier", "Classify the ticket.", output={"kind": str})


async def verdict(ctx: Any) -> dict[str, Any]:
    return {"approved": ctx.value["ok"], "by": ctx.execution_id}


def refund_flow() -> TriggerFlow:
    flow = TriggerFlow("refund-on-temporal")
    flow.to(classifier).to(lambda ctx: dict(ctx.value)["kind"])  # the answer, as its model or its data
    flow.pause_for("approve", lambda kind: {"kind": kind}).to(verdict)
    return flow


async def followed_elsewhere(address: str, queue: str, execution_id: str) -> list[tuple[str, Any]]:
    """What a runtime that only follows the execution (no worker) publishes when it finds it waiting."""
    from keel_runner_temporal import TemporalRunner

    async with Runtime(make_host()) as other, other.bus.subscribe() as seen:
        runner = TemporalRunner(other, {"address": address, "task_queue": f"dt-{queue}", "worker": False})
        found = await runner.find(execution_id, "default")
        assert found is not None and found.status is keel.ExecutionStatus.WAITING
        return [(e.kind, e.payload.get("followed")) for e in seen.drain()]


def steps_of(db: RecordingDB, execution_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    """Each step event's kind, step path and payload, as the execution page reads them."""
    return [
        (row["kind"], row["step"], row["event"]["payload"])
        for row in db.events(execution_id)
        if row["kind"].startswith("flow.step.")
    ]


def by_path(step: tuple[str, str, dict[str, Any]]) -> str:
    return step[1]


async def recorded_locally(tmp_path: Path) -> tuple[RecordingDB, str]:
    """The same flow on the local runner, recorded into a file of its own."""
    recorder = configure(tmp_path / "local.db")
    try:
        async with Runtime(make_host(devtools_plugin, triggerflow_plugin), keel.Stack()) as runtime:
            runtime.use_model(ScriptedModel([json.dumps({"kind": "refund"})]))
            execution = await refund_flow().start({"ticket": "T-1"}, runtime=runtime)
            with anyio.fail_after(60):
                async for event in execution.events():
                    if event.kind == "execution.waiting":
                        await execution.signal("approve", {"ok": True})
                        break
                await execution.result()
        assert recorder.flush()
    finally:
        recorder.close()
    return RecordingDB(tmp_path / "local.db"), execution.id


async def test_a_temporal_execution_is_recorded_like_a_local_one(temporal_address: str, tmp_path: Path) -> None:
    (tmp_path / "keel.toml").write_text(
        f'[runner]\ndriver = "temporal"\naddress = "{temporal_address}"\ntask_queue = "dt-{tmp_path.name}"\n'
    )
    recorder = configure(tmp_path / "devtools.db")
    try:
        host = make_host(devtools_plugin, triggerflow_plugin, temporal_plugin)
        async with Runtime(host, load_stack(tmp_path / "keel.toml")) as runtime:
            runtime.use_model(ScriptedModel([json.dumps({"kind": "refund"})]))
            execution = await refund_flow().start({"ticket": "T-1"}, runtime=runtime)
            assert isinstance(execution, TemporalExecution)
            with anyio.fail_after(60):
                async for event in execution.events():
                    if event.kind == "execution.waiting":
                        break
                assert await followed_elsewhere(temporal_address, tmp_path.name, execution.id) == [
                    ("execution.started", True), ("execution.waiting", None),
                ]  # fmt: skip
                await execution.signal("approve", {"ok": True})
                result = await execution.result()
        assert result == {"approved": True, "by": execution.id}
        assert recorder.flush()
    finally:
        recorder.close()
    db = RecordingDB(tmp_path / "devtools.db")
    summary = db.execution(execution.id)
    assert summary is not None
    assert (summary["kind"], summary["runnable"], summary["status"]) == ("flow", "refund-on-temporal", "completed")
    assert summary["input"] == {"ticket": "T-1"} and summary["output"] == result
    kinds = [row["kind"] for row in db.events(execution.id)]
    assert kinds[0] == "execution.started" and kinds[-1] == "execution.completed"
    waiting = next(row for row in db.events(execution.id) if row["kind"] == "execution.waiting")
    assert waiting["step"] == "execution" and waiting["event"]["payload"]["interrupts"][0]["name"] == "approve"
    # the agent the step ran, in the worker's runtime: recorded with its model answer
    [agent] = db.page(ExecutionFilter(runnable="classifier"), limit=10)[0]
    assert agent["status"] == "completed" and agent["output"] == {"kind": "refund"}
    assert "model.response" in [row["kind"] for row in db.events(agent["id"])]
    # its steps, the path taken on its drawing, and the agent inside it: as the local runner records them
    local_db, local_id = await recorded_locally(tmp_path)
    # the pause_for node too: a step with its wait inside, ended by the answer (which another process
    # may store after the next step has started: per step, in order, as a replay compares them)
    local_steps = steps_of(local_db, local_id)
    assert sorted(steps_of(db, execution.id), key=by_path) == sorted(local_steps, key=by_path)
    assert len(local_steps) == 8
    drawing = flow_drawing(db.events(execution.id))
    assert drawing is not None and drawing["nodes"] == flow_drawing(local_db.events(local_id))["nodes"]
    assert path_taken(drawing, db.events(execution.id)) == path_taken(drawing, local_db.events(local_id))
    assert [row["id"] for row in db.same_trace(execution.id)] == [agent["id"]]  # the flow's trace
    recording = Recording.from_db(db, execution.id)
    assert [inner.execution_id for inner in recording.inner] == [agent["id"]]  # under the step's span
    classify_span = next(e["span_id"] for e in recording.events if e["kind"] == "flow.step.started")
    assert parent_span(recording.inner[0]) == classify_span
    # a replay of the flow, on either runner, serves the agent its recorded answer: no model is asked
    for host, stack in (
        (make_host(triggerflow_plugin, temporal_plugin), load_stack(tmp_path / "keel.toml")),
        (make_host(triggerflow_plugin), keel.Stack()),
    ):
        async with Runtime(host, stack) as replaying:
            replaying.add(refund_flow())
            with anyio.fail_after(60):
                replayed = await replay(recording, runtime=replaying, timeout=30)
        assert replayed.ok, replayed.divergence
        assert replayed.output == result | {"by": replayed.execution_id}
    # `keel replay` on a Temporal stack runs it in its own process (no worker of the queue takes a step)
    (tmp_path / "elsewhere.toml").write_text('[runner]\ndriver = "temporal"\naddress = "127.0.0.1:9"\n')

    class State(CliState):
        def runtime(self) -> Runtime:
            runtime = Runtime(make_host(triggerflow_plugin, temporal_plugin), load_stack(tmp_path / "elsewhere.toml"))
            runtime.add(refund_flow())
            return runtime

    args = ["--db", str(tmp_path / "devtools.db"), execution.id]
    out = await anyio.to_thread.run_sync(
        lambda: CliRunner().invoke(replay_command, args, obj=State(make_host(), keel.Stack()))
    )
    assert out.exit_code == 0 and "1 of 1 replayed with no divergence" in out.output, out.output

    # a runtime that finds it after its end publishes nothing of it (the one that followed it did)
    other = Runtime(make_host(triggerflow_plugin, temporal_plugin), load_stack(tmp_path / "keel.toml"))
    async with other, other.bus.subscribe() as seen:
        found = await get_runner(other).find(execution.id, "default")
        assert found is not None and found.status is keel.ExecutionStatus.COMPLETED
        with anyio.fail_after(30):
            assert await found.result() == result
        assert seen.drain() == []


gate: dict[str, anyio.Event] = {}


async def held(ctx: Any) -> str:
    await gate[ctx.execution_id].wait()  # until the second process follows it
    return f"{ctx.value}, held"


async def test_two_processes_following_one_execution_record_it_once(temporal_address: str, tmp_path: Path) -> None:
    stack = (  # one store: followers relay the steps' events from it
        f'[store]\ndriver = "sqlite"\npath = "{tmp_path / "state.db"}"\n'
        f'[runner]\ndriver = "temporal"\naddress = "{temporal_address}"\ntask_queue = "dt2-{tmp_path.name}"\n'
    )
    (tmp_path / "keel.toml").write_text(stack)
    (tmp_path / "follower.toml").write_text(stack + "worker = false\n")
    flow = TriggerFlow("followed-twice")
    flow.to(held).pause_for("approve").to(verdict_of)  # run by the first, answered by the second
    recorder = configure(tmp_path / "devtools.db")  # both runtimes' recorders write this one file
    try:
        plugins = (devtools_plugin, triggerflow_plugin, temporal_plugin, sqlite_plugin)
        async with (
            Runtime(make_host(*plugins), load_stack(tmp_path / "keel.toml")) as runtime,
            Runtime(make_host(*plugins), load_stack(tmp_path / "follower.toml")) as follower,
        ):
            execution = await flow.start("ada", runtime=runtime)
            gate[execution.id] = anyio.Event()
            with anyio.fail_after(60):
                found = await get_runner(follower).find(execution.id, "default")
                assert found is not None
                gate[execution.id].set()
                async for event in found.events():
                    if event.kind == "execution.waiting":
                        break
                await found.signal("approve", "yes")
                assert await execution.result() == await found.result() == "yes: ok"
            seen = [e async for e in execution.events()]
            assert [(e.seq, e.kind) for e in seen] == [(e.seq, e.kind) async for e in found.events()]
            assert [e.kind for e in seen if not e.kind.startswith("flow.step.")] == [
                "execution.started", "execution.waiting", "flow.signal", "execution.completed",
            ]  # fmt: skip
        assert recorder.flush()
    finally:
        recorder.close()
    db = RecordingDB(tmp_path / "devtools.db")
    rows = db.events(execution.id)
    assert [(row["seq"], row["kind"]) for row in rows] == [(e.seq, e.kind) for e in seen]  # each once
    summary = db.execution(execution.id)
    assert summary is not None and summary["events"] == len(seen) and summary["status"] == "completed"


def verdict_of(ctx: Any) -> str:
    return f"{ctx.value}: ok"
