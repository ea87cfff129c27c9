"""The examples' recorded executions replay against today's code with no divergence.

Each example runs as a user runs it (a subprocess, every installed plugin discovered, DevTools
recording to a file of the test's own); then its agents, imported from the same file, replay every
completed execution from that recording: recorded answers and tool results are served, nothing is
asked of a model and no action runs.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import anyio
import pytest
from conftest import ROOT, clean_env

import keel
from keel.testing import Reply, ScriptedModel, make_host
from keel_devtools import ExecutionFilter, Recording, RecordingDB, export_execution, read_execution, replay


def run_example(name: str, cwd: Path, db: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name)], cwd=cwd, capture_output=True, text=True, timeout=600,
        env=clean_env(KEEL_DEVTOOLS_DB=str(db)),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{Path(name).stem}", ROOT / "examples" / name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # the examples run only under __main__
    return module


def replay_completed(db: RecordingDB, module: ModuleType) -> list[str]:
    agents = [v for v in vars(module).values() if isinstance(v, keel.Agent)]
    actions = [v for v in vars(module).values() if isinstance(v, keel.ActionSpec)]
    rows, _ = db.page(ExecutionFilter(status="completed"), limit=1000)
    assert rows, "the example recorded no completed execution"
    replayed = []

    async def main() -> None:
        for row in rows:
            async with keel.Runtime(make_host(), keel.Stack()) as runtime:
                for spec in actions:
                    runtime.actions.add(spec)
                for agent in agents:
                    runtime.add(agent)
                result = await replay(Recording.from_db(db, row["id"]), runtime=runtime)
            assert result.ok, f"{row['runnable']} {row['id']}: {result.divergence}"
            replayed.append(row["runnable"])

    anyio.run(main)
    return replayed


@pytest.mark.parametrize(("example", "recording"), [("hello.py", None), ("devtools_record.py", ".keel/devtools.db")])
def test_an_examples_recorded_executions_replay_with_no_divergence(
    example: str, recording: str | None, tmp_path: Path
) -> None:
    db_path = tmp_path / "recorded.db"
    run_example(example, tmp_path, db_path)
    db = RecordingDB(tmp_path / recording if recording else db_path)
    replayed = replay_completed(db, load(example))
    assert replayed and set(replayed) == {"invoice"}


APP = """
import json, anyio, keel
from keel.testing import Reply, ScriptedModel

@keel.action(risk="write")
def notify(email: str) -> str:
    "Notify someone."
    with open("sent.txt", "a") as file:
        file.write(email + "\\n")
    return "sent"

agent = keel.Agent("notifier", "INSTRUCTIONS", output={"done": bool}, actions=["notify"])

async def main():
    async with keel.Runtime.open() as runtime:
        runtime.actions.add(notify)
        call = keel.ToolCall(id="n1", name="notify", arguments={"email": "ada@example.com"})
        runtime.use_model(ScriptedModel([Reply(tool_calls=[call]), json.dumps({"done": True})]))
        print(await agent.run("go", runtime=runtime))

if __name__ == "__main__":
    anyio.run(main)
