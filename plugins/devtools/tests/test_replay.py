"""Replay: today's code against a recorded execution, served the recorded answers and results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import FINAL, INVOICE

import keel
from keel.cli import CliState
from keel.testing import Reply, ScriptedModel
from keel_devtools import Recorder, export_execution
from keel_devtools.cli import replay as replay_command
from keel_devtools.exchange import Recording
from keel_devtools.replayer import ReplayDivergence, ReplayError, replay

SIDE_EFFECTS: Path | None = None


@keel.action(risk="write")
def send_receipt(vendor: str, email: str) -> str:
    """Email the vendor a receipt (a side effect: one line in a file per call)."""
    assert SIDE_EFFECTS is not None
    with SIDE_EFFECTS.open("a", encoding="utf-8") as file:
        file.write(f"{vendor} {email}\n")
    return f"receipt sent to {email}"


def invoice_agent(instructions: str = "Extract the vendor and its country; send a receipt.") -> keel.Agent:
    return keel.Agent("receipts", instructions, output=INVOICE, actions=["send_receipt"])


def model() -> ScriptedModel:
    call = keel.ToolCall(id="r1", name="send_receipt", arguments={"vendor": "Nordlys AS", "email": "ap@nordlys.no"})
    return ScriptedModel([Reply(tool_calls=[call]), FINAL], chunks=6)


@pytest.fixture
def side_effects(tmp_path: Path) -> Path:
    global SIDE_EFFECTS
    SIDE_EFFECTS = tmp_path / "sent.txt"
    return SIDE_EFFECTS


async def record(host: keel.PluginHost, recorder: Recorder) -> Recording:
    async with keel.Runtime(host, keel.Stack()) as runtime:
        runtime.actions.add(send_receipt)
        runtime.use_model(model())
        execution = await invoice_agent().start("Invoice from Nordlys AS", runtime=runtime)
        await execution.result()
    assert recorder.flush()
    return Recording.from_db(recorder.db, execution.id)


def fresh_runtime(host: keel.PluginHost, agent: keel.Agent | None = None) -> keel.Runtime:
    """Today's code: the agent and its action registered; no model a replay could ask."""
    runtime = keel.Runtime(host, keel.Stack())
    runtime.actions.add(send_receipt)
    runtime.add(agent or invoice_agent())
    return runtime


async def test_a_replay_serves_the_recording_and_never_repeats_a_side_effect(
    host: keel.PluginHost, recorder: Recorder, side_effects: Path
) -> None:
    recording = await record(host, recorder)
    assert side_effects.read_text().splitlines() == ["Nordlys AS ap@nordlys.no"]
    async with fresh_runtime(host) as runtime:
        result = await replay(recording, runtime=runtime)
    assert result.ok, result.divergence
    assert result.status == "completed" and result.output.model_dump() == json.loads(FINAL)
    assert side_effects.read_text().splitlines() == ["Nordlys AS ap@nordlys.no"]  # not sent again
    # the replayed execution did what the recording did, step by step
    served = [e for e in result.events if e["kind"] == "action.completed"]
    assert served[0]["payload"]["content"] == "receipt sent to ap@nordlys.no"


async def test_a_changed_prompt_diverges_at_the_first_model_call(
    host: keel.PluginHost, recorder: Recorder, side_effects: Path
) -> None:
    recording = await record(host, recorder)
    changed = invoice_agent("Extract the vendor, its country and the IBAN; send a receipt.")
    async with fresh_runtime(host, changed) as runtime:
        result = await replay(recording, runtime=runtime)
    divergence = result.divergence
    assert isinstance(divergence, ReplayDivergence)
    assert divergence.step_path == "model-1"
    assert divergence.where == "messages[0].content"
    assert "send a receipt." in divergence.expected and "IBAN" in divergence.got
    assert result.status == "failed"  # stopped there: no answer was served for a request never recorded
    assert side_effects.read_text().splitlines() == ["Nordlys AS ap@nordlys.no"]
    with pytest.raises(ReplayDivergence, match="diverged at model-1"):
        result.raise_for_divergence()


async def test_a_changed_output_contract_diverges_where_the_model_is_first_told(
    host: keel.PluginHost, recorder: Recorder, side_effects: Path
) -> None:
    recording = await record(host, recorder)
    # today's code asks for one more field: the first request already describes another contract
    stricter = keel.Agent(
        "receipts", "Extract the vendor and its country; send a receipt.",
        output={**INVOICE, "iban": (str, "the IBAN")}, actions=["send_receipt"],
    )  # fmt: skip
    async with fresh_runtime(host, stricter) as runtime:
        result = await replay(recording, runtime=runtime)
    assert result.divergence is not None
    assert result.divergence.step_path == "model-1"
    assert result.divergence.where == "messages[0].content"  # the system prompt carries the schema
    assert "iban" in result.divergence.got and "iban" not in result.divergence.expected


async def test_a_live_model_is_asked_again_and_compared_with_tool_results_still_served(
    host: keel.PluginHost, recorder: Recorder, side_effects: Path
) -> None:
    recording = await record(host, recorder)
    call = keel.ToolCall(id="other", name="send_receipt", arguments={"vendor": "Nordlys AS", "email": "ap@nordlys.no"})
    live = ScriptedModel([Reply(tool_calls=[call]), json.dumps({"vendor": "Nordlys", "country": "NO"})])
    async with fresh_runtime(host) as runtime:
        runtime.use_model(live)
        result = await replay(recording, runtime=runtime, live_model=True)
    assert len(live.requests) == 2  # the model was asked
    assert [c.same for c in result.comparisons] == [True, False]
    assert result.comparisons[1].live == json.dumps({"vendor": "Nordlys", "country": "NO"})
    assert side_effects.read_text().splitlines() == ["Nordlys AS ap@nordlys.no"]
    assert result.divergence is not None and result.divergence.step_path == "execution"  # the output differs


