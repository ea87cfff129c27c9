"""keel doctor's governance, approver, environment-owner and updates checks: for each, a stack that
fails (or warns) and one that passes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from test_doctor import row, runtime_for

import keel
from keel.policy import CallbackApprover


class Ticket(BaseModel):
    category: str


@keel.action(risk="write")
def refund(order: str) -> str:
    """Refund an order."""
    return order


@keel.action(risk="write", idempotency_key=lambda arguments: arguments["order"])
def refund_once(order: str) -> str:
    """Refund an order, once per order."""
    return order


def with_agent(runtime: keel.Runtime) -> keel.Runtime:
    runtime.add(keel.Agent("triage", "triage", output=Ticket))
    return runtime


# ------------------------------------------------------------------------------------ governance


def test_governance_warns_when_budgets_are_unset(tmp_path: Path) -> None:
    status, evidence, fix = row(with_agent(runtime_for(tmp_path)), "governance", "keel.governance")
    assert status == "warn"
    assert evidence[0].startswith("budgets unset")
    assert any("agent 'triage': no budget" in line for line in evidence)
    assert "docs/budgets.md" in fix


def test_governance_fails_on_a_retry_of_an_action_that_is_not_safe_to_repeat(tmp_path: Path) -> None:
    toml = "[budgets]\ntokens = 1000\nwall_time = 60\n[calls.actions.refund]\nretries = 2\n"
    runtime = with_agent(runtime_for(tmp_path, toml))
    runtime.actions.add(refund)
    status, evidence, _ = row(runtime, "governance", "keel.governance")
    assert status == "fail"
    assert "[calls.actions.refund] retries = 2 on write action 'refund' with no idempotency key" in evidence[0]


def test_governance_fails_on_a_cost_limit_over_a_model_with_no_price(tmp_path: Path) -> None:
    toml = '[budgets]\ncost = 1.0\nwall_time = 60\n[models.big]\nprovider = "openai"\nmodel = "acme-huge"\n'
    status, evidence, _ = row(with_agent(runtime_for(tmp_path, toml)), "governance", "keel.governance")
    assert status == "fail" and any('[budgets.prices."acme-huge"]' in line for line in evidence)


def test_governance_names_limits_of_something_not_registered(tmp_path: Path) -> None:
    toml = "[budgets]\ntokens = 1000\nwall_time = 60\n[budgets.runnables.triag]\ntokens = 10\n"
    status, evidence, _ = row(with_agent(runtime_for(tmp_path, toml)), "governance", "keel.governance")
    assert (
        status == "pass"
        and "limits for 'triag', not a registered runnable (an agent inside a flow, or a typo)" in evidence
    )


def test_governance_passes_when_every_runnable_has_a_budget_and_a_time_limit(tmp_path: Path) -> None:
    toml = (
        "[budgets]\ntokens = 20000\nmodel_requests = 10\n[budgets.tenants.trial]\ncost = 1.0\n"
        "[budgets.prices.scripted]\ninput = 0\noutput = 0\n"
        "[calls.runnables.triage]\ntimeout = 60\n[calls.actions.refund_once]\nretries = 2\n"
    )
    runtime = with_agent(runtime_for(tmp_path, toml))
    runtime.actions.add(refund_once)
    status, evidence, _ = row(runtime, "governance", "keel.governance")
    assert status == "pass", evidence
    assert "agent 'triage': budget tokens 20000, model_requests 10; timeout 60s" in evidence
    assert "tenant budgets: trial" in evidence


def test_governance_reads_budgets_declared_in_code(tmp_path: Path) -> None:
    runtime = with_agent(runtime_for(tmp_path))
    runtime.budgets.limit(runnable="triage", model_requests=5, wall_time=30)
    status, evidence, _ = row(runtime, "governance", "keel.governance")
    assert status == "pass" and "agent 'triage': budget model_requests 5, wall_time 30; wall_time 30s" in evidence


# -------------------------------------------------------------------------------------- approver


def test_an_approver_that_says_yes_to_anything_fails_open(tmp_path: Path) -> None:
    runtime = runtime_for(tmp_path, approver=CallbackApprover(lambda request: True))
    status, evidence, _ = row(runtime, "permissions", "keel.approver")
    assert status == "fail" and "fails open" in evidence[0]


@pytest.mark.parametrize(
    "callback",
    [lambda request: False, lambda request: {"approved": True}, lambda request: 1 / 0],
    ids=["refuses", "truthy-not-true", "raises"],
)
def test_an_approver_that_refuses_a_request_nobody_asked_for_passes(tmp_path: Path, callback: Any) -> None:
    status, evidence, _ = row(
        runtime_for(tmp_path, approver=CallbackApprover(callback)), "permissions", "keel.approver"
    )
    assert status == "pass", evidence


def test_an_approver_that_does_not_answer_the_probe_passes(tmp_path: Path) -> None:
    class Person:
        async def decide(self, request: keel.ApprovalRequest) -> keel.ApprovalDecision:
            import anyio

            await anyio.sleep_forever()  # waits for a person, who never saw the probe
            raise AssertionError

    status, evidence, _ = row(runtime_for(tmp_path, approver=Person()), "permissions", "keel.approver")
    assert status == "pass" and "did not answer" in evidence[0]


# ------------------------------------------------------------------------------------ environments


class Scratch:
    @keel.hookimpl
    def keel_environments(self) -> list[keel.EnvironmentSpec]:
        return [keel.EnvironmentSpec(name="scratch", kind="script", factory=lambda options: None)]


def test_an_environment_without_an_owner_warns_and_with_one_passes(tmp_path: Path) -> None:
    runtime = runtime_for(tmp_path, '[environments.kb]\ndriver = "scratch"\n', Scratch())
    status, evidence, fix = row(runtime, "environment-boundary", "keel.environment-owners")
    assert status == "warn" and evidence == ["[environments.kb] has no owner"] and "owner =" in fix
    runtime = runtime_for(tmp_path, '[environments.kb]\ndriver = "scratch"\nowner = "support-tools"\n', Scratch())
    status, evidence, _ = row(runtime, "environment-boundary", "keel.environment-owners")
    assert status == "pass" and evidence == ["[environments.kb] owner: support-tools"]


# ----------------------------------------------------------------------------------------- updates


class FakeDistribution:
    def __init__(self, root: Path, version: str) -> None:
        self.root = root
        self.version = version

    def read_text(self, name: str) -> str:
        return json.dumps({"url": self.root.as_uri(), "dir_info": {"editable": True}})


def package(tmp_path: Path, version: str, changelog: str = "", fragments: tuple[str, ...] = ()) -> Path:
    root = tmp_path / "pkg"
    (root / "changes").mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(f'[project]\nname = "keel-kernel"\nversion = "{version}"\n')
    if changelog:
        (root / "CHANGELOG.md").write_text(changelog)
    for name in fragments:
        (root / "changes" / name).write_text("Something a user notices.")
    return root


@pytest.mark.parametrize(
    ("version", "changelog", "fragments", "status"),
    [
        ("0.2.0", "# keel-kernel\n\n## 0.1.0 (2026-11-01)\n", (), "fail"),  # bumped, nothing said
        ("0.2.0", "## 0.1.0\n", ("budgets.added.md",), "pass"),  # bumped, notes waiting
        ("0.1.0", "## 0.1.0 (2026-11-01)\n", (), "pass"),  # released with its notes
    ],
)
def test_updates_fail_for_a_version_with_no_release_notes(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    version: str,
    changelog: str,
    fragments: tuple[str, ...],
    status: str,
) -> None:
    from importlib import metadata

    root = package(tmp_path, version, changelog, fragments)
    monkeypatch.setattr(metadata, "distribution", lambda name: FakeDistribution(root, version))
    got, evidence, _ = row(runtime_for(tmp_path), "updates", "keel.updates")
    assert got == status, evidence
    if status == "fail":
        assert "keel-kernel 0.2.0 (last released: 0.1.0): not in CHANGELOG.md and no fragment" in evidence[0]


# ------------------------------------------------------------- actions an environment will offer

ENV_STACK = (
    "[budgets]\ntokens = 1000\nwall_time = 60\n[calls.runnables.triage]\ntimeout = 60\n"
    '[environments.kb]\ndriver = "folder"\nactions = { kb_lookup = "read", kb_write = "write" }\n'
)


def test_governance_warns_on_a_calls_action_nothing_declares(tmp_path: Path) -> None:
    from test_doctor import Envs

    toml = ENV_STACK + "[calls.actions.kb_lokup]\nretries = 2\n"  # a typo
    status, evidence, _ = row(with_agent(runtime_for(tmp_path, toml, Envs())), "governance", "keel.governance")
    assert status == "warn"
    assert "[calls.actions.kb_lokup] names no registered action (nor one an environment declares)" in evidence


def test_governance_knows_the_actions_an_environment_declares_without_starting_it(tmp_path: Path) -> None:
    from test_doctor import Envs  # its environment raises if started: doctor starts nothing

    toml = ENV_STACK + "[calls.actions.kb_lookup]\nretries = 2\n"
    status, evidence, _ = row(with_agent(runtime_for(tmp_path, toml, Envs())), "governance", "keel.governance")
    assert status == "pass", evidence
    assert "[calls.actions.kb_lookup]: a read action [environments.kb] declares it will offer" in evidence
    toml = ENV_STACK + "[calls.actions.kb_write]\nretries = 2\n"  # a write is not retried: declared risk counts
    status, evidence, _ = row(with_agent(runtime_for(tmp_path, toml, Envs())), "governance", "keel.governance")
    assert status == "fail" and "retries = 2 on write action 'kb_write' (declared by [environments.kb])" in evidence[0]


def test_the_stacks_actions_entries_are_registered_and_seen_by_doctor(tmp_path: Path) -> None:
    toml = 'actions = ["test_doctor_governance:refund"]\n[budgets]\ntokens = 1000\nwall_time = 60\n'
    runtime = with_agent(runtime_for(tmp_path, toml + "[calls.actions.refund]\nretries = 2\n"))
    assert runtime.actions.source("refund") == "the stack's actions (test_doctor_governance:refund)"
    status, evidence, _ = row(runtime, "governance", "keel.governance")
    assert status == "fail" and "retries = 2 on write action 'refund' with no idempotency key" in evidence[0]
    wrong = runtime_for(tmp_path, 'actions = ["test_doctor_governance:Ticket"]\n')
    with pytest.raises(keel.StackError, match="is a ModelMetaclass, not an action: name a function decorated"):
        list(wrong.actions)
