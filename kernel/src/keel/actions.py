"""``@keel.action``: turn a typed function into an :class:`keel.ActionSpec`."""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any, get_type_hints, overload

import anyio
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from keel.budgets import BudgetError
from keel.calls import retry_safe
from keel.errors import ActionError, ActionInputError
from keel.options import validation_problems
from keel.policy import ApprovalRequest, Approver, approver_name, ask, check_approval_timeout
from keel.types import ActionCall, ActionContext, ActionSpec, PolicyDecision, Risk, new_id

if TYPE_CHECKING:
    from keel.budgets import Meter
    from keel.calls import CallPolicy

__all__ = ["ActionOutcome", "ActionRegistry", "action", "call_action", "invoke_action", "is_visible", "redact"]


@overload
def action(function: Callable[..., Any], /) -> ActionSpec: ...


@overload
def action(
    *,
    name: str | None = None,
    description: str | None = None,
    risk: Risk = "read",
    tags: Iterable[str] = (),
    visible_to: Iterable[str] | None = None,
    timeout: float | None = 30.0,
    redact: Iterable[str] = (),
    idempotency_key: Callable[[dict[str, Any]], str] | None = None,
) -> Callable[[Callable[..., Any]], ActionSpec]: ...


def action(
    function: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    risk: Risk = "read",
    tags: Iterable[str] = (),
    visible_to: Iterable[str] | None = None,
    timeout: float | None = 30.0,
    redact: Iterable[str] = (),
    idempotency_key: Callable[[dict[str, Any]], str] | None = None,
) -> ActionSpec | Callable[[Callable[..., Any]], ActionSpec]:
    """Describe a function as an action. The schema comes from its annotations, the description
    from its docstring.

    Example::

        @keel.action(risk="write", tags=["crm"])
        async def add_note(customer_id: int, text: str) -> str:
            "Attach a note to a customer record."
            ...
    """

    def build(fn: Callable[..., Any]) -> ActionSpec:
        model = _input_model(fn)
        schema = model.model_json_schema()
        schema.pop("title", None)
        return ActionSpec(
            name=name or fn.__name__,
            description=description if description is not None else inspect.cleandoc(fn.__doc__ or ""),
            parameters=schema,
            handler=fn,
            risk=risk,
            tags=frozenset(tags),
            visible_to=frozenset(visible_to) if visible_to is not None else None,
            timeout=timeout,
            redact=frozenset(redact),
            input_model=model,
            idempotency_key=idempotency_key,
        )

    return build(function) if function is not None else build


def _input_model(fn: Callable[..., Any]) -> type[BaseModel]:
    signature = inspect.signature(fn)
    hints = get_type_hints(fn)
    fields: dict[str, Any] = {}
    for param in signature.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ActionError(f"action {fn.__name__}: *args/**kwargs cannot be described by a schema")
        annotation = hints.get(param.name, Any)
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (annotation, default)
    return create_model(  # type: ignore[call-overload,no-any-return]
        f"{fn.__name__}_arguments", __config__=ConfigDict(extra="forbid"), **fields
    )


async def invoke_action(spec: ActionSpec, arguments: dict[str, Any], *, timeout: float | None = None) -> Any:
    """Validate arguments against the spec and call its handler (sync handlers in a worker thread),
    within ``timeout`` (default: the spec's). Policy and audit are the caller's business."""
    timeout = timeout if timeout is not None else spec.timeout
    kwargs = arguments
    if spec.input_model is not None:
        try:
            parsed = spec.input_model.model_validate(arguments)
        except ValidationError as err:
            problems = validation_problems(err, root="(arguments)")
            raise ActionInputError(
                f"action {spec.name!r} got invalid arguments: {problems}. Expected schema: {spec.parameters}"
            ) from err
        kwargs = {k: getattr(parsed, k) for k in type(parsed).model_fields}
    with anyio.fail_after(timeout) if timeout else nullcontext():
        if inspect.iscoroutinefunction(spec.handler):
            return await spec.handler(**kwargs)
        return await anyio.to_thread.run_sync(lambda: spec.handler(**kwargs))


# ------------------------------------------------------------------------------- calling actions

#: argument names always hidden in audit records, besides each action's own ``redact``
ALWAYS_REDACT = frozenset({"password", "api_key", "apikey", "secret", "token", "authorization"})


