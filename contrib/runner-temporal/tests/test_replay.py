"""Every stored history replays on the interpreter as it is now (temporalio's Replayer, no server).

``tests/histories/v1-*`` were recorded by the interpreter before chunks had state and before a wait
was announced after its memo was stored; ``workflow.patched`` gates both changes, so executions
that were running when workers were upgraded go on. A change to ``_workflow.py`` that breaks one of
these fails here: gate it with a new ``workflow.patched`` name, record new histories with
``tools/record_temporal_histories.py``, and keep the old ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from keel_runner_temporal._workflow import FlowWorkflow

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def test_there_are_histories_from_before_each_patch() -> None:
    assert {p.name.split("-")[0] for p in HISTORIES} >= {"v1", "v2"}


@pytest.mark.parametrize("path", HISTORIES, ids=lambda p: p.stem)
async def test_a_stored_history_replays(path: Path) -> None:
    workflow_id = json.loads(path.read_text())["events"][0]["workflowExecutionStartedEventAttributes"]
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    result = await Replayer(workflows=[FlowWorkflow]).replay_workflow(history)
    assert result.replay_failure is None, (workflow_id, result.replay_failure)


async def test_the_replay_test_can_fail(tmp_path: Path) -> None:
    """A v1 history whose recorded step is another chunk is a nondeterminism error, not a pass."""
    data = json.loads((Path(__file__).parent / "histories" / "v1-linear.json").read_text())
    text = json.dumps(data).replace('"activityType": {"name": "keel.chunk"}', '"activityType": {"name": "other"}', 1)
    history = WorkflowHistory.from_json("tampered", text)
    result = await Replayer(workflows=[FlowWorkflow]).replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is not None
