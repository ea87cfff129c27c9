"""Adoption: finding a flow execution that no live object holds, and taking it over on demand.

What the kernel's ``keel_find_execution`` and ``keel_adopt_executions`` hooks do for TriggerFlow
(``plugin.py`` wires them). An adopted execution is loaded from its history (one read), with the
flow definition found by name among the runtime's runnables, by its recorded ``ref``
(``module:attribute`` or ``file.py:attribute``) or rebuilt from its recorded data definition. It
costs nothing while it waits; a signal, a cancel or an expired timer continues it in the runtime's
task group. On start-up, executions that were running when their owner died (lease expired) are
resumed, and one timer task covers every timed wait.
"""

from __future__ import annotations

import heapq
import logging
import time
import weakref
from typing import TYPE_CHECKING, Any

import anyio

from keel import KeelError, NotFoundError, Runtime
from keel_triggerflow._clock import clock_of
from keel_triggerflow._history import (
    NAMESPACE,
    due_waits,
    ensure_index,
    inbox_name,
    lease_expiry,
    list_tenants,
    rows_by_status,
    stream_name,
)

if TYPE_CHECKING:
    from keel_triggerflow._engine import FlowExecution
    from keel_triggerflow.flow import TriggerFlow

log = logging.getLogger("keel_triggerflow")

__all__ = ["adopt_executions", "find_execution", "flow_for_start"]

#: runtimes that serve (``keel_adopt_executions`` ran on them): there, adopting an execution whose
#: owner is gone continues it; elsewhere (``keel flow show``) adopting only reads it
_serving: weakref.WeakSet[Runtime] = weakref.WeakSet()


def flow_for_start(runtime: Runtime, start: dict[str, Any]) -> TriggerFlow:
    """The definition an execution's start record names, or :class:`keel.KeelError` saying how to provide it."""
    from keel_triggerflow.flow import TriggerFlow

    name = str(start.get("flow", ""))
    if name in runtime.runnables:
        found = runtime.runnables.get(name)
        if isinstance(found, TriggerFlow):
            return found
    problems = []
    if start.get("ref"):
        from keel_triggerflow.cli import import_flow

        try:
            return import_flow(start["ref"])
        except Exception as err:  # an import error of the user's module: say which and why
            problems.append(f"its recorded ref {start['ref']!r} failed: {err}")
    if start.get("def") is not None:
        for runnable in runtime.runnables:
            registry = getattr(runnable, "registry", None)
            if registry is not None:
                try:
                    flow: TriggerFlow = registry.load(start["def"])
                except KeelError as err:
                    problems.append(f"its recorded definition does not load with {runnable.name!r}'s registry: {err}")
                    continue
                return flow
        problems.append("it was built from data: list a flow loaded from the same Registry under runnables")
    detail = "; ".join(problems)
    raise KeelError(
        f"execution runs flow {name!r}, which this process cannot find"
        + (f" ({detail})" if detail else "")
        + ": list it under runnables in keel.toml, or start flows with 'keel flow run FILE' so their file is recorded"
    )


async def find_execution(runtime: Runtime, execution_id: str, tenant: str) -> FlowExecution | None:
    """Load ``execution_id`` of ``tenant`` from the runtime's store as an adopted execution, or ``None``."""
    from keel_triggerflow.flow import TriggerFlow

    store = runtime.store()
    records = await store.read(tenant, stream_name(execution_id), limit=1)
    if not records or not isinstance(records[0].data, dict) or records[0].data.get("t") != "start":
        return None
    start = records[0].data
    try:
        flow = flow_for_start(runtime, start)
        unresolved = None
    except KeelError as err:
        # still an execution: readable and cancellable; continuing it says what is missing
        flow, unresolved = TriggerFlow(str(start.get("flow", "?"))), str(err)
    execution = await flow.load(execution_id, runtime, tenant=tenant, resources=runtime.resources)
    try:
        # a timer and a reader may adopt it at once: one object per execution, or two of them race
        # for its lease and the loser waits out a whole lease before it learns the end
        return runtime.executions.get(execution_id, tenant)  # type: ignore[return-value]
    except NotFoundError:
        runtime.executions.add(execution)
    execution._adopted = True
    execution._unresolved = unresolved
    from keel_triggerflow._follow import start_following

    start_following(execution)  # another process may run it: its events and status, live
    pending = execution.get_pending_interrupts()
    if pending and not execution.status.finished:
        # what a follower of a live execution saw last: the question and how to answer it
        execution._event("execution.waiting", {"interrupts": [i.model_dump() for i in pending]})
    await continue_if_orphaned(runtime, execution)
    return execution


