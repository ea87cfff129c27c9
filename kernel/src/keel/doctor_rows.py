"""The kernel's own ``keel doctor`` checks for the checklist's rows (output contract, action and
environment boundaries, permissions, state, recovery, observability, regression). Split from
:mod:`keel.doctor` (issue 17), which runs them; the governance and approver checks are in
:mod:`keel.doctor_checks`. Registered by ``keel.builtins`` through ``keel_doctor_checks``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from keel.errors import KeelError
from keel.types import ActionCall, ActionContext, DoctorCheck, DoctorResult

if TYPE_CHECKING:
    from keel.doctor import DoctorContext

__all__ = ["kernel_checks"]


def _result(status: str, evidence: list[str], fix: str = "") -> DoctorResult:
    return DoctorResult(status=status, evidence=evidence, fix=fix)  # type: ignore[arg-type]


def check_output_contract(context: DoctorContext) -> DoctorResult:
    """Every runnable declares a structured output schema (not free text, not nothing)."""
    if not context.runnables:
        return _result(
            "warn",
            ["no runnables registered: nothing a business system consumes is checked"],
            "list your agents and flows in runnables = [...] in keel.toml",
        )
    bad, good = [], []
    for runnable in context.runnables:
        label = f"{runnable.kind} {runnable.name!r}"
        try:
            schema = runnable.output_schema()
        except Exception as err:
            bad.append(f"{label}: output_schema() raised {type(err).__name__}: {err}")
            continue
        if not schema:
            bad.append(f"{label}: no output schema")
        elif schema.get("type") == "string" and len(schema) <= 2:
            bad.append(f"{label}: returns free text (output schema {json.dumps(schema)})")
        else:
            good.append(f"{label}: structured output ({schema.get('title') or schema.get('type', 'schema')})")
    if bad:
        return _result(
            "fail", bad + good, "give each runnable an output contract: Agent(output=Model) or a flow's output model"
        )
    return _result("pass", good)


def check_action_boundary(context: DoctorContext) -> DoctorResult:
    """Actions are registered without conflicts; side-effecting ones are bounded in time."""
    if "action" in context.problems:
        return _result("fail", [context.problems["action"]], "rename one of the actions, or disable one plugin")
    if not context.actions:
        return _result("pass", ["no actions registered: agents call nothing outside themselves"])
    unbounded = [
        f"{spec.risk} action {name!r} ({context.action_sources.get(name, '?')}) has no timeout"
        for name, spec in sorted(context.actions.items())
        if spec.risk != "read" and spec.timeout is None
    ]
    by_source: dict[str, list[str]] = {}
    for name in sorted(context.actions):
        by_source.setdefault(context.action_sources.get(name, "?"), []).append(name)
    listed = [f"{source}: {', '.join(names)}" for source, names in sorted(by_source.items())]
    records = "each call goes through policy and leaves action.* events"
    if unbounded:
        return _result("warn", unbounded + listed, "give side-effecting actions a timeout: @keel.action(timeout=...)")
    count = len(context.actions)
    return _result("pass", [f"{count} registered action{'s' * (count != 1)}; {records}", *listed])


def check_environments(context: DoctorContext) -> DoctorResult:
    """Every declared environment has a registered driver (its lifecycle owner) and is supervised."""
    if not context.environments:
        return _result("pass", ["no [environments.*] declared: the stack hosts no scripts, servers or sandboxes"])
    try:
        drivers = context.host.environments()
    except KeelError as err:
        return _result("fail", [str(err)], "resolve the conflict between the two plugins")
    failed, warned, good = [], [], []
    for name, config in sorted(context.environments.items()):
        driver = str(config.get("driver", ""))
        where = f"[environments.{name}]"
        if driver not in drivers:
            available = ", ".join(sorted(drivers)) or "none installed"
            failed.append(f"{where}: driver {driver or '(none)'!r} is not registered (available: {available})")
            continue
        interval = config.get("health_interval", 5.0)
        if not isinstance(interval, (int, float)) or isinstance(interval, bool) or interval <= 0:
            failed.append(f"{where}: health_interval = {interval!r}: its health is never checked")
            continue
        restart = dict(config.get("restart", {}) or {})
        mode = restart.get("mode", drivers[driver].spec.restart.mode)
        if mode == "never":
            warned.append(f"{where}: restart mode 'never': a crash leaves it down")
        else:
            good.append(
                f"{where}: {driver} ({drivers[driver].spec.kind}), health every {interval:g}s, restarted {mode}"
            )
    if failed:
        return _result("fail", failed + warned + good, "install the driver's plugin and set health_interval > 0")
    if warned:
        return _result("warn", warned + good, 'set restart = {mode = "on-failure"} in the environment\'s table')
    return _result("pass", good)


def check_permissions(context: DoctorContext) -> DoctorResult:
    """Irreversible actions need approval (or are denied); approval has somebody to ask."""
    irreversible = sorted(name for name, spec in context.actions.items() if spec.risk == "irreversible")
    if not irreversible:
        return _result("pass", ["no irreversible actions registered"])
    allowed, gated, denied = [], [], []
    for name in irreversible:
        spec = context.actions[name]
        call = ActionCall(action=name, risk=spec.risk, tags=spec.tags)
        decision = context.host.check_action(call, ActionContext(approver_available=True))
        label = f"{name!r} ({context.action_sources.get(name, '?')})"
        if decision.verdict == "allow":
            allowed.append(f"irreversible action {label} is allowed without approval by policy {decision.policy!r}")
        elif decision.verdict == "approve":
            gated.append(f"irreversible action {label} needs approval (policy {decision.policy!r})")
        else:
            denied.append(f"irreversible action {label} is denied (policy {decision.policy!r}: {decision.reason})")
    if allowed:
        return _result(
            "fail", allowed + gated + denied,
            "make the policy answer 'approve' (or 'deny') for irreversible actions in keel_check_action",
        )  # fmt: skip
    if gated and context.approver is None:
        return _result(
            "warn",
            [*gated, "no approver is configured: these calls are denied (fail closed) and can never run", *denied],
            'name an approver in the stack (approver = "module:attribute") or give the runtime one '
            "(Runtime(approver=...)), or deny these actions outright",
        )
    return _result("pass", gated + denied + ([_approver_line(context)] if gated else []))


def _approver_line(context: DoctorContext) -> str:
    """Which approver is asked, and the stack's ``approver`` when it names one (code may override it)."""
    ref = context.stack.config.approver
    return f"approver: {type(context.approver).__name__}" + (f" (the stack names approver = {ref!r})" if ref else "")


