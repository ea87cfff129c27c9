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
from keel.types import ActionSpec, DoctorCheck, DoctorResult, StoreSpec

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
    :ivar approver: the runtime's approver (given in code, or the stack's ``approver``), or ``None``.
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


def kernel_checks() -> list[DoctorCheck]:
    """The kernel's own checks (in :mod:`keel.doctor_rows`; registered by ``keel.builtins``)."""
    from keel.doctor_rows import kernel_checks as checks

    return checks()