async def test_a_live_model_calling_an_unrecorded_action_is_stopped_not_executed(
    host: keel.PluginHost, recorder: Recorder, side_effects: Path
) -> None:
    recording = await record(host, recorder)
    call = keel.ToolCall(id="x", name="send_receipt", arguments={"vendor": "Evil Corp", "email": "x@evil.test"})
    live = ScriptedModel([Reply(tool_calls=[call]), FINAL])
    async with fresh_runtime(host) as runtime:
        runtime.use_model(live)
        result = await replay(recording, runtime=runtime, live_model=True)
    assert result.divergence is not None and result.divergence.step_path == "action/send_receipt"
    assert side_effects.read_text().splitlines() == ["Nordlys AS ap@nordlys.no"]


async def test_an_unregistered_runnable_is_a_clear_error(host: keel.PluginHost, recorder: Recorder,
                                                         side_effects: Path) -> None:  # fmt: skip
    recording = await record(host, recorder)
    async with keel.Runtime(host, keel.Stack()) as runtime:
        with pytest.raises(ReplayError, match="no runnable named 'receipts'.*Register it"):
            await replay(recording, runtime=runtime)


def _cli(host: keel.PluginHost, agent: keel.Agent, *args: str) -> Any:
    class State(CliState):
        def runtime(self) -> keel.Runtime:
            return fresh_runtime(host, agent)

    return CliRunner().invoke(replay_command, list(args), obj=State(host, keel.Stack()))


async def test_keel_replay_dir_exits_non_zero_on_divergence_for_ci(
    host: keel.PluginHost, recorder: Recorder, side_effects: Path, tmp_path: Path
) -> None:
    recording = await record(host, recorder)
    folder = tmp_path / "recorded"
    folder.mkdir()
    export_execution(recorder.db, recording.execution_id, folder)
    second = await record(host, recorder)
    export_execution(recorder.db, second.execution_id, folder)

    def run(agent: keel.Agent, *args: str) -> Any:
        return _cli(host, agent, *args)

    import anyio

    ok = await anyio.to_thread.run_sync(run, invoice_agent(), str(folder))
    assert ok.exit_code == 0, ok.output
    assert "2 of 2 replayed with no divergence" in ok.output
    by_id = await anyio.to_thread.run_sync(run, invoice_agent(), "--db", str(recorder.db.path), recording.execution_id)
    assert by_id.exit_code == 0, by_id.output
    changed = await anyio.to_thread.run_sync(run, invoice_agent("Something else entirely."), str(folder))
    assert changed.exit_code == 1
    assert changed.output.count("DIVERGED") == 2 and "model-1" in changed.output
    assert side_effects.read_text().count("\n") == 2  # two recordings made, nothing replayed sent anything


async def test_an_actions_clock_random_and_id_draws_are_recorded_and_its_result_served(
    host: keel.PluginHost, recorder: Recorder
) -> None:
    from keel import draws

    made: list[str] = []

    @keel.action(risk="write")
    def open_ticket(title: str) -> dict[str, Any]:
        """Open a ticket."""
        made.append(title)
        urgent = draws.random() < 0.5  # code that branches on a draw
        return {"id": draws.uuid(), "at": draws.now(), "queue": "urgent" if urgent else "normal"}

    agent = keel.Agent("tickets", "Open a ticket.", output={"id": str, "queue": str}, actions=["open_ticket"])

    def answer(request: keel.ModelRequest) -> Any:
        if request.messages[-1].role != "tool":
            return Reply(tool_calls=[keel.ToolCall(id="t1", name="open_ticket", arguments={"title": "disk full"})])
        ticket = json.loads(request.messages[-1].content)
        return json.dumps({"id": ticket["id"], "queue": ticket["queue"]})

    async with keel.Runtime(host, keel.Stack()) as runtime:
        runtime.actions.add(open_ticket)
        runtime.use_model(ScriptedModel(answer))
        execution = await agent.start("the disk is full", runtime=runtime)
        original = await execution.result()
    assert recorder.flush()
    rows = [r for r in recorder.db.events(execution.id) if r["kind"] == "draw"]
    assert [(r["step"], r["event"]["payload"]["kind"]) for r in rows] == [
        ("draw/random", "random"), ("draw/id", "id"), ("draw/clock", "clock"),
    ]  # fmt: skip
    assert rows[1]["event"]["payload"]["value"] == original.id  # the evidence of what the action drew
    async with keel.Runtime(host, keel.Stack()) as runtime:
        runtime.actions.add(open_ticket)
        runtime.add(agent)
        result = await replay(Recording.from_db(recorder.db, execution.id), runtime=runtime)
    assert result.ok, result.divergence
    assert result.output == original and made == ["disk full"]  # served, not made again


def test_the_package_attribute_is_the_function_even_after_its_module_loaded() -> None:
    # the function lived in a submodule of the same name: once that module was imported anywhere,
    # keel_devtools.replay became the module and `from keel_devtools import replay` broke
    import importlib

    import keel_devtools

    importlib.import_module("keel_devtools.replayer")
    assert callable(keel_devtools.replay) and keel_devtools.replay.__name__ == "replay"
