"""Following an execution another process runs (issue 22): a copy found with find_execution shows
the owner's steps, stream items, waits and end live, from the store, and its answers reach the owner.

Two runtimes over one real SQLite file, and one test in two real processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import anyio
from triggerflow_support import process

from keel import ExecutionStatus, RuntimeEvent
from keel_store_sqlite import SqliteStore

FLOW_MODULE = '''
import time
from pathlib import Path

from keel_triggerflow import TriggerFlow

def gate(ctx):
    """Hold the run until the test has found the execution (the file ctx.value["go"] exists)."""
    deadline = time.monotonic() + 60
    while not Path(ctx.value["go"]).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return ctx.value["ticket"]


def research(ctx):
    ctx.put_into_stream({"message": "looked it up", "percent": 50})
    return {"draft": ctx.value}


def ship(ctx):
    return {"answer": ctx.value}


def long_step(ctx):
    ctx.put_into_stream({"message": "half way"})
    deadline = time.monotonic() + 60
    while not Path(ctx.value).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return "done"


def live():
    flow = TriggerFlow("follow_live")
    flow.to(long_step)
    return flow


def desk():
    flow = TriggerFlow("follow_desk")
    flow.to(gate).to(research).pause_for("approve", "ship it?").to(ship)
    return flow
'''


def _flow_module(tmp_path: Path) -> Any:
    (tmp_path / "follow_flows.py").write_text(FLOW_MODULE)
    sys.path.insert(0, str(tmp_path))
    try:
        import importlib

        import follow_flows

        return importlib.reload(follow_flows)
    finally:
        sys.path.remove(str(tmp_path))


async def _follow_and_answer(found: Any, answer: Any) -> list[RuntimeEvent]:
    """Read the copy's events live; answer its wait through the copy; until the end."""
    seen: list[RuntimeEvent] = []
    async for event in found.events():
        seen.append(event)
        if event.kind == "execution.waiting":
            assert found.status is ExecutionStatus.WAITING
            await found.signal("approve", answer, request_id="r1")
    return seen


def _check(seen: list[RuntimeEvent]) -> None:
    kinds = [e.kind for e in seen]
    assert "flow.step.completed" in kinds, kinds
    steps = [e.payload["step"] for e in seen if e.kind == "flow.step.completed"]
    assert steps == ["gate", "research", "pause_for:approve", "ship"], steps
    stream = [e.payload["item"] for e in seen if e.kind == "flow.stream"]
    assert stream == [{"message": "looked it up", "percent": 50}], kinds
    research = next(i for i, e in enumerate(seen) if e.payload.get("step") == "research")
    assert kinds.index("flow.stream") < research < kinds.index("execution.waiting")  # a step's items, then it
    assert kinds.index("execution.waiting") < kinds.index("flow.signal") < kinds.index("execution.completed")
    assert kinds[-1] == "execution.completed" and seen[-1].payload["output"] == {"answer": {"draft": "t"}}
    assert [e.seq for e in seen] == sorted({e.seq for e in seen})  # numbered once each, in order


async def test_a_copy_in_another_runtime_follows_the_owner_live(tmp_path: Path) -> None:
    db, go = tmp_path / "flows.db", tmp_path / "go"
    flow = _flow_module(tmp_path).desk()
    owner_store, reader_store = SqliteStore(str(db)), SqliteStore(str(db))
    async with process(owner_store, tmp_path, flow) as owner_rt, process(reader_store, tmp_path, flow) as reader:
        owned = await flow.start({"go": str(go), "ticket": "t"}, runtime=owner_rt)
        async with reader.bus.subscribe(buffer=10_000) as published:
            found = await reader.find_execution(owned.id)
            assert found is not owned and found.status is ExecutionStatus.RUNNING
            go.touch()  # the owner runs on; the reader follows
            with anyio.fail_after(30):
                seen = await _follow_and_answer(found, {"draft": "t"})
                assert await found.result() == {"answer": {"draft": "t"}}
                assert await owned.result() == {"answer": {"draft": "t"}}
            # the owner's process publishes the run to its observers; the follower's bus does not again
            assert [e.kind for e in published.drain() if e.execution_id == owned.id] == []
        _check([e for e in seen if e.kind != "execution.started"])
        assert found.status is ExecutionStatus.COMPLETED
        assert not found.running_here  # the owner ran it; the copy only followed


