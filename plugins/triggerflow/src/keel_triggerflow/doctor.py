"""TriggerFlow's ``keel doctor`` checks (registered through ``keel_doctor_checks``).

- ``triggerflow.long-workflow`` (row ``long-workflow``): every served flow keeps its history on a
  durable store (its waits have an execution handle that outlives the process), has a time limit
  (a wait cannot hang forever unnoticed), and its declared waits (``.pause_for``) have a timeout;
- ``triggerflow.multi-role`` (row ``multi-role``): every role in a flow is explicit: each sub-flow
  declares its input and output models, each agent step has an output contract, and each resource
  a sub-flow needs is declared by the flow that runs it.

They read the flows' definitions, the stack and the budgets; they run nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import keel

__all__ = ["check_long_workflow", "check_multi_role", "doctor_checks"]


def _result(status: str, evidence: list[str], fix: str = "") -> keel.DoctorResult:
    return keel.DoctorResult(status=status, evidence=evidence, fix=fix)  # type: ignore[arg-type]


def _flows(context: Any) -> list[Any]:
    from keel_triggerflow.flow import TriggerFlow

    return [r for r in context.runnables if isinstance(r, TriggerFlow)]


def _ops(ops: Any) -> Iterator[Any]:
    """Every op in a list of ops, depth first (branches, cases, bodies; not into sub-flows)."""
    for op in ops:
        yield op
        for _key, body in op.children():
            yield from _ops(body)


def _flow_ops(flow: Any) -> Iterator[Any]:
    compiled = flow.compile()
    yield from _ops(compiled.main)
    seen: set[int] = set()
    for handlers in compiled.handlers.values():
        for ops, _join in handlers:
            if id(ops) not in seen:
                seen.add(id(ops))
                yield from _ops(ops)


def _store(context: Any) -> tuple[bool, str]:
    if context.store is None:
        return False, "no store resolves"
    return bool(context.store.durable), repr(context.store.name)


def check_long_workflow(context: Any) -> keel.DoctorResult:
    """Waits have a durable execution handle, a time limit, and interrupt semantics."""
    flows = _flows(context)
    if not flows:
        return _result("pass", ["no TriggerFlow flows served: nothing waits"])
    durable, store = _store(context)
    budgets, calls = getattr(context.runtime, "budgets", None), getattr(context.runtime, "calls", None)
    failed, warned, good = [], [], []
    for flow in flows:
        label = f"flow {flow.name!r}"
        if not durable:
            failed.append(f"{label}: its waits and history live on store {store}, which is not durable: a restart "
                          "loses every waiting execution")  # fmt: skip
            continue
        if flow.durability == "none":
            failed.append(f"{label}: durability = 'none': no history is kept, a wait cannot be resumed")
            continue
        limits = dict(budgets.limits_for(flow.name)) if budgets is not None else {}
        timeout = getattr(calls.for_runnable(flow.name), "timeout", None) if calls is not None else None
        untimed = [f"{sub}{op.signal!r}" for sub, op in _pauses(flow) if op.timeout is None]
        if untimed:
            warned.append(f"{label}: pause_for {', '.join(untimed)} has no timeout: it may wait forever")
        if "wall_time" not in limits and timeout is None:
            warned.append(f"{label}: no wall_time budget and no timeout: a waiting execution is never ended")
            continue
        limit = f"wall_time {limits['wall_time'][0]:g}s" if "wall_time" in limits else f"timeout {timeout:g}s"
        good.append(
            f"{label}: durability {flow.durability!r} on store {store}, {limit}; waits are answered by "
            "`keel flow signal` or the gateway, interrupted by `keel flow cancel`"
        )
    if failed:
        return _result("fail", failed + warned + good, 'keep flows on a durable store: store = "sqlite" or "postgres"')
    if warned:
        return _result(
            "warn",
            warned + good,
            "give each flow [budgets.runnables.<flow>] wall_time = S, and each pause_for a timeout",
        )
    return _result("pass", good)


def _pauses(flow: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(sub-flow path, op)`` for each chain ``pause_for``, sub-flows included."""
    from keel_triggerflow._ops import Pause, SubFlow

    for op in _flow_ops(flow):
        if isinstance(op, Pause):
            yield prefix, op
        elif isinstance(op, SubFlow):
            yield from _pauses(op.flow, f"{prefix}{op.flow.name}/")


def _roles(flow: Any, path: str = "") -> Iterator[tuple[str, str, Any]]:
    """``(where, kind, thing)`` for each sub-flow (``subflow``) and agent step (``agent``)."""
    from keel_triggerflow._ops import Step, SubFlow

    for op in _flow_ops(flow):
        if isinstance(op, SubFlow):
            yield path or flow.name, "subflow", op.flow
            yield from _roles(op.flow, f"{path or flow.name}/{op.flow.name}")
        elif isinstance(op, Step) and (runnable := getattr(op.fn, "runnable", None)) is not None:
            yield path or flow.name, "agent", runnable


def check_multi_role(context: Any) -> keel.DoctorResult:
    """Role agents and sub-flows have explicit contracts; the resources they need are declared."""
    flows = _flows(context)
    if not flows:
        return _result("pass", ["no TriggerFlow flows served: no roles to check"])
    failed, warned, good = [], [], []
    for flow in flows:
        parents = {flow.name: flow}
        roles = list(_roles(flow))
        if not roles:
            good.append(f"flow {flow.name!r}: one role (no sub-flows, no agent steps)")
        for where, kind, thing in roles:
            label = f"flow {where!r}: {'sub-flow' if kind == 'subflow' else 'agent'} {thing.name!r}"
            if kind == "subflow":
                parents[f"{where}/{thing.name}"] = thing
                if thing.output_model is None:
                    failed.append(f"{label} has no output_model: what it hands back is implicit")
                    continue
                if thing.input_model is None:
                    warned.append(f"{label} has no input_model: what it is given is implicit")
                    continue
                missing = [r for r in thing.resources if r not in parents[where].resources]
                if missing:
                    warned.append(f"{label} needs resources {missing} that {where!r} does not declare")
                    continue
                shared = f", shares {', '.join(thing.resources)}" if thing.resources else ""
                good.append(f"{label}: {thing.input_model.__name__} -> {thing.output_model.__name__}{shared}")
            else:
                schema = thing.output_schema() or {}
                if not schema or (schema.get("type") == "string" and len(schema) <= 2):
                    failed.append(f"{label} has no structured output contract")
                else:
                    good.append(f"{label}: output {schema.get('title') or 'schema'}")
    if failed:
        return _result(
            "fail",
            failed + warned + good,
            "give each sub-flow TriggerFlow(..., input_model=..., output_model=...) and each agent output=Model",
        )
    if warned:
        return _result("warn", warned + good, "declare each sub-flow's input_model and the resources it needs")
    return _result("pass", good)


def doctor_checks() -> list[keel.DoctorCheck]:
    return [
        keel.DoctorCheck(
            name="triggerflow.long-workflow",
            row="long-workflow",
            title="waiting flows are durable, time-limited and interruptible",
            check=check_long_workflow,
        ),
        keel.DoctorCheck(
            name="triggerflow.multi-role",
            row="multi-role",
            title="sub-flows and role agents have explicit contracts",
            check=check_multi_role,
        ),
    ]