class ActionOutcome(BaseModel):
    """The result of one action call as the model and the audit log see it."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    call_id: str
    action: str
    ok: bool
    result: Any = None
    error: dict[str, str] | None = None
    duration_ms: float = 0.0
    verdict: str = "allow"

    def for_model(self) -> str:
        """The content handed back to the model: the result, or a structured error."""
        if self.ok:
            return self.result if isinstance(self.result, str) else json.dumps(self.result, default=str)
        return json.dumps({"error": self.error})


def is_visible(spec: ActionSpec, agent: str | None, wanted: Iterable[str] | None = None) -> bool:
    """Whether an agent may see an action.

    :param agent: the agent's name (``None``: code calling directly, sees everything unrestricted).
    :param wanted: the agent's own selection: action names or ``tag:<t>``; ``None`` = everything.
    """
    if spec.visible_to is not None and agent is not None:
        allowed = agent in spec.visible_to or any(f"tag:{t}" in spec.visible_to for t in spec.tags)
        if not allowed:
            return False
    if wanted is None:
        return True
    wanted = set(wanted)
    return spec.name in wanted or any(f"tag:{t}" in wanted for t in spec.tags)


class ActionRegistry:
    """Plugin actions (``keel_actions``) plus actions the application adds; one name, one action."""

    def __init__(self, plugin_actions: dict[str, Any] | None = None):
        self._items: dict[str, tuple[ActionSpec, str]] = {
            name: (reg.spec, reg.plugin) for name, reg in (plugin_actions or {}).items()
        }

    def add(self, spec: ActionSpec, source: str = "application") -> ActionSpec:
        existing = self._items.get(spec.name)
        if existing is not None and existing[0] is not spec:
            raise ActionError(f"action {spec.name!r} is already registered by {existing[1]!r}; rename one of them")
        self._items[spec.name] = (spec, source)
        return spec

    def replace(self, spec: ActionSpec, source: str) -> ActionSpec:
        """Register or re-register an action owned by ``source`` (an environment after a restart)."""
        existing = self._items.get(spec.name)
        if existing is not None and existing[1] != source:
            raise ActionError(f"action {spec.name!r} from {source} clashes with the one from {existing[1]!r}")
        self._items[spec.name] = (spec, source)
        return spec

    def remove_source(self, source: str) -> list[str]:
        """Forget every action a source registered (an environment about to re-register its own)."""
        names = [name for name, (_, owner) in self._items.items() if owner == source]
        for name in names:
            del self._items[name]
        return names

    def get(self, name: str) -> ActionSpec:
        try:
            return self._items[name][0]
        except KeyError:
            names = ", ".join(sorted(self._items)) or "none"
            raise ActionError(f"unknown action {name!r}; registered actions: {names}") from None

    def source(self, name: str) -> str:
        return self._items[name][1]

    def visible(self, agent: str | None, wanted: Iterable[str] | None = None) -> list[ActionSpec]:
        wanted_list = list(wanted) if wanted is not None else None
        return [spec for spec, _ in self._items.values() if is_visible(spec, agent, wanted_list)]

    def __iter__(self) -> Iterator[ActionSpec]:
        return iter([spec for spec, _ in self._items.values()])

    def __contains__(self, name: object) -> bool:
        return name in self._items


def redact(spec: ActionSpec | None, arguments: dict[str, Any]) -> dict[str, Any]:
    hidden = ALWAYS_REDACT | (spec.redact if spec else frozenset())
    return {k: ("***" if k.lower() in hidden or k in hidden else v) for k, v in arguments.items()}


def _summary(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


Emit = Callable[[str, dict[str, Any]], Any]


async def call_action(
    registry: ActionRegistry,
    name: str,
    arguments: dict[str, Any],
    *,
    context: ActionContext,
    check: Callable[[ActionCall, ActionContext], PolicyDecision],
    approver: Approver | None = None,
    approval_timeout: float | None = 300.0,
    emit: Emit | None = None,
    call_id: str | None = None,
    visible: Iterable[str] | None = None,
    meter: Meter | None = None,
    policy: CallPolicy | None = None,
) -> ActionOutcome:
    """Run one action call through scope, policy, approval and the handler, leaving an audit trail.

    Never raises for the call's own failures: an unknown or invisible action, bad arguments, a
    denial, an approver that fails, a timeout or an exception in the handler each become an
    ``ActionOutcome`` with ``ok=False`` and a structured error, and the matching ``action.*`` events.

    Every ``action.requested`` is followed by exactly one outcome record: ``action.completed``
    (executed), ``action.denied`` (with ``policy`` and ``approver`` fields naming who said no),
    ``action.failed`` or ``action.cancelled`` (the caller was cancelled while the call waited for
    its approval or ran; the cancellation then propagates).

    :param check: the policy, normally ``runtime.check_action``.
    :param approval_timeout: seconds to wait for the approver (a positive number; ``None`` waits
        without limit). Anything else is a :class:`keel.KeelError` before the call is recorded.
    :param emit: ``emit(kind, payload)`` for the audit events (``action.requested``,
        ``action.approved``, ``action.started``, then one of ``action.completed``,
        ``action.denied``, ``action.failed``, ``action.cancelled``).
    :param visible: the calling agent's own action selection (names or ``tag:<t>``).
    :param meter: the calling execution's budget meter: a call it has no room for is refused before
        policy and approval (``action.denied`` with ``policy = "budget"``) and raises
        :class:`keel.BudgetExceeded`, the one failure that propagates (it ends the execution).
    :param policy: the action's timeout and retries (``runtime.calls.for_action(name)``): a handler
        that fails or times out is tried again ``retries`` times (``action.retry`` events), when the
        action is safe to repeat (:func:`keel.calls.retry_safe`); each retry counts as a call.
    """
    check_approval_timeout(approval_timeout)
    spec = registry.get(name) if name in registry else None
    caller = {"agent": context.agent, "execution_id": context.execution_id, "tenant": context.tenant}
    trail = _Trail(call_id or new_id("call"), name, caller, emit)
    trail.emit(
        "action.requested", {**trail.base, "arguments": redact(spec, arguments), "risk": spec.risk if spec else None}
    )
    if spec is None or not is_visible(spec, context.agent, visible):
        known = ", ".join(s.name for s in registry.visible(context.agent, visible)) or "none"
        return trail.fail("unknown_action", f"no action named {name!r} is available to you; available: {known}")
    if meter is not None:
        _budget_check(meter.check_action_call, name, trail.fail)
    trail.started = time.perf_counter()
    try:
        call = ActionCall(id=trail.call_id, action=name, arguments=arguments, risk=spec.risk, tags=spec.tags)
        decision = check(call, context.model_copy(update={"approver_available": approver is not None}))
        refused = await _approve(trail, spec, arguments, context, decision, approver, approval_timeout)
        if refused is not None:
            return refused
        key = context.idempotency_key or (spec.idempotency_key(arguments) if spec.idempotency_key else None)
        if meter is not None:
            trail.stage = "budget"
            await _budget_room(meter, name, trail)
        trail.stage = "running"
        trail.emit("action.started", {**trail.base, "idempotency_key": key})
        return await _run_handler(trail, spec, arguments, meter, policy, decision)
    except anyio.get_cancelled_exc_class():
        # the caller went away (a client disconnected, an execution was cancelled): still one outcome
        trail.emit("action.cancelled", {**trail.base, "stage": trail.stage, "duration_ms": _ms(trail.started)})
        raise
    except Exception as err:  # a policy hook that raised: nothing ran, and the record says why
        if trail.stage != "policy":
            raise
        return trail.fail(
            "policy_error", f"action {name!r} is denied: the policy check failed ({type(err).__name__})",
            verdict="deny", policy=None, approver=None, reason=str(err)[:300],
        )  # fmt: skip


class _Trail:
    """One call's audit trail: its ids, the stage it reached (for ``action.cancelled``) and its
    failure records (``action.failed``, or ``action.denied`` for a ``deny`` verdict)."""

    __slots__ = ("base", "call_id", "emit", "name", "stage", "started")

    def __init__(self, call_id: str, name: str, caller: dict[str, Any], emit: Emit | None) -> None:
        self.call_id, self.name = call_id, name
        self.base: dict[str, Any] = {"call_id": call_id, "action": name, "caller": caller}
        self.emit: Emit = emit if emit is not None else _no_emit
        self.stage = "policy"
        self.started = time.perf_counter()

    def fail(
        self, kind: str, message: str, verdict: str = "allow", duration: float = 0.0, **fields: Any
    ) -> ActionOutcome:
        outcome = ActionOutcome(
            call_id=self.call_id, action=self.name, ok=False, error={"type": kind, "message": message},
            duration_ms=duration, verdict=verdict,
        )  # fmt: skip
        self.emit(
            "action.failed" if verdict != "deny" else "action.denied",
            {**self.base, "error": outcome.error, "verdict": verdict, **fields},
        )
        return outcome

    def completed(self, result: Any, duration: float, decision: PolicyDecision) -> ActionOutcome:
        content = result if isinstance(result, str) else json.dumps(result, default=str)
        self.emit(
            "action.completed",
            {
                **self.base,
                "result": _summary(content),
                "content": content,
                "duration_ms": duration,
                "policy": decision.policy,
            },
        )
        return ActionOutcome(
            call_id=self.call_id,
            action=self.name,
            ok=True,
            result=result,
            duration_ms=duration,
            verdict=decision.verdict,
        )


def _no_emit(kind: str, payload: dict[str, Any]) -> None:
    return None


async def _approve(
    trail: _Trail,
    spec: ActionSpec,
    arguments: dict[str, Any],
    context: ActionContext,
    decision: PolicyDecision,
    approver: Approver | None,
    approval_timeout: float | None,
) -> ActionOutcome | None:
    """Act on the policy's verdict: ask the approver when it says ``approve``; the denial's outcome
    when the call may not run, else ``None`` (after ``action.approved``)."""
    name, base = trail.name, trail.base
    if decision.verdict == "approve":
        request = ApprovalRequest(
            call_id=trail.call_id, action=name, arguments=redact(spec, arguments), risk=spec.risk,
            reason=decision.reason, agent=context.agent, execution_id=context.execution_id,
            tenant=context.tenant,
        )  # fmt: skip
        trail.stage = "approval"
        answer = await ask(approver, request, approval_timeout)
        if answer.approved is not True:
            why = answer.reason or f"refused by {answer.by or 'the approver'}"
            return trail.fail(
                "denied", f"action {name!r} was not approved: {why}", verdict="deny",
                policy=decision.policy, approver=answer.by or approver_name(approver), reason=why,
            )  # fmt: skip
        trail.emit("action.approved", {**base, "by": answer.by, "policy": decision.policy, "reason": decision.reason})
    elif decision.verdict == "deny":
        return trail.fail(
            "denied", f"action {name!r} is denied by policy {decision.policy!r}: {decision.reason}",
            verdict="deny", policy=decision.policy, approver=None, reason=decision.reason,
        )  # fmt: skip
    else:
        trail.emit("action.approved", {**base, "by": "policy", "policy": decision.policy, "reason": decision.reason})
    return None


async def _budget_room(meter: Meter, name: str, trail: _Trail) -> None:
    """Take one action call from the budget; no room is an ``action.denied`` and the error propagates."""
    try:
        await meter.before_action_call(name)
    except BudgetError as err:
        trail.fail("budget", str(err), verdict="deny", policy="budget", approver=None, reason=str(err))
        raise


async def _run_handler(
    trail: _Trail,
    spec: ActionSpec,
    arguments: dict[str, Any],
    meter: Meter | None,
    policy: CallPolicy | None,
    decision: PolicyDecision,
) -> ActionOutcome:
    """Run the handler with the policy's timeout and retries: the outcome, success or failure (the
    handler's own failure goes back to the model, not up the stack)."""
    name = trail.name
    timeout, retries, backoff = _attempts(spec, policy, trail.emit, trail.base)
    trail.started, attempt = time.perf_counter(), 0
    while True:
        try:
            result = await invoke_action(spec, arguments, timeout=timeout)
            break
        except ActionInputError as err:
            return trail.fail("invalid_arguments", str(err), duration=_ms(trail.started))
        except Exception as err:
            # the failure becomes an outcome and the exception is dropped: without its traceback, so a
            # sync handler's error (raised through anyio's worker-thread frame, which holds the future
            # that holds the error) leaves no reference cycle holding the execution
            err.__traceback__ = None
            if attempt >= retries:
                if isinstance(err, TimeoutError):
                    why = f"action {name!r} did not finish within {timeout or spec.timeout}s"
                    return trail.fail("timeout", why, duration=_ms(trail.started), attempts=attempt + 1)
                why = f"action {name!r} failed: {err}"
                return trail.fail(type(err).__name__, why, duration=_ms(trail.started), attempts=attempt + 1)
            attempt += 1
            trail.emit(
                "action.retry", {**trail.base, "attempt": attempt, "error": f"{type(err).__name__}: {err}"[:300]}
            )
        await anyio.sleep(backoff * 2 ** (attempt - 1))
        if meter is not None:  # a retry is another call of the handler: it needs room in the budget
            await _budget_room(meter, name, trail)
    return trail.completed(result, _ms(trail.started), decision)


def _attempts(spec: ActionSpec, policy: CallPolicy | None, emit: Emit, base: dict[str, Any]) -> tuple[Any, int, float]:
    """(timeout, retries, backoff) for one call: the policy's over the spec's; retries only for an
    action that is safe to repeat (else refused, with an ``action.retry_refused`` event)."""
    if policy is None:
        return None, 0, 0.0
    retries = policy.retries or 0
    if retries and not retry_safe(spec):
        emit("action.retry_refused", {**base, "retries": retries, "risk": spec.risk, "reason": _UNSAFE})
        retries = 0
    return policy.timeout, retries, policy.backoff if policy.backoff is not None else 0.5


_UNSAFE = "a call that writes is retried only with an idempotency key (@keel.action(idempotency_key=...))"


def _budget_check(check: Callable[[str], None], name: str, fail: Callable[..., ActionOutcome]) -> None:
    try:
        check(name)
    except BudgetError as err:
        fail("budget", str(err), verdict="deny", policy="budget", approver=None, reason=str(err))
        raise


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
