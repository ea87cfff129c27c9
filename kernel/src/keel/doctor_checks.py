"""The kernel's doctor checks for governance, approvers and environment owners (the first nine rows'
checks are in :mod:`keel.doctor_rows`). Registered by ``keel.builtins`` through ``keel_doctor_checks``.

- ``keel.governance`` (row ``governance``): every runnable has a budget and a time limit, retries
  are declared only for actions safe to repeat, cost limits have prices, and the declarations name
  things that exist;
- ``keel.approver`` (row ``permissions``): the runtime's approver refuses a request nobody asked
  for (probed once, in a thread of its own, for at most a second; an approver that would show the
  probe to people sets ``doctor_probe = False``);
- ``keel.environment-owners`` (row ``environment-boundary``): each environment names its owner.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from keel.types import DoctorCheck, DoctorResult

if TYPE_CHECKING:
    from keel.doctor import DoctorContext
    from keel.runtime import Runtime

__all__ = ["PROBE_SECONDS", "governance_checks"]

#: how long the approver probe waits for an answer (no answer in time: it does not fail open)
PROBE_SECONDS = 1.0


def _result(status: str, evidence: list[str], fix: str = "") -> DoctorResult:
    return DoctorResult(status=status, evidence=evidence, fix=fix)  # type: ignore[arg-type]


def _runtime(context: DoctorContext) -> Runtime:
    if context.runtime is not None:
        return context.runtime  # type: ignore[no-any-return]
    from keel.runtime import Runtime

    return Runtime(context.host, context.stack)


def _limits(limits: dict[str, tuple[float, str]]) -> str:
    return ", ".join(f"{name} {value:g}" for name, (value, _source) in limits.items())


def check_governance(context: DoctorContext) -> DoctorResult:
    """Cost, time and retries have an owner: budgets and call policies declared, and coherent."""
    from keel.calls import retry_safe

    runtime = _runtime(context)
    budgets, calls = runtime.budgets, runtime.calls
    failed: list[str] = []
    warned: list[str] = []
    good: list[str] = []
    declared = calls.declared()
    offered = _environment_actions(runtime)
    for name, policy in declared["actions"].items():
        spec = context.actions.get(name)
        if spec is None and name in offered:  # declared by an environment: known without starting it
            risk, env = offered[name]
            if policy.retries and risk != "read":
                failed.append(f"[calls.actions.{name}] retries = {policy.retries} on {risk} action {name!r} "
                              f"(declared by [environments.{env}]): a retry could repeat its effect")  # fmt: skip
            else:
                good.append(f"[calls.actions.{name}]: a {risk} action [environments.{env}] declares it will offer")
        elif spec is None:
            warned.append(f"[calls.actions.{name}] names no registered action (nor one an environment declares)")
        elif policy.retries and not retry_safe(spec):
            failed.append(
                f"[calls.actions.{name}] retries = {policy.retries} on {spec.risk} action {name!r} with no "
                "idempotency key: a retry could repeat its effect (the kernel refuses to retry it)"
            )
    served = {r.name for r in context.runnables}
    for table in (budgets.config.runnables, declared["runnables"]):
        for name in sorted(set(table) - served):  # an agent inside a flow is not registered: not a warning
            good.append(f"limits for {name!r}, not a registered runnable (an agent inside a flow, or a typo)")
    for runnable in context.runnables:
        label = f"{runnable.kind} {runnable.name!r}"
        limits = budgets.limits_for(runnable.name)
        policy = calls.for_runnable(runnable.name)
        timeout = policy.timeout if policy.timeout is not None else getattr(runnable, "timeout", None)
        if not limits:
            warned.append(f"{label}: no budget: its tokens, cost, model requests and action calls are unlimited")
        elif timeout is None and "wall_time" not in limits and runnable.kind == "agent":
            warned.append(f"{label}: budget {_limits(limits)}, but no timeout and no wall_time")
        else:
            time_limit = f"timeout {timeout:g}s" if timeout is not None else f"wall_time {limits['wall_time'][0]:g}s"
            good.append(
                f"{label}: budget {_limits(limits)}; {time_limit if runnable.kind == 'agent' else ''}".rstrip("; ")
            )
    failed += _unpriced(context, budgets)
    tenants = sorted(set(budgets.config.tenants) | set(budgets._python_tenants))
    if tenants:
        good.append(f"tenant budgets: {', '.join(tenants)}")
    if not budgets.is_set():
        warned.insert(0, "budgets unset: no [budgets] table in the stack and none declared in code")
    good.append("audit: every action call leaves action.* events; retries only for actions safe to repeat")
    fix = (
        "declare [budgets] (and [budgets.runnables.<name>]) and [calls] in keel.toml; an environment's actions "
        "in its table (actions = { name = risk }); see docs/budgets.md"
    )
    if failed:
        return _result("fail", failed + warned + good, fix)
    if warned or not context.runnables:
        return _result("warn", (warned or ["no runnables registered: nothing to govern"]) + good, fix)
    return _result("pass", good)


def _environment_actions(runtime: Runtime) -> dict[str, tuple[str, str]]:
    """The actions the stack's environments declare (``actions = {...}``), read without starting them."""
    from keel.errors import KeelError

    try:
        return runtime.environments.declared_actions()
    except KeelError:  # an unknown driver or a bad table: the environment-boundary row says so
        return {}


def _unpriced(context: DoctorContext, budgets: Any) -> list[str]:
    """A cost limit with a model of the stack that has no price: its requests would all be refused."""
    wants_cost = "cost" in budgets.config.limits() or any(
        b.cost is not None for b in [*budgets.config.runnables.values(), *budgets.config.tenants.values()]
    )
    if not wants_cost:
        return []
    out = []
    for alias, config in sorted(context.stack.config.models.items()):
        model = config.model or alias
        if budgets.price_of(model) is None and budgets.price_of(config.provider) is None:
            out.append(
                f'[models.{alias}] model {model!r} has no price, and a cost budget is set: add [budgets.prices."{model}"]'
            )
    return out


