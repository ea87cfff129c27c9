"""Calling actions: scope, policy, approval (fail closed) and the audit trail of every call."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

import keel
from keel.actions import ActionRegistry, call_action
from keel.policy import ApprovalDecision, ApprovalRequest, CallbackApprover
from keel.testing import make_host

ran: list[str] = []


@keel.action(risk="irreversible", redact=["reason_code"])
def delete_account(account_id: int, reason_code: str = "") -> str:
    """Delete a customer account for good."""
    ran.append(f"delete {account_id}")
    return "deleted"


@keel.action(risk="read", tags=["crm"])
def lookup(account_id: int) -> dict[str, Any]:
    """Look up an account."""
    return {"id": account_id, "name": "Ada", "password": "hunter2"}


@keel.action(visible_to=["billing"])
def refund(amount: float) -> str:
    """Refund an amount."""
    return f"refunded {amount}"


@keel.action(timeout=0.05)
async def slow() -> None:
    """Hang."""
    await anyio.sleep(5)


@keel.action
def explode(token: str) -> None:
    """Raise."""
    raise RuntimeError("database unreachable")


class Audit:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, kind: str, payload: dict[str, Any]) -> None:
        self.events.append((kind, payload))

    def kinds(self) -> list[str]:
        return [k for k, _ in self.events]


def registry() -> ActionRegistry:
    reg = ActionRegistry()
    for spec in (delete_account, lookup, refund, slow, explode):
        reg.add(spec)
    return reg


async def run(name: str, args: dict[str, Any], *, agent: str | None = "assistant", approver: Any = None,
              host: keel.PluginHost | None = None, audit: Audit | None = None, **kw: Any) -> keel.actions.ActionOutcome:  # fmt: skip
    host = host or make_host()
    return await call_action(
        registry(), name, args, context=keel.ActionContext(agent=agent, execution_id="x1"),
        check=host.check_action, approver=approver, emit=audit, **kw,
    )  # fmt: skip


async def test_irreversible_without_approver_never_runs_and_is_audited() -> None:
    ran.clear()
    audit = Audit()
    outcome = await run("delete_account", {"account_id": 7}, audit=audit)
    assert not outcome.ok and outcome.verdict == "deny"
    assert outcome.error is not None and "no approver" in outcome.error["message"]
    assert ran == []
    assert audit.kinds() == ["action.requested", "action.denied"]
    assert audit.events[0][1]["caller"] == {"agent": "assistant", "execution_id": "x1", "tenant": "default"}


async def test_approved_irreversible_runs_once() -> None:
    ran.clear()
    seen: list[ApprovalRequest] = []

    def approve(request: ApprovalRequest) -> bool:
        seen.append(request)
        return True

    audit = Audit()
    outcome = await run(
        "delete_account", {"account_id": 7, "reason_code": "R9"}, approver=CallbackApprover(approve), audit=audit
    )
    assert outcome.ok and outcome.result == "deleted" and ran == ["delete 7"]
    assert seen[0].arguments == {"account_id": 7, "reason_code": "***"}, "approvers see redacted arguments"
    assert audit.kinds() == ["action.requested", "action.approved", "action.started", "action.completed"]


async def test_refused_and_timed_out_approvals_deny() -> None:
    ran.clear()
    refused = await run("delete_account", {"account_id": 1}, approver=CallbackApprover(
        lambda r: ApprovalDecision(approved=False, by="ops", reason="not today")))  # fmt: skip
    assert not refused.ok and "not today" in refused.error["message"]  # type: ignore[index]

    async def never(request: ApprovalRequest) -> bool:
        await anyio.sleep(10)
        return True

    timed_out = await run("delete_account", {"account_id": 1}, approver=CallbackApprover(never), approval_timeout=0.05)
    assert not timed_out.ok and "timed out" in timed_out.error["message"]  # type: ignore[index]
    assert ran == []


async def test_scope_hides_actions_from_other_agents() -> None:
    hidden = await run("refund", {"amount": 5}, agent="assistant")
    assert not hidden.ok and hidden.error["type"] == "unknown_action"  # type: ignore[index]
    assert "refund" not in hidden.error["message"].split("available:")[1]  # type: ignore[index]
    assert (await run("refund", {"amount": 5}, agent="billing")).ok
    not_selected = await run("lookup", {"account_id": 1}, visible=["tag:billing"])
    assert not not_selected.ok
    assert (await run("lookup", {"account_id": 1}, visible=["tag:crm"])).ok


async def test_failures_are_structured_errors_with_audit() -> None:
    cases = {
        "nope": ({}, "unknown_action"),
        "lookup": ({"account_id": "x"}, "invalid_arguments"),
        "slow": ({}, "timeout"),
        "explode": ({"token": "s3cret"}, "RuntimeError"),
    }
    for name, (args, kind) in cases.items():
        audit = Audit()
        outcome = await run(name, args, audit=audit)
        assert not outcome.ok and outcome.error is not None and outcome.error["type"] == kind, name
        assert audit.kinds()[-1] == "action.failed"
        assert '"error"' in outcome.for_model()
    audit = Audit()
    await run("explode", {"token": "s3cret"}, audit=audit)
    assert audit.events[0][1]["arguments"] == {"token": "***"}, "secrets never reach the audit log"


async def test_policy_plugins_decide() -> None:
    class NoCrm:
        @keel.hookimpl
        def keel_check_action(self, call: keel.ActionCall, context: keel.ActionContext) -> keel.PolicyDecision | None:
            if "crm" in call.tags:
                return keel.PolicyDecision(verdict="deny", reason="CRM is read-only today", policy="change-freeze")
            return None

    outcome = await run("lookup", {"account_id": 1}, host=make_host(NoCrm()))
    assert not outcome.ok and "change-freeze" in outcome.error["message"]  # type: ignore[index]


async def test_runtime_call_action_publishes_audit_events() -> None:
    async with keel.Runtime(make_host()) as runtime:
        runtime.actions.add(lookup)
        sub = runtime.bus.subscribe()
        outcome = await runtime.call_action("lookup", {"account_id": 3})
        assert outcome.ok and outcome.result["name"] == "Ada"
        runtime.bus.close()
        kinds = [e.kind async for e in sub]
    assert kinds == ["action.requested", "action.approved", "action.started", "action.completed"]


def test_registry_refuses_a_second_action_with_the_same_name() -> None:
    reg = registry()
    with pytest.raises(keel.ActionError, match="already registered"):
        reg.add(keel.action(lambda account_id: None, name="lookup"))  # type: ignore[arg-type]
