"""A recorded execution (DevTools' export format) becomes a case that runs with no side effects."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml
from eval_helpers import SIDE_EFFECTS, vendor

import keel
from keel_eval import EvalError, load_dataset, run_dataset
from keel_eval.recorded import case_from_recording, find_recording, read_recording, write_recording


async def record(runtime: keel.Runtime, folder: Path, text: str) -> tuple[str, Path]:
    """Run the vendor agent for real and export it the way DevTools does: header + events."""
    started = time.time()
    execution = await vendor.start(text, runtime=runtime)
    output = await execution.get_data()
    events = [e.model_dump(mode="json") async for e in execution.events()]
    header = {
        "execution_id": execution.id, "kind": "agent", "runnable": "vendor", "tenant": "default",
        "status": execution.status.value, "input": text, "output": output.model_dump(mode="json"),
        "started_at": started, "ended_at": time.time(),
    }  # fmt: skip
    return execution.id, write_recording(folder / f"{execution.id}.jsonl", header, events)


async def test_a_recorded_execution_becomes_a_case_that_calls_no_real_action(
    runtime: keel.Runtime, tmp_path: Path
) -> None:
    execution_id, file = await record(runtime, tmp_path / "executions", "Nordlys AS")
    assert SIDE_EFFECTS == ["Nordlys AS"]
    case = case_from_recording(read_recording(file))
    assert case["input"] == "Nordlys AS" and case["expected"] == {"vendor": "Nordlys AS", "country": "NO"}
    assert case["metadata"]["from_execution"] == execution_id
    assert case["fixtures"]["actions"] == [
        {
            "action": "lookup_vendor",
            "arguments": {"name": "Nordlys AS"},
            "result": {"name": "Nordlys AS", "country": "NO"},
        }
    ]
    assert {"trajectory": {"calls": ["lookup_vendor"], "mode": "in_order"}} in case["evaluators"]
    # found by id in the folder too
    assert find_recording(execution_id, tmp_path / "executions") == file

    case_file = tmp_path / "case.yaml"
    case_file.write_text(yaml.safe_dump(case))
    SIDE_EFFECTS.clear()
    report = await run_dataset(load_dataset(case_file), "vendor", runtime=runtime)
    report.assert_passed()
    assert SIDE_EFFECTS == []  # the recorded result answered


async def test_an_edited_fixture_changes_what_the_case_sees(runtime: keel.Runtime, tmp_path: Path) -> None:
    _, file = await record(runtime, tmp_path, "Nordlys AS")
    case = case_from_recording(read_recording(file), name="edited")
    case["fixtures"]["actions"][0]["result"] = {"name": "Nordlys AS", "country": "SE"}
    (tmp_path / "case.yaml").write_text(yaml.safe_dump(case))
    report = await run_dataset(load_dataset(tmp_path / "case.yaml"), "vendor", runtime=runtime)
    assert report.failed()[0].name == "edited"
    assert report.failed()[0].failures() == ['equals: country: expected "NO", got "SE"']


def test_bad_recordings_name_the_file_and_line(tmp_path: Path) -> None:
    def attempt(text: str, match: str) -> None:
        path = tmp_path / "x.jsonl"
        path.write_text(text)
        with pytest.raises(EvalError, match=match) as err:
            read_recording(path)
        assert str(path) in str(err.value)

    header = {"format": "keel-execution", "version": 1, "execution_id": "exe_1"}
    attempt("", "empty")
    attempt('{"format": "other"}\n', "line 1 is not a keel-execution header")
    attempt(json.dumps({**header, "version": 9}) + "\n", "newer than this keel-eval reads")
    attempt(json.dumps(header) + "\n{oops\n", "line 2 is not JSON")
    attempt(json.dumps(header) + '\n{"kind": "x", "execution_id": "exe_2"}\n', "line 2 belongs to execution 'exe_2'")
    attempt(json.dumps(header) + "\n[1]\n", "line 2 is not a RuntimeEvent")
    with pytest.raises(EvalError, match="keel devtools export exe_9"):
        find_recording("exe_9", tmp_path / "nowhere")
