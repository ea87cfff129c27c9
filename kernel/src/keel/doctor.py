"""``keel doctor``: the seed's pre-launch checklist, checked against a stack.

Each of the fifteen rows (:data:`ROWS`) is judged by the checks plugins contribute through
``keel_doctor_checks`` (the kernel's own among them, registered by ``keel.builtins``). A row's
verdict is the worst of its checks; a row that no installed check covers is a ``warn`` saying
"not checked yet" and why, never a pass. Doctor reads the stack, the registries and the plugin
host; it starts nothing: no environment, model or store.

    runtime = keel.Runtime(host, stack)
    reports = run_doctor(DoctorContext.from_runtime(runtime))
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import click

from keel.errors import KeelError
from keel.types import ActionCall, ActionContext, ActionSpec, DoctorCheck, DoctorResult, StoreSpec

if TYPE_CHECKING:
    from keel.execution import Runnable
    from keel.plugins import PluginHost
    from keel.runtime import Runtime
    from keel.stack import Stack

__all__ = ["ROWS", "CheckOutcome", "DoctorContext", "RowReport", "collect_checks", "doctor_command", "run_doctor"]

#: the seed's pre-launch checklist: row id -> (title, passing standard, quoted)
ROWS: dict[str, tuple[str, str]] = {
    "output-contract": (
        "Output contract",
        "Business systems consume structured data, not natural-language fragments",
    ),
    "streaming-boundary": (
        "Streaming boundary",
        "Instant stream is temporary UI/progress state; durable writes use final data",
    ),
    "action-boundary": (
        "Action boundary",
        "Callable capabilities are registered through Actions / MCP / built-in Actions and leave records",
    ),
    "environment-boundary": (
        "Environment boundary",
        "Scripts, MCP servers, browsers, SQLite, Node.js, and sandboxes have lifecycle owners",
    ),
    "permissions": (
        "Permissions and approvals",
        "High-risk or irreversible actions have policy, approval, or fail-closed paths",
    ),
    "long-workflow": (
        "Long workflow",
        "Waits, recovery, and human intervention have execution handles and interrupt semantics",
    ),
    "multi-role": (
        "Multi-role collaboration",
        "Role agents, Sub-Flow, Workspace topology, and aggregate fields are explicit",
    ),
    "interaction-layer": (
        "Interaction layer",
        "UI/IM consumes product events, not parser paths, chunk names, or RuntimeEvent payloads",
    ),
    "proactive": (
        "Proactive tasks",
        "Scheduler / webhook / queue is separated from HTTP request handlers and has idempotency",
    ),
    "state": (
        "State",
        "Large artifacts, downloads, reports, and logs stay out of prompt and execution state",
    ),
    "recovery": (
        "Recovery",
        "Checkpoint, save/load, runtime resource reinjection, and external resume entry are clear",
    ),
    "observability": (
        "Observability",
        "Requests, Actions, ExecutionEnvironment, and TriggerFlow events can be traced",
    ),
    "regression": (
        "Regression",
        "Representative inputs, output contract checks, business rules, or model judges are repeatable",
    ),
    "governance": (
        "Governance",
        "Cost, timeout, retry, idempotency, safety, and audit each have an owner",
    ),
    "updates": (
        "Updates",
        "Release notes, examples, website docs, and Agently-Skills guidance can be updated together",
    ),
}

#: why a row is not checked when no installed check covers it
UNCHECKED: dict[str, str] = {
    "streaming-boundary": "no gateway plugin is loaded (keel-gateway checks the contracts and bounds of what it streams)",
    "long-workflow": "no flow plugin is loaded (keel-triggerflow checks flows' waits, stores and time limits)",
    "multi-role": "no flow plugin is loaded (keel-triggerflow checks role agents, sub-flows and their contracts)",
    "interaction-layer": "no gateway plugin is loaded (keel-gateway checks channels and who may answer waits)",
    "proactive": "no scheduler plugin is loaded (keel-scheduler checks this row): proactive work has no home "
    "apart from request handlers",
}

_ORDER = {"pass": 0, "warn": 1, "fail": 2}


# ----------------------------------------------------------------------------------- the context


@dataclass(frozen=True)
class DoctorContext:
    """What a check may read. Nothing here is started; treat every field as read-only.

    :ivar stack: the resolved stack.
    :ivar host: the plugin host (``host.pm`` for hook implementations, ``host.plugin_infos()``).
    :ivar runnables: the agents and flows the application serves.
    :ivar actions: every registered action by name (each with its ``risk``).
    :ivar action_sources: where each action comes from (``plugin:<name>``, ``application``...).
    :ivar environments: the stack's ``[environments.<name>]`` tables, as declared.
    :ivar store: the store spec the stack resolves to, or ``None`` (``problems`` says why).
    :ivar approver: the approver the runtime was given, or ``None``.
    :ivar problems: registries that could not be read (a conflict), by family.
    :ivar runtime: the runtime read (``None`` when built by hand): its ``budgets`` and ``calls``.
    """

    stack: Stack
    host: PluginHost
    runnables: tuple[Runnable, ...] = ()
    actions: Mapping[str, ActionSpec] = field(default_factory=lambda: MappingProxyType({}))
    action_sources: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    environments: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: MappingProxyType({}))
    store: StoreSpec | None = None
    approver: Any = None
    problems: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    runtime: Any = None

    @classmethod
    def from_runtime(cls, runtime: Runtime) -> DoctorContext:
        """Read a runtime's registries without starting it."""
        problems: dict[str, str] = {}
        actions: dict[str, ActionSpec] = {}
        sources: dict[str, str] = {}
        try:
            for spec in runtime.actions:
                actions[spec.name] = spec
                sources[spec.name] = runtime.actions.source(spec.name)
        except KeelError as err:
            problems["action"] = str(err)
        store: StoreSpec | None = None
        try:
            store = runtime.stack.resolve("store", runtime.host)[0].spec
        except KeelError as err:
            problems["store"] = str(err)
        return cls(
            stack=runtime.stack,
            host=runtime.host,
            runnables=tuple(runtime.runnables),
            actions=MappingProxyType(actions),
            action_sources=MappingProxyType(sources),
            environments=MappingProxyType(
                {k: MappingProxyType(dict(v)) for k, v in runtime.stack.config.environments.items()}
            ),
            store=store,
            approver=runtime.approver,
            problems=MappingProxyType(problems),
            runtime=runtime,
        )