def _store_label(context: DoctorContext) -> str:
    choice = context.stack.config.store
    name = choice if isinstance(choice, str) else getattr(choice, "driver", None)
    return repr(context.store.name if context.store is not None else name or "memory")


def check_state(context: DoctorContext) -> DoctorResult:
    """Execution state lives in a durable store."""
    if context.store is None:
        return _result("fail", [context.problems.get("store", "no store resolves")], "set store = a registered store")
    if not context.store.durable:
        return _result(
            "warn",
            [f"store {_store_label(context)} is not durable: execution state and artifacts live in process memory"],
            'choose a durable store: store = "sqlite" (keel-store-sqlite) or "postgres"',
        )
    return _result(
        "pass",
        [
            f"store {_store_label(context)} is durable",
            "sizes of values in recorded execution state: keel-devtools checks them when installed",
        ],
    )


def check_recovery(context: DoctorContext) -> DoctorResult:
    """Executions that may wait survive a restart: a durable store, and a plugin that adopts them."""
    flows = [f"{r.kind} {r.name!r}" for r in context.runnables if r.kind != "agent"]
    if context.store is None:
        return _result("fail", [context.problems.get("store", "no store resolves")], "set store = a registered store")
    label = _store_label(context)
    if not context.store.durable:
        if flows:
            return _result(
                "fail",
                [f"{flow} runs on store {label}, which is not durable: a wait or a restart loses it" for flow in flows],
                'choose a durable store: store = "sqlite" (keel-store-sqlite) or "postgres"',
            )
        return _result(
            "warn",
            [f"store {label} is not durable: nothing can be resumed after a restart"],
            'choose a durable store: store = "sqlite" (keel-store-sqlite) or "postgres"',
        )
    adopters = sorted({i.plugin_name for i in context.host.pm.hook.keel_find_execution.get_hookimpls()})
    if flows and not adopters:
        return _result(
            "warn",
            [f"{', '.join(flows)}: no plugin adopts executions after a restart (keel_find_execution)"],
            "install the plugin that runs these flows (keel-triggerflow)",
        )
    found = f"executions adopted after a restart by: {', '.join(adopters)}" if adopters else "no waiting runnables"
    return _result("pass", [f"store {label} is durable", found])


def check_observability(context: DoctorContext) -> DoctorResult:
    """Some plugin observes RuntimeEvents (a recorder, a tracer)."""
    observers = sorted({i.plugin_name for i in context.host.pm.hook.keel_on_runtime_event.get_hookimpls()})
    if not observers:
        return _result(
            "warn",
            ["no plugin observes RuntimeEvents (keel_on_runtime_event): requests, actions and flows leave no trace"],
            "install keel-devtools (recorder) or keel-otel (OpenTelemetry)",
        )
    return _result("pass", [f"RuntimeEvents observed by: {', '.join(observers)}"])


def check_regression(context: DoctorContext) -> DoctorResult:
    """Evaluators are installed, so that runs can be scored repeatably."""
    try:
        evaluators = sorted(context.host.evaluators())
    except KeelError as err:
        return _result("fail", [str(err)], "resolve the conflict between the two plugins")
    if not evaluators:
        return _result(
            "warn",
            ["no evaluators registered: nothing scores a run against a dataset"],
            "install keel-eval and keep a dataset per runnable",
        )
    return _result(
        "pass",
        [f"evaluators: {', '.join(evaluators)}", "a dataset per runnable and the last eval run: keel-eval checks them"],
    )


def kernel_checks() -> list[DoctorCheck]:
    """The kernel's own checks (registered by ``keel.builtins``)."""
    table = [
        ("keel.output-contract", "output-contract", "runnables declare structured output", check_output_contract),
        ("keel.actions", "action-boundary", "actions registered, side effects bounded", check_action_boundary),
        ("keel.environments", "environment-boundary", "environments have an owner and health checks",
         check_environments),
        ("keel.approvals", "permissions", "irreversible actions need approval", check_permissions),
        ("keel.state", "state", "execution state in a durable store", check_state),
        ("keel.recovery", "recovery", "waiting executions survive a restart", check_recovery),
        ("keel.observability", "observability", "RuntimeEvents are observed", check_observability),
        ("keel.regression", "regression", "evaluators installed", check_regression),
    ]  # fmt: skip
    return [DoctorCheck(name=n, row=r, title=t, check=f) for n, r, t, f in table]
