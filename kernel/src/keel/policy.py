"""Approvals: who may say yes to an action that policy says needs one.

The kernel combines ``keel_check_action`` answers (see :meth:`keel.PluginHost.check_action`). When
the verdict is ``approve``, the caller's :class:`Approver` is asked; no approver, a refusal or a
timeout is a denial (fail closed).
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Awaitable, Callable
from contextlib import nullcontext
from typing import Any, Protocol, runtime_checkable

import anyio
from pydantic import BaseModel, ConfigDict, Field

from keel.types import new_id

__all__ = ["ApprovalDecision", "ApprovalRequest", "Approver", "CallbackApprover", "ConsoleApprover", "ask"]


class ApprovalRequest(BaseModel):
    """What an approver is shown: the action, its (redacted) arguments, who asks and why."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    id: str = Field(default_factory=lambda: new_id("appr"))
    call_id: str
    action: str
    arguments: dict[str, Any]
    risk: str
    reason: str = ""
    agent: str | None = None
    execution_id: str | None = None
    tenant: str = "default"


class ApprovalDecision(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    approved: bool
    by: str = ""
    reason: str = ""


@runtime_checkable
class Approver(Protocol):
    """Says yes or no to one approval request."""

    async def decide(self, request: ApprovalRequest) -> ApprovalDecision: ...


class CallbackApprover:
    """An approver backed by a function (sync or async) returning a bool or an ApprovalDecision."""

    def __init__(
        self, callback: Callable[[ApprovalRequest], bool | ApprovalDecision | Awaitable[bool | ApprovalDecision]]
    ):
        self._callback = callback

    async def decide(self, request: ApprovalRequest) -> ApprovalDecision:
        answer = self._callback(request)
        if inspect.isawaitable(answer):
            answer = await answer
        if isinstance(answer, ApprovalDecision):
            return answer
        return ApprovalDecision(approved=bool(answer), by="callback")


class ConsoleApprover:
    """Asks on the terminal. Only for interactive scripts: with no terminal it refuses."""

    async def decide(self, request: ApprovalRequest) -> ApprovalDecision:
        if not sys.stdin or not sys.stdin.isatty():
            return ApprovalDecision(approved=False, by="console", reason="no terminal to ask on")

        def prompt() -> str:
            print(f"\nApprove {request.risk} action {request.action}({request.arguments})? {request.reason}")
            return input("[y/N] ").strip().lower()

        answer = await anyio.to_thread.run_sync(prompt)
        return ApprovalDecision(approved=answer in {"y", "yes"}, by="console")


async def ask(approver: Approver | None, request: ApprovalRequest, timeout: float | None) -> ApprovalDecision:
    """Ask an approver within a timeout; no approver, an error or the timeout all mean no."""
    if approver is None:
        return ApprovalDecision(approved=False, reason="no approver is configured (fail closed)")
    try:
        with anyio.fail_after(timeout) if timeout else nullcontext():
            return await approver.decide(request)
    except TimeoutError:
        return ApprovalDecision(approved=False, reason=f"approval timed out after {timeout}s (fail closed)")
