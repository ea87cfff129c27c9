"""`keel flow` after a restart: executions of flows listed as the stack's runnables, and of flows
built from data, are found, shown and answered by another process (real SQLite, real processes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import clean_env

MYFLOW = """
from keel_triggerflow import TriggerFlow
from keel_triggerflow.definition import Registry

async def draft(ctx):
    return "draft: " + ctx.value

async def gate(ctx):
    return await ctx.pause_for("approve", {"draft": ctx.value})

flow = TriggerFlow("review")
flow.to(draft).to(gate).to(lambda ctx: {"published": ctx.value})

registry = Registry()
registry.add_chunk("draft", draft)
registry.add_chunk("gate", gate)
registry.add_chunk("publish", lambda ctx: {"published": ctx.value})
planned = registry.load({"name": "noop", "steps": [{"to": "draft"}]})  # any flow of this registry
"""

START = """
import anyio, keel, sys
sys.path.insert(0, ".")
import myflow

async def main():
    async with keel.Runtime.open() as runtime:
        plan = {"name": "planned", "steps": [{"to": "draft"}, {"to": "gate"}, {"to": "publish"}]}
        for flow in (runtime.runnables.get("review"), myflow.registry.load(plan)):
            execution = flow.create_execution(runtime)  # no ref recorded: found by name or by definition
            await execution.run("tides")
            print(execution.id)

anyio.run(main)
"""


def _keel(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "keel"), "flow", *args, "--json"],
        cwd=folder,
        env=clean_env(KEEL_LOAD_PLUGINS="sqlite,triggerflow"),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_flow_commands_find_runnables_and_data_flows_of_another_process(tmp_path: Path) -> None:
    (tmp_path / "keel.toml").write_text('store = "sqlite"\nrunnables = ["myflow:flow", "myflow:planned"]\n')
    (tmp_path / "myflow.py").write_text(MYFLOW)
    (tmp_path / "start.py").write_text(START)
    started = subprocess.run(
        [sys.executable, "start.py"],
        cwd=tmp_path,
        env=clean_env(KEEL_LOAD_PLUGINS="sqlite,triggerflow"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert started.returncode == 0, started.stderr
    by_name, by_definition = started.stdout.split()

    listed = json.loads(_keel(tmp_path, "ls", "--status", "waiting", "--last", "5").stdout)
    assert [row["id"] for row in listed] == [by_name, by_definition]
    for execution_id in (by_name, by_definition):
        shown = _keel(tmp_path, "show", execution_id)
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["pending_interrupts"][0]["name"] == "approve"
        done = _keel(tmp_path, "signal", execution_id, "approve", '"yes"', "--request-id", "r1")
        assert done.returncode == 0, done.stderr
        snapshot = json.loads(done.stdout)
        assert snapshot["status"] == "completed" and snapshot["result"] == {"published": "yes"}
    assert json.loads(_keel(tmp_path, "ls", "--status", "waiting").stdout) == []
    completed = json.loads(_keel(tmp_path, "ls", "--status", "completed").stdout)
    assert {row["id"] for row in completed} == {by_name, by_definition}