# ------------------------------------------------------------------------------------ running


@dataclass
class CheckOutcome:
    """One check's result, with who contributed it."""

    name: str
    plugin: str
    title: str
    status: str
    evidence: list[str]
    fix: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("name", "plugin", "title", "status", "evidence", "fix")}


@dataclass
class RowReport:
    """One checklist row: its verdict (the worst of its checks) and the checks behind it."""

    row: str
    title: str
    standard: str
    checks: list[CheckOutcome]

    @property
    def status(self) -> str:
        return max((c.status for c in self.checks), key=_ORDER.__getitem__, default="warn")

    def as_dict(self) -> dict[str, Any]:
        return {
            "row": self.row,
            "title": self.title,
            "standard": self.standard,
            "status": self.status,
            "checks": [c.as_dict() for c in self.checks],
        }


def collect_checks(host: PluginHost) -> tuple[list[tuple[str, DoctorCheck]], list[CheckOutcome]]:
    """Every plugin's checks as ``(plugin, check)``, and a ``fail`` for each plugin whose hook
    raised or returned the wrong shape, and for each check name two plugins use."""
    found: list[tuple[str, DoctorCheck]] = []
    broken: list[CheckOutcome] = []
    owners: dict[str, str] = {}
    for impl in host.pm.hook.keel_doctor_checks.get_hookimpls():
        plugin = impl.plugin_name
        try:
            result: Any = impl.function()
            items = list(result) if result is not None else []
            wrong = [i for i in items if not isinstance(i, DoctorCheck)]
            if isinstance(result, (str, bytes, Mapping)) or wrong:
                raise TypeError(
                    f"it gave {wrong[0] if wrong else result!r}; keel_doctor_checks() must yield keel.DoctorCheck"
                )
        except Exception as err:
            broken.append(_plugin_failed(plugin, "keel_doctor_checks", err))
            continue
        for check in items:
            if check.name in owners:
                broken.append(
                    CheckOutcome(
                        check.name,
                        plugin,
                        "duplicate check name",
                        "fail",
                        [f"plugins {owners[check.name]!r} and {plugin!r} both register check {check.name!r}"],
                        "rename one of the checks, or disable one plugin with KEEL_DISABLE_PLUGINS",
                    )
                )
                continue
            owners[check.name] = plugin
            found.append((plugin, check))
    return found, broken


def _plugin_failed(plugin: str, what: str, err: Exception) -> CheckOutcome:
    return CheckOutcome(
        f"{plugin}.broken", plugin, f"{what} of plugin {plugin!r}", "fail",
        [f"{what} of plugin {plugin!r} raised {type(err).__name__}: {err}"],
        f"fix or update plugin {plugin!r}, or disable it with KEEL_DISABLE_PLUGINS={plugin}",
    )  # fmt: skip


def parse_rows(only: str | Iterable[str] | None, known: Iterable[str] = ()) -> list[str] | None:
    """``"state,recovery"`` -> the row ids, checked against the checklist (and rows plugins add)."""
    if only is None:
        return None
    wanted = [r.strip() for r in (only.split(",") if isinstance(only, str) else only) if r.strip()]
    names = [*ROWS, *(k for k in known if k not in ROWS)]
    unknown = [r for r in wanted if r not in names]
    if unknown:
        raise KeelError(f"unknown checklist row {', '.join(map(repr, unknown))}; the rows are: {', '.join(names)}")
    return wanted