async def continue_if_orphaned(runtime: Runtime, execution: FlowExecution) -> None:
    """In a serving runtime: continue a found (or refreshed) execution that has work to do and
    whose owner is gone: it runs, or a wait of it has expired, or an answer waits in its inbox."""
    if execution.status.finished or execution._unresolved is not None or execution.running_here:
        return
    if runtime not in _serving or not runtime.started:
        return
    store, tenant = runtime.store(), execution.tenant
    row = await store.get(tenant, NAMESPACE, f"exec:{execution.id}")
    indexed = row.value.get("status") if row is not None else None
    # a row left 'running' had work in flight when its owner died, even beside a wait; an
    # answer may wait in the inbox for an owner that died before applying it
    inboxed = bool(await store.read(tenant, inbox_name(execution.id), after=execution._inbox_after, limit=1))
    pending = execution.get_pending_interrupts()
    if not pending or indexed == "running" or inboxed or execution._has_expired_wait():
        await resume_if_orphaned(runtime, execution)


async def resume_if_orphaned(runtime: Runtime, execution: FlowExecution) -> bool:
    """Continue an adopted execution in the background unless a live process owns it; when a
    lease still stands (its owner was killed moments ago, or is alive), look again once it
    expires, for as long as this runtime serves."""
    from keel_triggerflow.types import FlowError, LeaseError

    expires = await lease_expiry(runtime.store(), execution.tenant, execution.id)
    if expires is None:
        try:
            await execution.resume()
            return True
        except LeaseError:
            expires = await lease_expiry(runtime.store(), execution.tenant, execution.id)  # another was faster
            if expires is None:
                return False
        except FlowError:
            if execution._started:  # a resume racing this one (a timer, a reader) went first
                return True
            raise
    if runtime in _serving and runtime.started:
        runtime.task_group.start_soon(_retry_at, runtime, execution, expires)
    return False


async def _retry_at(runtime: Runtime, execution: FlowExecution, expires: float) -> None:
    await anyio.sleep(max(0.0, expires - time.time()) + 0.05)
    if not execution.status.finished and not execution.running_here and not execution._started:
        await resume_if_orphaned(runtime, execution)


async def adopt_executions(runtime: Runtime) -> None:
    """Start-up: resume every running execution whose owner is gone; one timer task for timed waits.

    Reads the ``running`` status keys and the deadline keys, never a waiting execution's row or
    history: with 10,000 executions waiting, start-up costs what the running and timed ones cost.
    A tenant indexed by an older version is re-indexed first, once."""
    _serving.add(runtime)
    store = runtime.store()
    timers: list[tuple[float, str, str]] = []
    tenants = await list_tenants(store)
    for tenant in sorted({*tenants, "default"}):  # 'default' too: histories older than the tenant list
        await ensure_index(store, tenant)
    for tenant in await list_tenants(store):
        for row in await rows_by_status(store, tenant, "running"):
            runtime.task_group.start_soon(_adopt_one, runtime, row["id"], tenant)
        timers += [(deadline, tenant, execution_id) for deadline, execution_id in await due_waits(store, tenant)]
    if timers:
        heapq.heapify(timers)
        runtime.task_group.start_soon(_fire_timers, runtime, timers)


async def _adopt_one(runtime: Runtime, execution_id: str, tenant: str) -> None:
    from keel_triggerflow._engine import FlowExecution

    try:
        execution = await runtime.find_execution(execution_id, tenant)
        # find_execution continued it when its owner was gone; one a reader had found earlier (held,
        # only refreshed) is looked at again here: its timer is due, or its owner died while it ran
        if isinstance(execution, FlowExecution):
            await continue_if_orphaned(runtime, execution)
    except NotFoundError:
        return
    except Exception:
        log.exception("adopting execution %s (tenant %s) failed", execution_id, tenant)


async def _fire_timers(runtime: Runtime, timers: list[tuple[float, str, str]]) -> None:
    """One task sleeping until the nearest deadline of the waiting executions found at start-up."""
    while timers:
        deadline, tenant, execution_id = heapq.heappop(timers)
        delay = deadline - clock_of(runtime)()
        if delay > 0:
            await anyio.sleep(delay)
        await _adopt_one(runtime, execution_id, tenant)