"""


def test_keel_replay_in_ci_uses_the_stacks_runnables_and_never_repeats_the_side_effect(tmp_path: Path) -> None:
    """The CI path for real: an application records a run, it is exported to a folder, and
    ``keel replay DIR`` (the installed command, the stack's ``runnables``) replays it; a changed
    prompt makes it exit 1."""
    app = tmp_path / "myapp.py"
    app.write_text(APP.replace("INSTRUCTIONS", "Notify the user."), encoding="utf-8")
    (tmp_path / "keel.toml").write_text('store = "memory"\nrunnables = ["myapp:agent"]\n', encoding="utf-8")
    env = clean_env(PYTHONPATH=str(tmp_path))
    keel_cli = str(Path(sys.executable).parent / "keel")

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(argv), cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)

    assert run(sys.executable, str(app)).returncode == 0
    listed = run(keel_cli, "devtools", "ls", "--json")
    assert listed.returncode == 0, listed.stderr
    execution_id = json.loads(listed.stdout)[0]["id"]
    assert run(keel_cli, "devtools", "export", execution_id, "-o", "recorded").returncode == 0
    same = run(keel_cli, "replay", "recorded")
    assert same.returncode == 0, same.stdout + same.stderr
    assert "1 of 1 replayed with no divergence" in same.stdout
    app.write_text(APP.replace("INSTRUCTIONS", "Notify the user at once."), encoding="utf-8")
    changed = run(keel_cli, "replay", "recorded")
    assert changed.returncode == 1 and "diverged at model-1 (messages[0].content)" in changed.stdout
    assert (tmp_path / "sent.txt").read_text().splitlines() == ["ada@example.com"]  # only the recorded run sent it


def ticket_flow(wait_name: str = "approval") -> keel.Runnable:
    """A flow whose step draws an id (keel.draws) and waits for a person's answer."""
    from keel_triggerflow import TriggerFlow

    async def open_ticket(ctx: object) -> dict:
        answer = await ctx.pause_for(wait_name, {"message": "refund 40 EUR?"})  # type: ignore[attr-defined]
        return {"ticket": keel.draws.uuid(), "approved": answer["ok"], "at": keel.draws.now()}

    flow = TriggerFlow("tickets")
    flow.to(open_ticket)
    return flow  # type: ignore[return-value]


async def record_ticket(db: Path) -> str:
    from keel_devtools import configure, plugin
    from keel_triggerflow import plugin as triggerflow_plugin

    recorder = configure(db)
    try:
        async with keel.Runtime(make_host(plugin, triggerflow_plugin), keel.Stack()) as runtime:
            execution = await ticket_flow().start({"amount": 40}, runtime=runtime)
            with anyio.fail_after(30):
                async for event in execution.events():
                    if event.kind == "execution.waiting":
                        await execution.signal("approval", {"ok": True})
                        break
                result = await execution.result()
        assert result["approved"] is True
        assert recorder.flush()
        return execution.id
    finally:
        recorder.close()


async def test_a_flow_replays_with_its_waits_answered_and_its_draws_served_from_the_recording(tmp_path: Path) -> None:
    from keel_triggerflow import plugin as triggerflow_plugin

    execution_id = await record_ticket(tmp_path / "flows.db")
    recording = Recording.from_db(RecordingDB(tmp_path / "flows.db"), execution_id)
    kinds = [e["kind"] for e in recording.events]
    assert kinds.count("draw") == 2 and "flow.signal" in kinds  # the step's draws and the answer, recorded
    recorded_output = recording.header["output"]

    for flow, diverges in ((ticket_flow(), False), (ticket_flow("sign-off"), True)):
        async with keel.Runtime(make_host(triggerflow_plugin), keel.Stack()) as runtime:
            runtime.add(flow)
            with anyio.fail_after(60):
                result = await replay(recording, runtime=runtime, timeout=30)
        if not diverges:
            assert result.ok, result.divergence
            assert result.output == recorded_output  # the same id and clock reading, served back
        else:  # today's code waits for a signal the recording never answered: stopped there
            assert not result.ok
            assert result.divergence is not None and result.divergence.step_path == "wait/sign-off"


SENT: list[Path] = []  # where the inner agent's action writes (the test's own file)


@keel.action(risk="write")
def notify_owner(email: str) -> str:
    """Notify the ticket's owner (a side effect: one line in a file per call)."""
    with SENT[0].open("a", encoding="utf-8") as file:
        file.write(email + "\n")
    return f"notified {email}"


def notify_flow(instructions: str = "Notify the owner of the ticket.") -> keel.Runnable:
    """A flow with an agent step: the agent calls a side-effecting action, then answers."""
    from keel_triggerflow import TriggerFlow

    notifier = keel.Agent("notifier", instructions, output={"done": bool}, actions=["notify_owner"])
    flow = TriggerFlow("notify")
    flow.to(lambda ctx: f"ticket {ctx.value['ticket']} for {ctx.value['email']}").to(notifier)
    flow.to(lambda ctx: {"notified": ctx.value.done})
    return flow  # type: ignore[return-value]


async def record_notify(db: Path) -> str:
    from keel_devtools import configure, plugin
    from keel_triggerflow import plugin as triggerflow_plugin

    recorder = configure(db)
    try:
        async with keel.Runtime(make_host(plugin, triggerflow_plugin), keel.Stack()) as runtime:
            runtime.actions.add(notify_owner)
            call = keel.ToolCall(id="n1", name="notify_owner", arguments={"email": "ada@example.com"})
            runtime.use_model(ScriptedModel([Reply(tool_calls=[call]), json.dumps({"done": True})]))
            execution = await notify_flow().start({"ticket": 7, "email": "ada@example.com"}, runtime=runtime)
            with anyio.fail_after(30):
                assert await execution.result() == {"notified": True}
        assert recorder.flush()
        return execution.id
    finally:
        recorder.close()


async def replay_notify(recording: Recording, flow: keel.Runnable) -> object:
    from keel_triggerflow import plugin as triggerflow_plugin

    async with keel.Runtime(make_host(triggerflow_plugin), keel.Stack()) as runtime:
        runtime.actions.add(notify_owner)
        runtime.add(flow)  # no model: anything asked of one that the recording does not serve fails
        with anyio.fail_after(60):
            return await replay(recording, runtime=runtime, timeout=30)


async def test_a_flows_agent_step_is_served_its_recorded_answers_and_its_action_never_runs_again(
    tmp_path: Path,
) -> None:

    SENT[:] = [tmp_path / "sent.txt"]
    execution_id = await record_notify(tmp_path / "flows.db")
    assert SENT[0].read_text().splitlines() == ["ada@example.com"]
    db = RecordingDB(tmp_path / "flows.db")
    recording = Recording.from_db(db, execution_id)
    [inner] = recording.inner  # the agent the flow ran as its step: an execution of its own
    assert inner.header["runnable"] == "notifier"
    assert [e["kind"] for e in inner.events].count("model.request") == 2
    # exported as one file, the agent's events travel with the flow's
    exported = read_execution(export_execution(db, execution_id, tmp_path))
    assert exported.header["version"] == 2 and [r.execution_id for r in exported.inner] == [inner.execution_id]

    for source in (recording, exported):
        result = await replay_notify(source, notify_flow())
        assert result.ok, result.divergence  # type: ignore[attr-defined]
        assert result.output == {"notified": True}  # type: ignore[attr-defined]
    assert SENT[0].read_text().splitlines() == ["ada@example.com"]  # the inner action ran only when recorded

    changed = await replay_notify(recording, notify_flow("Notify the owner of the ticket at once."))
    divergence = changed.divergence  # type: ignore[attr-defined]
    assert divergence is not None and divergence.step_path == "flow/@1/model-1"
    assert divergence.where == "messages[0].content" and "at once" in divergence.got
    assert SENT[0].read_text().splitlines() == ["ada@example.com"]


async def test_the_research_teams_flow_replays_its_five_agents_three_of_them_concurrent(tmp_path: Path) -> None:
    """examples/research_team.py, recorded: the planner, three researchers (agent steps of sub-flows
    run in parallel) and the reviewer are each served their own recorded answers."""
    from keel_devtools import configure, plugin
    from keel_triggerflow import plugin as triggerflow_plugin

    team = load("research_team.py")
    recorder = configure(tmp_path / "team.db")
    try:
        async with keel.Runtime(make_host(plugin, triggerflow_plugin), keel.Stack()) as runtime:
            runtime.use_model(ScriptedModel(team.answer))
            execution = await team.team.start(None, runtime=runtime)
            with anyio.fail_after(30):
                async for event in execution.events():
                    if event.kind == "execution.waiting":
                        await execution.signal("publish_approval", {"approved": True})
                        break
                recorded = await execution.result()
        assert recorder.flush()
        recording = Recording.from_db(recorder.db, execution.id)
    finally:
        recorder.close()
    agents = [r.header["runnable"] for r in recording.inner]
    assert agents[0] == "planner" and agents[-1] == "reviewer"
    assert sorted(agents[1:4]) == ["ecologist", "economist", "engineer"]
    async with keel.Runtime(make_host(triggerflow_plugin), keel.Stack()) as runtime:
        runtime.add(team.team)
        with anyio.fail_after(60):
            result = await replay(recording, runtime=runtime, timeout=30)
    assert result.ok, result.divergence
    # the same output; its idempotency key holds the flow's id, the replayed one's own
    assert {**result.output, "key": None} == {**recorded, "key": None}
