"""Approvals fail closed: only an explicit yes runs an action, and every call ends with exactly one
outcome record (executed, denied, failed or cancelled)."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

import keel
from keel.actions import ActionRegistry, call_action
from keel.policy import ApprovalDecision, ApprovalRequest, CallbackApprover
from keel.testing import make_host

OUTCOMES = {"action.completed", "action.denied", "action.failed", "action.cancelled"}
ran: list[int] = []


@keel.action(risk="irreversible")
def wipe(disk: int) -> str:
    """Wipe a disk."""
    ran.append(disk)
    return "wiped"


@keel.action(risk="irreversible", timeout=None)
async def wipe_slowly(disk: int) -> str:
    """Wipe a disk, slowly."""
    await anyio.sleep(30)
    ran.append(disk)
    return "wiped"


class Audit(list[tuple[str, dict[str, Any]]]):
    def __call__(self, kind: str, payload: dict[str, Any]) -> None:
        self.append((kind, payload))

    def outcomes(self) -> list[tuple[str, dict[str, Any]]]:
        return [(k, p) for k, p in self if k in OUTCOMES]


async def call(name: str, approver: Any, audit: Audit, **kw: Any) -> keel.ActionOutcome:
    registry = ActionRegistry()
    registry.add(wipe)
    registry.add(wipe_slowly)
    return await call_action(
        registry, name, {"disk": 1}, context=keel.ActionContext(agent="ops", execution_id="x1"),
        check=make_host().check_action, approver=approver, emit=audit, **kw,
    )  # fmt: skip


@pytest.mark.parametrize("answer", ["no", "yes", {"approved": False}, {"approved": True}, 1, None, [True], "True"])
async def test_only_true_or_a_typed_decision_approves(answer: Any) -> None:
    ran.clear()
    audit = Audit()
    outcome = await call("wipe", CallbackApprover(lambda request: answer), audit)
    assert not outcome.ok and outcome.verdict == "deny" and ran == []
    assert repr(answer)[:20] in outcome.error["message"], "the denial names what was received"  # type: ignore[index]
    [(kind, payload)] = audit.outcomes()
    assert kind == "action.denied" and payload["approver"] == "callback"


async def test_true_and_an_approving_decision_run() -> None:
    ran.clear()
    assert (await call("wipe", CallbackApprover(lambda request: True), Audit())).ok
    approve = CallbackApprover(lambda request: ApprovalDecision(approved=True, by="ops"))
    assert (await call("wipe", approve, Audit())).ok
    assert ran == [1, 1]


class Raising:
    name = "pager"

    async def decide(self, request: ApprovalRequest) -> ApprovalDecision:
        raise RuntimeError("pager service is down: secret-internal-host:9000")


class Untyped:
    async def decide(self, request: ApprovalRequest) -> Any:
        return {"approved": True}


async def test_an_approver_that_raises_is_a_recorded_denial() -> None:
    ran.clear()
    audit = Audit()
    outcome = await call("wipe", Raising(), audit)
    assert not outcome.ok and outcome.verdict == "deny" and ran == []
    message = outcome.error["message"]  # type: ignore[index]
    assert "RuntimeError" in message and "secret-internal-host" not in message, "the approver's text stays inside"
    [(kind, payload)] = audit.outcomes()
    assert kind == "action.denied" and payload["approver"] == "pager" and payload["policy"] == "keel.default"


async def test_an_approver_answering_something_else_is_a_denial() -> None:
    ran.clear()
    outcome = await call("wipe", Untyped(), Audit())
    assert not outcome.ok and "not an ApprovalDecision" in outcome.error["message"] and ran == []  # type: ignore[index]


@pytest.mark.parametrize("timeout", [0, -1, 0.0, float("nan"), True])
async def test_a_timeout_that_is_not_positive_is_refused(timeout: Any) -> None:
    audit = Audit()
    with pytest.raises(keel.KeelError, match="approval_timeout must be a positive number"):
        await call("wipe", CallbackApprover(lambda request: True), audit, approval_timeout=timeout)
    assert audit == [], "nothing is recorded for a call that was never made"


async def test_a_hanging_approver_ends_denied_after_the_timeout() -> None:
    audit = Audit()

    async def hang(request: ApprovalRequest) -> bool:
        await anyio.sleep_forever()
        return True

    outcome = await call("wipe", CallbackApprover(hang), audit, approval_timeout=0.05)
    assert not outcome.ok and "timed out" in outcome.error["message"]  # type: ignore[index]
    assert [k for k, _ in audit.outcomes()] == ["action.denied"]


async def test_a_call_cancelled_while_waiting_for_approval_records_cancelled() -> None:
    audit = Audit()
    asked = anyio.Event()

    async def hang(request: ApprovalRequest) -> bool:
        asked.set()
        await anyio.sleep_forever()
        return True

    async with anyio.create_task_group() as tg:
        tg.start_soon(call, "wipe", CallbackApprover(hang), audit)
        with anyio.fail_after(5):
            await asked.wait()
        tg.cancel_scope.cancel()
    [(kind, payload)] = audit.outcomes()
    assert kind == "action.cancelled" and payload["stage"] == "approval"


async def test_a_call_cancelled_while_running_records_cancelled_once() -> None:
    ran.clear()
    audit = Audit()
    async with anyio.create_task_group() as tg:
        tg.start_soon(call, "wipe_slowly", CallbackApprover(lambda request: True), audit)
        with anyio.fail_after(5):
            while not any(k == "action.started" for k, _ in audit):
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    assert [k for k, _ in audit.outcomes()] == ["action.cancelled"] and ran == []


async def test_a_denial_by_policy_names_the_policy_in_a_field() -> None:
    class NoWipes:
        @keel.hookimpl
        def keel_check_action(self, call: keel.ActionCall, context: keel.ActionContext) -> keel.PolicyDecision:
            return keel.PolicyDecision(verdict="deny", reason="change freeze", policy="freeze")

    registry = ActionRegistry()
    registry.add(wipe)
    audit = Audit()
    outcome = await call_action(
        registry, "wipe", {"disk": 1}, context=keel.ActionContext(), check=make_host(NoWipes()).check_action,
        approver=CallbackApprover(lambda request: True), emit=audit,
    )  # fmt: skip
    assert not outcome.ok
    [(kind, payload)] = audit.outcomes()
    assert kind == "action.denied" and payload["policy"] == "freeze" and payload["approver"] is None


async def test_a_policy_hook_that_raises_denies() -> None:
    class Broken:
        @keel.hookimpl
        def keel_check_action(self, call: keel.ActionCall, context: keel.ActionContext) -> keel.PolicyDecision:
            raise RuntimeError("policy store unreachable")

    ran.clear()
    registry = ActionRegistry()
    registry.add(wipe)
    audit = Audit()
    outcome = await call_action(
        registry, "wipe", {"disk": 1}, context=keel.ActionContext(), check=make_host(Broken()).check_action,
        approver=CallbackApprover(lambda request: True), emit=audit,
    )  # fmt: skip
    assert not outcome.ok and outcome.verdict == "deny" and ran == []
    assert [k for k, _ in audit.outcomes()] == ["action.denied"]
