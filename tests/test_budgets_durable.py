"""Budgets of durable flows on the real SQLite store: the limit holds across the flow's agents, and
after a crash (a real SIGKILL) the usage already spent still counts in the next process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from conftest import clean_env

pytest.importorskip("keel_store_sqlite")
pytest.importorskip("keel_triggerflow")

import keel
from keel.testing import ScriptedModel, make_host
from keel_store_sqlite.store import SqliteStore
from keel_triggerflow import StepFailed, TriggerFlow

WORKER = r"""
import json, sys
from pathlib import Path

import anyio
import keel
from keel_triggerflow import LeaseError, StepFailed, TriggerFlow

here = Path(sys.argv[1])
mode, execution_id = sys.argv[2], sys.argv[3]


async def hang_the_first_time(ctx):
    if mode == "start":
        (here / "ready").write_text("two model requests spent")
        await anyio.sleep(3600)  # killed here
    return ctx.value


def agent(name):
    return keel.Agent(name, "Answer briefly.")


flow = TriggerFlow("triage")
flow.to(agent("first")).to(agent("second")).to(hang_the_first_time).to(agent("third"))


async def main():
    async with keel.Runtime.from_stack(here / "keel.toml") as runtime:
        for _ in range(200):  # the killed owner's lease expires after lease_ttl
            try:
                if mode == "resume":
                    execution = await flow.load(execution_id, runtime, lease_ttl=1.0)
                else:
                    execution = flow.create_execution(runtime, execution_id=execution_id, lease_ttl=1.0)
                snapshot = await execution.run("ticket 7")
                break
            except LeaseError:
                await anyio.sleep(0.05)
        else:
            raise SystemExit("the killed owner's lease never expired: 200 tries over at least 10 s")
        (here / "outcome.json").write_text(json.dumps({"status": snapshot.status, "error": snapshot.error}))

anyio.run(main)
"""

STACK = """
model = "script"
[store]
driver = "sqlite"
path = "{db}"

[models.script]
provider = "scripted"
replies = ["one", "two", "three", "four"]

[budgets.runnables.triage]
model_requests = 2
"""


def _stack(folder: Path) -> Path:
    path = folder / "keel.toml"
    path.write_text(STACK.format(db=folder / "keel.db"), encoding="utf-8")
    return path


async def test_a_flow_budget_stops_the_agent_whose_request_would_pass_it(tmp_path: Path) -> None:
    stack = keel.load_stack(_stack(tmp_path))
    import keel_store_sqlite.plugin as sqlite_plugin
    import keel_triggerflow.plugin as flow_plugin

    flow = TriggerFlow("triage")
    flow.to(keel.Agent("first", "Answer.")).to(keel.Agent("second", "Answer.")).to(keel.Agent("third", "Answer."))
    async with keel.Runtime(make_host(sqlite_plugin, flow_plugin), stack) as runtime:
        model = runtime.use_model(ScriptedModel(["one", "two", "never sent"]))
        execution = await runtime.start(flow, "ticket 7")
        with pytest.raises(StepFailed) as caught:
            await execution.result()
        assert caught.value.error_type == "BudgetExceeded"
        assert isinstance(caught.value.__cause__, keel.BudgetExceeded)
        assert caught.value.__cause__.scope == f"parent execution {execution.id}"
        assert len(model.requests) == 2  # type: ignore[attr-defined]
        flow_events = [e async for e in execution.events()]
        exceeded = [e for e in flow_events if e.kind == "budget.exceeded"]
        assert len(exceeded) == 1 and exceeded[0].payload["budget"] == "model_requests"
        assert "flow.step.retry" not in [e.kind for e in flow_events]
        usage = await runtime.budgets.usage(execution.id)
        assert usage is not None and usage["model_requests"] == 2 and usage["limits"] == {"model_requests": 2}


async def test_after_a_crash_the_usage_already_spent_still_counts(tmp_path: Path) -> None:
    _stack(tmp_path)
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER, encoding="utf-8")
    env = clean_env(KEEL_LOAD_PLUGINS="sqlite,triggerflow")

    def run(mode: str) -> subprocess.Popen[bytes]:
        command = [sys.executable, str(worker), str(tmp_path), mode, "flow_crash"]
        return subprocess.Popen(command, env=env, stderr=subprocess.PIPE)

    first = run("start")
    try:
        with anyio.fail_after(120):
            while not (tmp_path / "ready").exists():
                if first.poll() is not None:
                    raise AssertionError(f"the worker ended early: {first.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
                await anyio.sleep(0.05)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()

    store = SqliteStore(tmp_path / "keel.db")
    try:
        saved = await store.get("default", "keel.budgets", "execution:flow_crash")
    finally:
        await store.aclose()
    assert saved is not None and saved.value["usage"]["model_requests"] == 2

    second = run("resume")
    _out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err.decode()[-2000:]
    outcome = json.loads((tmp_path / "outcome.json").read_text())
    # the third agent's request would be the third of the flow: refused, though this process made none
    assert outcome["status"] == "failed" and "BudgetExceeded" in outcome["error"], outcome

    show = subprocess.run(
        [str(Path(sys.executable).parent / "keel"), "flow", "show", "flow_crash"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert "usage: " in show.stdout and "model_requests 2/2" in show.stdout, show.stdout + show.stderr
