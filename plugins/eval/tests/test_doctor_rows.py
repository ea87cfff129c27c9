"""keel-eval's doctor check: a runnable with no dataset warns, a failed last run fails, a dataset
with a passing (or no) last run passes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel

import keel
from keel.doctor import DoctorContext, run_doctor
from keel.testing import make_host
from keel_eval import plugin


class Ticket(BaseModel):
    category: str


def regression(folder: Path, toml: str = "") -> keel.DoctorResult:
    (folder / "keel.toml").write_text(toml)
    runtime = keel.Runtime(make_host(plugin), keel.load_stack(folder / "keel.toml"))
    runtime.add(keel.Agent("triage", "triage", output=Ticket))
    (report,) = run_doctor(DoctorContext.from_runtime(runtime), ["regression"])
    return {c.name: c for c in report.checks}["eval.datasets"]  # type: ignore[return-value]


def report(folder: Path, failed: int, started_at: float) -> None:
    data = {"format": "keel-eval-report", "runnable": "triage", "started_at": started_at,
            "summary": {"cases": 2, "failed": failed}}  # fmt: skip
    (folder / f"eval_{started_at:g}.json").write_text(json.dumps(data))


def test_a_runnable_with_no_dataset_warns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    check = regression(tmp_path)
    assert check.status == "warn" and "agent 'triage': no eval dataset" in check.evidence[0]


def test_a_failed_last_run_fails_and_a_passing_one_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "triage.yaml").write_text("name: triage\nrunnable: triage\ncases: []\n")
    toml = '[settings.eval]\ndatasets = "datasets"\nreports = "reports"\n'
    check = regression(tmp_path, toml)
    assert check.status == "pass" and check.evidence[0].endswith("not run yet (keel eval run)")

    (tmp_path / "reports").mkdir()
    report(tmp_path / "reports", failed=0, started_at=100)
    report(tmp_path / "reports", failed=1, started_at=200)  # the last one
    check = regression(tmp_path, toml)
    assert check.status == "fail" and "failed 1 of 2 case(s)" in check.evidence[0]

    report(tmp_path / "reports", failed=0, started_at=300)
    check = regression(tmp_path, toml)
    assert check.status == "pass" and "last run passed" in check.evidence[0]
