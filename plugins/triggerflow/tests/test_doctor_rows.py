"""TriggerFlow's doctor checks of the long-workflow and multi-role rows: each fails (or warns) on a
stack that breaks its standard and passes on one that keeps it."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from pydantic import BaseModel

import keel
from keel.doctor import DoctorContext, run_doctor
from keel.testing import make_host
from keel_triggerflow import TriggerFlow
from keel_triggerflow import plugin as triggerflow_plugin


class Question(BaseModel):
    text: str


class Answer(BaseModel):
    text: str


async def think(ctx: Any) -> dict[str, Any]:
    return {"text": "ok"}


def flows(*, contracts: bool = True, timed: bool = True) -> TriggerFlow:
    role = TriggerFlow("role", input_model=Question if contracts else None, output_model=Answer if contracts else None)
    role.to(think)
    writer = keel.Agent("writer", "write", output=Answer if contracts else None)
    main = TriggerFlow("main", input_model=Question, output_model=Answer)
    main.to(role).to(writer).pause_for("approval", timeout=60 if timed else None)
    return main


def check(tmp_path: Path, row: str, flow: TriggerFlow, toml: str = "", durable: bool = True) -> Any:
    (tmp_path / "keel.toml").write_text(toml)
    runtime = keel.Runtime(make_host(triggerflow_plugin), keel.load_stack(tmp_path / "keel.toml"))
    runtime.runnables.add(flow)
    context = DoctorContext.from_runtime(runtime)
    store = keel.StoreSpec(name="durable-test" if durable else "memory", durable=durable, factory=lambda o: None)
    (report,) = run_doctor(dataclasses.replace(context, store=store), [row])
    return {c.name: c for c in report.checks}[f"triggerflow.{row}"]


BOUNDED = "[budgets.runnables.main]\nwall_time = 3600\n"


def test_long_workflow_fails_on_a_store_that_is_not_durable(tmp_path: Path) -> None:
    result = check(tmp_path, "long-workflow", flows(), BOUNDED, durable=False)
    assert result.status == "fail"
    assert result.evidence[0].startswith("flow 'main': its waits and history live on store 'memory'")
    assert "durable store" in result.fix


def test_long_workflow_warns_on_untimed_waits_and_flows(tmp_path: Path) -> None:
    result = check(tmp_path, "long-workflow", flows(timed=False))
    assert result.status == "warn"
    assert result.evidence == [
        "flow 'main': pause_for 'approval' has no timeout: it may wait forever",
        "flow 'main': no wall_time budget and no timeout: a waiting execution is never ended",
    ]


def test_long_workflow_passes_on_a_durable_time_limited_flow(tmp_path: Path) -> None:
    result = check(tmp_path, "long-workflow", flows(), BOUNDED)
    assert result.status == "pass", result.evidence
    assert "durability 'sync' on store 'durable-test', wall_time 3600s" in result.evidence[0]


def test_multi_role_fails_on_roles_without_contracts(tmp_path: Path) -> None:
    result = check(tmp_path, "multi-role", flows(contracts=False))
    assert result.status == "fail"
    assert result.evidence[:2] == [
        "flow 'main': sub-flow 'role' has no output_model: what it hands back is implicit",
        "flow 'main': agent 'writer' has no structured output contract",
    ]


def test_multi_role_warns_on_a_resource_the_parent_does_not_declare(tmp_path: Path) -> None:
    sub = TriggerFlow("sub", input_model=Question, output_model=Answer, resources=["workspace"])
    sub.to(think)
    main = TriggerFlow("main", output_model=Answer)
    main.to(sub)
    result = check(tmp_path, "multi-role", main)
    assert result.status == "warn"
    assert result.evidence == ["flow 'main': sub-flow 'sub' needs resources ['workspace'] that 'main' does not declare"]


def test_multi_role_passes_with_explicit_roles(tmp_path: Path) -> None:
    result = check(tmp_path, "multi-role", flows())
    assert result.status == "pass", result.evidence
    assert result.evidence == [
        "flow 'main': sub-flow 'role': Question -> Answer",
        "flow 'main': agent 'writer': output Answer",
    ]