def run_doctor(context: DoctorContext, only: Iterable[str] | None = None) -> list[RowReport]:
    """Run every installed check (or those of the rows in ``only``); one report per row."""
    checks, broken = collect_checks(context.host)
    extra = [c.row for _p, c in checks if c.row not in ROWS]
    rows = list(dict.fromkeys([*ROWS, *extra]))
    wanted = (parse_rows(list(only), extra) or []) if only is not None else rows
    reports: dict[str, RowReport] = {}
    for row in rows:
        if row in wanted:
            title, standard = ROWS.get(row, (row, ""))
            reports[row] = RowReport(row, title, standard, [])
    for plugin, check in checks:
        report = reports.get(check.row)
        if report is None:
            continue
        if not report.standard and report.title == check.row:
            report.title = check.title
        try:
            result = check.check(context)
            if not isinstance(result, DoctorResult):
                raise TypeError(f"it returned {result!r}, not a keel.DoctorResult")
        except Exception as err:
            report.checks.append(
                CheckOutcome(
                    check.name,
                    plugin,
                    check.title,
                    "fail",
                    [f"check {check.name!r} of plugin {plugin!r} raised {type(err).__name__}: {err}"],
                    f"fix or update plugin {plugin!r}, or disable it with KEEL_DISABLE_PLUGINS={plugin}",
                )
            )
            continue
        report.checks.append(
            CheckOutcome(check.name, plugin, check.title, result.status, list(result.evidence), result.fix)
        )
    for report in reports.values():
        if not report.checks:
            why = UNCHECKED.get(report.row, "no installed plugin contributes a check for this row")
            report.checks.append(CheckOutcome("unchecked", "keel", report.title, "warn", [f"not checked yet: {why}"]))
    out = list(reports.values())
    if broken:  # a broken contributor is a failure of the checklist itself: shown first
        out.insert(0, RowReport("doctor", "Doctor's own checks", "", broken))
    return out


# ------------------------------------------------------------------------------------ command


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option("--only", metavar="ROWS", help="comma-separated row ids, e.g. state,recovery")
@click.option("--explain", metavar="ROW", help="quote a row's passing standard and list its checks")
@click.pass_context
def doctor_command(ctx: click.Context, as_json: bool, only: str | None, explain: str | None) -> None:
    """Check the stack against the pre-launch checklist (exit 1 on any fail). Starts nothing."""
    from keel.runtime import _import_target

    state = ctx.find_root().obj
    if explain is not None:
        _explain(state.host, explain)
        return
    runtime = state.runtime()
    for target in state.stack.config.runnables:
        runtime.runnables.add(_import_target(target))
    checks, _broken = collect_checks(state.host)
    rows = parse_rows(only, [c.row for _p, c in checks])
    reports = run_doctor(DoctorContext.from_runtime(runtime), rows)
    if as_json:
        click.echo(json.dumps({"stack": state.stack.name, "rows": [r.as_dict() for r in reports]}, indent=2))
    else:
        _print(reports, color=sys.stdout.isatty())
    if any(r.status == "fail" for r in reports):
        raise click.exceptions.Exit(1)


_COLORS = {"pass": "green", "warn": "yellow", "fail": "red"}


def _print(reports: list[RowReport], *, color: bool) -> None:
    width = max((len(r.row) for r in reports), default=0)
    counts = dict.fromkeys(_ORDER, 0)
    for report in reports:
        counts[report.status] += 1
        status = report.status.upper().ljust(4)
        click.echo(
            f"{click.style(status, fg=_COLORS[report.status]) if color else status}  {report.row:<{width}}  {report.title}"
        )
        for check in report.checks:
            mark = "" if check.status == report.status else f"[{check.status}] "
            for line in check.evidence:
                click.echo(f"{'':<{width + 8}}{mark}{line}")
                mark = ""
            if check.fix and check.status != "pass":
                click.echo(f"{'':<{width + 8}}fix: {check.fix}")
    click.echo(f"\n{counts['pass']} pass, {counts['warn']} warn, {counts['fail']} fail")


def _explain(host: PluginHost, row: str) -> None:
    checks, _broken = collect_checks(host)
    known = [c.row for _p, c in checks]
    parse_rows(row, known)
    title, standard = ROWS.get(row, (row, ""))
    click.echo(f"{title} ({row})")
    if standard:
        click.echo(f'  passing standard: "{standard}"')
    else:
        click.echo("  a row added by a plugin: the seed's checklist has no standard for it")
    mine = [(p, c) for p, c in checks if c.row == row]
    for plugin, check in mine:
        click.echo(f"  check {check.name} (plugin {plugin}): {check.title}")
    if not mine:
        click.echo(f"  not checked yet: {UNCHECKED.get(row, 'no installed plugin contributes a check for this row')}")


# ------------------------------------------------------------------------- the kernel's checks


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
            "give the runtime an approver (Runtime(approver=...)), or deny these actions outright",
        )
    return _result("pass", gated + denied + ([f"approver: {type(context.approver).__name__}"] if gated else []))


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