def check_approver(context: DoctorContext) -> DoctorResult:
    """The approver does not say yes to a request nobody asked for (it fails closed)."""
    from keel.policy import ApprovalRequest, ConsoleApprover, approver_name

    approver = context.approver
    if approver is None:
        return _result("pass", ["no approver: every call that needs approval is denied (fail closed)"])
    name = approver_name(approver)
    if isinstance(approver, ConsoleApprover):
        return _result("pass", [f"approver {name}: asks a person on the terminal; with none it refuses"])
    if getattr(approver, "doctor_probe", True) is False:  # it would show the probe to people
        return _result("pass", [f"approver {name}: not probed (doctor_probe = False); it says it fails closed"])
    request = ApprovalRequest(
        call_id="doctor-probe", action="keel.doctor.probe", arguments={}, risk="irreversible",
        reason="keel doctor's probe: nobody asked for this; an approver that fails closed refuses it or does not answer",
    )  # fmt: skip
    answer = _probe(approver, request)
    if getattr(answer, "approved", None) is True:
        return _result(
            "fail",
            [f"approver {name} approved keel doctor's probe, a request nobody asked for: it fails open"],
            "approve only what a person (or a rule that knows the action) said yes to; answer no otherwise",
        )
    said = (
        f"refused it ({getattr(answer, 'reason', '') or 'no reason'})"
        if answer is not None and not isinstance(answer, BaseException)
        else ("raised: a denial" if isinstance(answer, BaseException) else f"did not answer in {PROBE_SECONDS:g}s")
    )
    return _result("pass", [f"approver {name} was probed with a request nobody asked for and {said}"])


def _probe(approver: Any, request: Any) -> Any:
    """Ask the approver once, on an event loop of its own in a thread: doctor may run inside a loop."""
    import anyio

    box: dict[str, Any] = {}

    def run() -> None:
        async def ask() -> None:
            with anyio.move_on_after(PROBE_SECONDS):
                box["answer"] = await approver.decide(request)

        try:
            anyio.run(ask)
        except Exception as err:  # an approver that raises denies (keel.policy.ask)
            box["answer"] = err

    thread = threading.Thread(target=run, name="keel doctor approver probe", daemon=True)
    thread.start()
    thread.join(PROBE_SECONDS + 5)
    return box.get("answer")


def check_environment_owners(context: DoctorContext) -> DoctorResult:
    """Each environment names who owns it (``owner = "..."`` in its table)."""
    if not context.environments:
        return _result("pass", ["no [environments.*] declared"])
    missing = [
        f"[environments.{n}] has no owner" for n, t in sorted(context.environments.items()) if not t.get("owner")
    ]
    owned = [
        f"[environments.{n}] owner: {t['owner']}" for n, t in sorted(context.environments.items()) if t.get("owner")
    ]
    if missing:
        return _result("warn", missing + owned, 'name who answers for it: owner = "team-or-person" in its table')
    return _result("pass", owned)


def check_updates(context: DoctorContext) -> DoctorResult:
    """Each package in development (the kernel, the loaded plugins) whose version is not in its
    CHANGELOG.md yet carries release notes waiting in its ``changes/`` folder (tools/release_notes.py)."""
    import json
    import re
    import tomllib
    from importlib import metadata
    from pathlib import Path
    from urllib.parse import unquote, urlparse

    names = {"keel-kernel"} | {i.distribution for i in context.host.plugin_infos() if i.status == "loaded"}
    failed, good, built = [], [], []
    for name in sorted(n for n in names if n):
        try:
            url = json.loads(metadata.distribution(name).read_text("direct_url.json") or "{}")
        except (metadata.PackageNotFoundError, ValueError):
            continue
        if not url.get("dir_info", {}).get("editable"):
            built.append(name)
            continue
        root = Path(unquote(urlparse(url.get("url", "")).path))
        try:
            version = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            continue
        changelog = root / "CHANGELOG.md"
        released = re.findall(r"^## (\S+)", changelog.read_text(encoding="utf-8"), re.M) if changelog.is_file() else []
        fragments = [p.name for p in (root / "changes").glob("*.*.md")] if (root / "changes").is_dir() else []
        if version in released:
            good.append(
                f"{name} {version}: in {changelog.name}"
                + (f", {len(fragments)} fragment(s) for the next" if fragments else "")
            )
        elif fragments:
            good.append(f"{name} {version} (unreleased): {len(fragments)} fragment(s) in {root.name}/changes/")
        else:
            last = f" (last released: {released[0]})" if released else ""
            failed.append(f"{name} {version}{last}: not in CHANGELOG.md and no fragment in {root / 'changes'}")
    if built:
        good.append(f"installed from built distributions (their notes ship with them): {', '.join(built)}")
    if failed:
        return _result(
            "fail",
            failed + good,
            "add a fragment changes/<slug>.<kind>.md saying what changed (tools/release_notes.py)",
        )
    return _result("pass", good or ["no package under development"])


def governance_checks() -> list[DoctorCheck]:
    table = [
        ("keel.updates", "updates", "release notes follow each version", check_updates),
        ("keel.governance", "governance", "budgets, timeouts and retries have an owner", check_governance),
        ("keel.approver", "permissions", "the approver fails closed", check_approver),
        ("keel.environment-owners", "environment-boundary", "environments name their owner", check_environment_owners),
    ]
    return [DoctorCheck(name=n, row=r, title=t, check=f) for n, r, t, f in table]
