"""Approvals: who may say yes to an action that policy says needs one.

The kernel combines ``keel_check_action`` answers with :func:`combine_decisions`. When
the verdict is ``approve``, the caller's :class:`Approver` is asked. Only an explicit yes approves:
no approver, a refusal, an answer that is not ``True`` or an :class:`ApprovalDecision`, an approver
that raises, and the timeout are each a denial that says which of these it was (fail closed).
"""

from __future__ import annotations

import inspect
import logging
import sys
from collections.abc import Awaitable, Callable, Iterable
from contextlib import nullcontext
from typing import Any, Protocol, runtime_checkable

import anyio
from pydantic import BaseModel, ConfigDict, Field

from keel.errors import KeelError
from keel.types import ActionCall, ActionContext, PolicyDecision, new_id

log = logging.getLogger("keel.policy")

__all__ = [
    "combine_decisions",
    "ApprovalDecision",
    "ApprovalRequest",
    "Approver",
    "CallbackApprover",
    "ConsoleApprover",
    "ask",
    "check_approval_timeout",
    "load_approver",
]


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
    """An approver backed by a function (sync or async) returning ``True`` or an ApprovalDecision.

    Only ``True`` itself or ``ApprovalDecision(approved=True)`` approves. Any other answer (``False``,
    ``"no"``, ``{"approved": False}``, ``1``, ``None``) is a denial whose reason names what was
    received: a truthy value is never taken for a yes.
    """

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
        if answer is True:
            return ApprovalDecision(approved=True, by="callback")
        if answer is False:
            return ApprovalDecision(approved=False, by="callback", reason="refused by the callback")
        shown = repr(answer)
        shown = shown if len(shown) <= 80 else shown[:80] + "..."
        return ApprovalDecision(
            approved=False,
            by="callback",
            reason=f"the callback returned {shown} ({type(answer).__name__}); only True or an ApprovalDecision "
            "approves, so this is a denial (fail closed)",
        )


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


def check_approval_timeout(timeout: float | None) -> None:
    """Refuse a timeout that is not a positive number of seconds (``None`` waits without limit)."""
    if timeout is None:
        return
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise KeelError(
            f"approval_timeout must be a positive number of seconds, or None to wait without limit; got {timeout!r}"
        )


def load_approver(ref: str, *, what: str = "approver", error: type[KeelError] = KeelError) -> Approver:
    """The approver a ``"package.module:attribute"`` string names (the stack's ``approver = ...``).

    The attribute may be an :class:`Approver` (an object with ``async def decide(request)``), a class
    of one (made with no arguments), or a function ``(request) -> bool | ApprovalDecision`` (sync or
    async, wrapped in a :class:`CallbackApprover`).

    :param what: what the string is, for the message (``"the stack's approver"``).
    :param error: the :class:`keel.KeelError` subclass to raise (``StackError`` for a stack's).
    :raises KeelError: (``error``) the string cannot be loaded, the class cannot be made with no
        arguments, or the attribute is none of the three; the message names the cause and the fix.
    """
    from keel.refs import load_ref

    found: Any = load_ref(ref, what=what, error=error)
    if isinstance(found, type):
        try:
            found = found()
        except Exception as err:
            raise error(
                f"{what} {ref!r} is a class that could not be made with no arguments ({type(err).__name__}: {err}). "
                "Fix: name an instance of it (a module-level object) instead of the class"
            ) from err
    if isinstance(found, Approver):
        return found
    if callable(found):
        return CallbackApprover(found)
    raise error(
        f"{what} {ref!r} is not an approver: it names {_short(found)} ({type(found).__name__}). Fix: name an object with "
        "'async def decide(request)', a class of one, or a function (request) -> bool"
    )


def _short(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:60] + "..."


def approver_name(approver: Approver | None) -> str | None:
    """How audit records name an approver: its ``name`` attribute, else its class."""
    if approver is None:
        return None
    name = getattr(approver, "name", None)
    return name if isinstance(name, str) and name else type(approver).__name__


async def ask(approver: Approver | None, request: ApprovalRequest, timeout: float | None) -> ApprovalDecision:
    """Ask an approver within a timeout; only an explicit yes approves.

    No approver, the timeout, an approver that raises and an answer that is not an
    :class:`ApprovalDecision` are each a denial naming the cause; cancellation of the caller
    propagates (the caller records it).
    """
    check_approval_timeout(timeout)
    if approver is None:
        return ApprovalDecision(approved=False, reason="no approver is configured (fail closed)")
    who = approver_name(approver) or "approver"
    try:
        with anyio.fail_after(timeout) if timeout is not None else nullcontext():
            answer = await approver.decide(request)
    except TimeoutError:
        return ApprovalDecision(approved=False, by=who, reason=f"approval timed out after {timeout}s (fail closed)")
    except Exception as err:  # the approver's own failure is a denial, never the caller's exception
        log.warning("approver %s failed on %s (%s): %r", who, request.action, request.call_id, err)
        return ApprovalDecision(
            approved=False,
            by=who,
            reason=f"the approver failed ({type(err).__name__}), so this is a denial (fail closed)",
        )
    if not isinstance(answer, ApprovalDecision):
        return ApprovalDecision(
            approved=False,
            by=who,
            reason=f"the approver answered a {type(answer).__name__}, not an ApprovalDecision (fail closed)",
        )
    if answer.approved is not True:
        return answer if answer.by else answer.model_copy(update={"by": who})
    return answer


# ------------------------------------------------------------------------------ combining policies


def combine_decisions(
    decisions: Iterable[PolicyDecision | None], call: ActionCall, context: ActionContext
) -> PolicyDecision:
    """One verdict from every policy's answer to ``call``: ``deny`` over ``approve`` over ``allow``
    (the first of a kind wins); no answer at all is the default policy, which allows, and asks for
    approval for an ``irreversible`` action. An ``approve`` with no approver available becomes a
    ``deny`` that says so (fail closed)."""
    answers = [d for d in decisions if d is not None]
    for verdict in ("deny", "approve", "allow"):
        for decision in answers:
            if decision.verdict == verdict:
                return _fail_closed(decision, context)
    default = PolicyDecision(verdict="allow", reason="default policy", policy="keel.default")
    if call.risk == "irreversible":
        default = PolicyDecision(verdict="approve", reason="irreversible actions need approval", policy="keel.default")
    return _fail_closed(default, context)


def _fail_closed(decision: PolicyDecision, context: ActionContext) -> PolicyDecision:
    if decision.verdict == "approve" and not context.approver_available:
        return PolicyDecision(
            verdict="deny",
            reason=f"{decision.reason}; no approver is configured, so the call is denied (fail closed)",
            policy=decision.policy,
        )
    return decision
