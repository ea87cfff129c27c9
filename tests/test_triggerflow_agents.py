"""TriggerFlow with keel.Agent chunks (scripted model) on the SQLite store; and the research-team example."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import ROOT, clean_env

import keel
from keel import Runtime, load_stack
from keel.testing import ScriptedModel, make_host

pytest.importorskip("keel_store_sqlite")
from pydantic import BaseModel

from keel_store_sqlite import plugin as sqlite_plugin
from keel_triggerflow import TriggerFlow
from keel_triggerflow import plugin as triggerflow_plugin
from keel_triggerflow.runners import get_runner


class Outline(BaseModel):
    points: list[str]


def sqlite_runtime(folder: Path, model: ScriptedModel, runner: str = "") -> Runtime:
    stack = f'[store]\ndriver = "sqlite"\npath = "{folder / "keel.db"}"\n'
    (folder / "keel.toml").write_text(stack + (f'[runner]\ndriver = "local"\n{runner}\n' if runner else ""))
    runtime = Runtime(make_host(sqlite_plugin, triggerflow_plugin), load_stack(folder / "keel.toml"))
    runtime.use_model(model)
    return runtime


def writer_flow() -> TriggerFlow:
    outliner = keel.Agent("outliner", "Outline the topic.", output=Outline)

    async def count(ctx: Any) -> int:
        assert ctx.value is True  # the signal's payload flows on; the outline is in the state
        return len(ctx.state.get("outline")["points"])

    flow = TriggerFlow("writer")
    flow.to(outliner).set_state("outline").pause_for("go").to(count)
    return flow


async def test_an_agent_is_a_chunk_and_is_not_asked_again_on_resume(tmp_path: Path) -> None:
    first_model = ScriptedModel(['{"points": ["a", "b", "c"]}'])
    flow = writer_flow()
    async with sqlite_runtime(tmp_path, first_model) as runtime:
        execution = flow.create_execution(runtime)
        assert isinstance(execution, keel.Execution)
        snapshot = await execution.run("tides")
        assert snapshot.status == "waiting"
    assert len(first_model.requests) == 1

    second_model = ScriptedModel([])  # any request would fail: the agent's answer is in the history
    async with sqlite_runtime(tmp_path, second_model) as runtime:
        loaded = await flow.load(execution.id, runtime)
        await loaded.signal("go", True)
        snapshot = await loaded.run()
    assert snapshot.status == "completed" and snapshot.result == 3, snapshot.error
    assert second_model.requests == []


def two_hours_later() -> float:
    """The clock of the second runtime below (``[runner] clock``): no test waits for a deadline."""
    return time.time() + 7200


async def test_runner_recovers_unfinished_executions_on_start(tmp_path: Path) -> None:
    flow = TriggerFlow("recoverable")
    flow.to(lambda ctx: ctx.value + 1).pause_for("go", timeout=3600, on_timeout="continue", default="late").to(
        lambda ctx: ctx.value
    )
    async with sqlite_runtime(tmp_path, ScriptedModel([])) as runtime:
        ids = []
        for i in range(3):
            execution = flow.create_execution(runtime)
            assert (await execution.run(i)).status == "waiting"
            ids.append(execution.id)
        assert await get_runner(runtime).recover([flow]) == [], "an hour to go: nothing is due yet"
    # the deadlines pass while no process runs the flow: on the clock the stack names, not by sleeping
    later = f'clock = "{__name__}:two_hours_later"'
    async with sqlite_runtime(tmp_path, ScriptedModel([]), runner=later) as runtime:
        with anyio.fail_after(30):
            recovered = await get_runner(runtime).recover([flow])
            assert sorted(e.id for e in recovered) == sorted(ids)
            assert [await e.result() for e in recovered] == ["late"] * 3


def test_research_team_example_runs_offline(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "research_team.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=clean_env(),
    )
    assert result.returncode == 0, result.stderr
    assert "auto-approving" in result.stdout
    findings = json.loads(result.stdout.split("findings:", 1)[1].splitlines()[0])
    assert set(findings) == {"economist", "ecologist", "engineer"}
    assert '"published": true' in result.stdout
