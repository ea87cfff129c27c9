"""keel-devtools' doctor check of the state row: a recorded execution holding a value past the
artifact threshold fails; small values, or no recording at all, pass (and nothing is created)."""

from __future__ import annotations

from pathlib import Path

import keel
from keel.doctor import DoctorContext, run_doctor
from keel.testing import make_host
from keel_devtools import plugin
from keel_devtools.db import RecordingDB


def record(path: Path, execution_id: str, output: str) -> None:
    db = RecordingDB(path)
    try:
        events = [
            keel.RuntimeEvent(kind="execution.started", execution_id=execution_id, seq=1, payload={"input": "hi"}),
            keel.RuntimeEvent(kind="execution.completed", execution_id=execution_id, seq=2, payload={"output": output}),
        ]
        db.ingest([event.model_dump_json() for event in events])
    finally:
        db.close()


def state_check(tmp_path: Path, threshold: int = 1000) -> keel.DoctorResult:
    toml = f'[settings.devtools]\npath = "{tmp_path / "rec.db"}"\nartifact_threshold = {threshold}\n'
    (tmp_path / "keel.toml").write_text(toml)
    runtime = keel.Runtime(make_host(plugin), keel.load_stack(tmp_path / "keel.toml"))
    (report,) = run_doctor(DoctorContext.from_runtime(runtime), ["state"])
    return {c.name: c for c in report.checks}["devtools.recorded-state"]  # type: ignore[return-value]


def test_no_recording_passes_and_is_not_created(tmp_path: Path) -> None:
    check = state_check(tmp_path)
    assert check.status == "pass" and "nothing recorded" in check.evidence[0]
    assert not (tmp_path / "rec.db").exists()


def test_a_recorded_output_past_the_threshold_fails(tmp_path: Path) -> None:
    record(tmp_path / "rec.db", "exe_small", "ok")
    check = state_check(tmp_path)
    assert check.status == "pass" and "no input, output or action result over 1,000 bytes" in check.evidence[0]
    record(tmp_path / "rec.db", "exe_big", "x" * 5000)
    check = state_check(tmp_path)
    assert check.status == "fail"
    assert check.evidence[0].startswith("execution exe_big: execution.completed event of ")
    assert "Workspace artifacts" in check.fix