async def test_status_of_a_found_copy_keeps_up_without_looking_it_up_again(tmp_path: Path) -> None:
    db = tmp_path / "flows.db"
    flow = _flow_module(tmp_path).desk()
    owner_store, reader_store = SqliteStore(str(db)), SqliteStore(str(db))
    async with process(owner_store, tmp_path, flow) as owner_rt, process(reader_store, tmp_path, flow) as reader:
        (tmp_path / "go").touch()
        owned = await flow.start({"go": str(tmp_path / "go"), "ticket": "t"}, runtime=owner_rt)
        found = await reader.find_execution(owned.id)
        with anyio.fail_after(20):
            while found.status is not ExecutionStatus.WAITING:
                await anyio.sleep(0.02)
            assert [i.name for i in found.get_pending_interrupts()] == ["approve"]
            await owned.signal("approve", "yes")  # answered at the owner, not through the copy
            while found.status is not ExecutionStatus.COMPLETED:
                await anyio.sleep(0.02)
        assert found.steps_completed == 4 and await found.result() == {"answer": "yes"}


async def test_a_stream_item_reaches_a_follower_while_its_step_still_runs(tmp_path: Path) -> None:
    db, go = tmp_path / "flows.db", tmp_path / "go"
    flow = _flow_module(tmp_path).live()
    owner_store, reader_store = SqliteStore(str(db)), SqliteStore(str(db))
    async with process(owner_store, tmp_path, flow) as owner_rt, process(reader_store, tmp_path, flow) as reader:
        owned = await flow.start(str(go), runtime=owner_rt)
        found = await reader.find_execution(owned.id)
        with anyio.fail_after(20):
            async for event in found.events():
                if event.kind == "flow.stream":
                    assert event.payload["item"] == {"message": "half way"}
                    break
            assert not go.exists() and owned.status is ExecutionStatus.RUNNING  # the step has not ended
            go.touch()
            assert await found.result() == "done"


OWNER = """
import sys, anyio
sys.path.insert(0, {here!r})
sys.path.insert(0, {support!r})
from triggerflow_support import process
from pathlib import Path
from keel_store_sqlite import SqliteStore
import follow_flows

async def main():
    flow = follow_flows.desk()
    async with process(SqliteStore({db!r}), Path({here!r}), flow) as runtime:
        execution = await flow.start({{"go": {go!r}, "ticket": "t"}}, runtime=runtime)
        print(execution.id, flush=True)
        with anyio.fail_after(60):
            print("result", await execution.result(), flush=True)

anyio.run(main)
"""


async def test_a_test_process_follows_a_flow_another_process_runs(tmp_path: Path) -> None:
    """The owner is a real subprocess; this process finds the execution, sees its step, stream
    item and wait, answers the wait, and sees it complete."""
    db, go = tmp_path / "flows.db", tmp_path / "go"
    _flow_module(tmp_path)
    (tmp_path / "sub").mkdir()
    script = textwrap.dedent(
        OWNER.format(here=str(tmp_path), support=str(Path(__file__).parent), db=str(db), go=str(go))
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        text=True,
        cwd=tmp_path / "sub",  # its own keel.toml, not the test's
    )
    try:
        assert owner.stdout is not None
        with anyio.fail_after(60):
            execution_id = (await anyio.to_thread.run_sync(owner.stdout.readline)).strip()
        assert execution_id.startswith("flow_"), execution_id
        flow = _flow_module(tmp_path).desk()
        async with process(SqliteStore(str(db)), tmp_path, flow) as reader:
            found = await reader.find_execution(execution_id)
            go.touch()  # the owner runs on from its first step; this process follows
            with anyio.fail_after(60):
                seen = await _follow_and_answer(found, {"draft": "t"})
                assert await found.result() == {"answer": {"draft": "t"}}
                line = await anyio.to_thread.run_sync(owner.stdout.readline)
        assert line.startswith("result"), line
        _check([e for e in seen if e.kind != "execution.started"])
        assert seen[0].kind == "execution.started" and seen[0].payload["followed"] is True
        assert not found.running_here
    finally:
        owner.kill()
        owner.wait(timeout=30)
