"""The stack's ``approver = "module:attribute"``: the runtime asks it when no approver is given in
code, `keel stack` shows it, doctor checks it (and probes that it fails closed), and a bad one is a
clear error naming the cause and the fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_doctor import row, runtime_for

import keel
from keel.policy import ApprovalDecision, ApprovalRequest, CallbackApprover

HERE = Path(__file__).resolve().parent
CALLS: list[str] = []


@keel.action(risk="irreversible")
def close_account(customer: str) -> str:
    """Close a customer's account for good."""
    return f"closed {customer}"


class OnlyCarol:
    """Approves closing Carol's account, nothing else (a probe included)."""

    async def decide(self, request: ApprovalRequest) -> ApprovalDecision:
        CALLS.append(request.action)
        approved = request.action == "close_account" and request.arguments.get("customer") == "carol"
        return ApprovalDecision(approved=approved, by="carol's manager", reason="" if approved else "not carol")


only_carol = OnlyCarol()


def refuse_everything(request: ApprovalRequest) -> bool:
    return False


def approve_everything(request: ApprovalRequest) -> bool:
    return True


def broken(request: ApprovalRequest) -> bool:
    raise RuntimeError("the approvals service is down")


class NeedsAClient:
    def __init__(self, client: Any):
        self.client = client


NOT_AN_APPROVER = 42


def stack(tmp_path: Path, approver: str, *plugins: object, code: Any = None) -> keel.Runtime:
    runtime = runtime_for(tmp_path, f'approver = "{approver}"\n', *plugins, approver=code)
    runtime.actions.add(close_account)
    return runtime


@pytest.mark.parametrize(
    ("ref", "kind"),
    [
        ("test_stack_approver:only_carol", OnlyCarol),
        ("test_stack_approver:OnlyCarol", OnlyCarol),
        ("test_stack_approver:refuse_everything", CallbackApprover),
    ],
    ids=["instance", "class", "function"],
)
def test_the_stacks_approver_is_the_runtimes_when_code_gives_none(tmp_path: Path, ref: str, kind: type) -> None:
    assert isinstance(stack(tmp_path, ref).approver, kind)
    given = CallbackApprover(refuse_everything)
    assert stack(tmp_path, ref, code=given).approver is given  # code wins over the stack


async def test_a_call_that_needs_approval_asks_the_stacks_approver_and_fails_closed(tmp_path: Path) -> None:
    async with stack(tmp_path, "test_stack_approver:only_carol") as runtime:
        approved = await runtime.call_action("close_account", {"customer": "carol"})
        refused = await runtime.call_action("close_account", {"customer": "dave"})
    assert approved.ok and approved.result == "closed carol"
    assert not refused.ok and refused.verdict == "deny" and "not carol" in refused.error["message"]
    async with stack(tmp_path, "test_stack_approver:broken") as runtime:
        failed = await runtime.call_action("close_account", {"customer": "carol"})
    assert not failed.ok and failed.verdict == "deny"  # an approver that raises is a denial


@pytest.mark.parametrize(
    ("ref", "cause", "fix"),
    [
        ("no_such_module:approver", "there is no module 'no_such_module'", "Fix: check the spelling"),
        ("test_stack_approver:nobody", "has no attribute 'nobody'", "Fix: check the name after the colon"),
        ("just-a-name", "is not a reference", "write 'package.module:attribute'"),
        ("test_stack_approver:NOT_AN_APPROVER", "is not an approver: it names 42 (int)", "Fix: name an object with"),
        ("test_stack_approver:NeedsAClient", "could not be made with no arguments", "Fix: name an instance"),
    ],
    ids=["module", "attribute", "not-a-ref", "not-an-approver", "class-with-arguments"],
)
def test_a_bad_stack_approver_names_the_cause_and_the_fix(tmp_path: Path, ref: str, cause: str, fix: str) -> None:
    with pytest.raises(keel.StackError) as err:
        stack(tmp_path, ref)
    message = str(err.value)
    assert "the stack's approver" in message and repr(ref) in message and cause in message and fix in message


def test_doctor_passes_permissions_on_the_stacks_approver_and_probes_it(tmp_path: Path) -> None:
    CALLS.clear()
    runtime = stack(tmp_path, "test_stack_approver:only_carol")
    status, evidence, _ = row(runtime, "permissions", "keel.approvals")
    assert status == "pass", evidence
    assert "approver: OnlyCarol (the stack names approver = 'test_stack_approver:only_carol')" in evidence
    status, evidence, _ = row(runtime, "permissions", "keel.approver")
    assert status == "pass" and CALLS, evidence  # the probe reached the stack's approver, which refused it
    status, evidence, _ = row(stack(tmp_path, "test_stack_approver:approve_everything"), "permissions", "keel.approver")
    assert status == "fail" and "fails open" in evidence[0]


def test_without_any_approver_doctor_says_how_to_name_one_in_the_stack(tmp_path: Path) -> None:
    runtime = runtime_for(tmp_path)
    runtime.actions.add(close_account)
    status, _, fix = row(runtime, "permissions", "keel.approvals")
    assert status == "warn" and 'name an approver in the stack (approver = "module:attribute")' in fix


def keel_stack(tmp_path: Path, toml: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "keel.toml").write_text(toml)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    env["PYTHONPATH"] = str(HERE)
    return subprocess.run(
        [sys.executable, "-m", "keel.cli", "stack", "--json"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60, check=False,
    )  # fmt: skip


def test_keel_stack_shows_the_approver_and_whether_it_loads(tmp_path: Path) -> None:
    shown = keel_stack(tmp_path, 'approver = "test_stack_approver:only_carol"\n')
    assert shown.returncode == 0, shown.stderr
    approver = json.loads(shown.stdout)["approver"]
    assert approver["ref"] == "test_stack_approver:only_carol" and approver["status"] == "ok"
    assert approver["source"].endswith("keel.toml") and "OnlyCarol" in approver["note"]
    shown = keel_stack(tmp_path, 'approver = "test_stack_approver:nobody"\n')
    approver = json.loads(shown.stdout)["approver"]
    assert approver["status"] == "error" and "Fix: check the name after the colon" in approver["note"]
    assert json.loads(keel_stack(tmp_path, "").stdout)["approver"] is None
