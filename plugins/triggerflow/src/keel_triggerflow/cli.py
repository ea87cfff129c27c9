"""``keel flow ...``: run, list, show, signal, resume, cancel and purge flow executions; graph a flow."""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import click

from keel import Execution, ExecutionStatus, KeelError, NotFoundError, Runtime, load_ref
from keel_triggerflow._engine import FlowExecution
from keel_triggerflow._history import (
    delete_execution,
    ensure_index,
    expired_executions,
    list_index,
    parse_age,
    rows_by_status,
)
from keel_triggerflow.flow import TriggerFlow
from keel_triggerflow.runners import get_runner
from keel_triggerflow.types import CloseSnapshot, Interrupt, LeaseError

__all__ = ["flow_group", "import_flow"]


def import_flow(target: str) -> TriggerFlow:
    """``path/to/file.py[:name]`` or ``package.module[:name]``; without a name, the module's only
    TriggerFlow (or the one called ``flow``)."""
    where, _, attr = target.partition(":")
    if where.endswith(".py") or Path(where).is_file():
        path = Path(where).resolve()
        if not path.is_file():
            raise KeelError(f"no such flow file: {where}")
        spec = importlib.util.spec_from_file_location(f"_keel_flow_{path.stem}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.path.insert(0, str(path.parent))
        spec.loader.exec_module(module)
        ref_base = str(path)
    else:
        module = importlib.import_module(where)
        ref_base = where
    flows = {k: v for k, v in vars(module).items() if isinstance(v, TriggerFlow)}
    if attr:
        if attr not in flows:
            raise KeelError(f"{where} has no TriggerFlow named {attr!r} (it has: {', '.join(flows) or 'none'})")
    elif len(flows) == 1:
        attr = next(iter(flows))
    elif "flow" in flows:
        attr = "flow"
    else:
        raise KeelError(f"{where} defines {len(flows)} flows ({', '.join(flows) or 'none'}); name one: {where}:NAME")
    flow = flows[attr]
    flow.ref = f"{ref_base}:{attr}"
    return flow


def _runtime(ctx: click.Context) -> Runtime:
    """The stack's runtime with its ``runnables`` loaded (flows listed there are found by name)."""
    state = ctx.find_root().obj
    runtime = Runtime(state.host, state.stack)
    for target in state.stack.config.runnables:
        runtime.runnables.add(import_target(target))
    return runtime


def import_target(target: str) -> Any:
    """A ``module:attribute`` of the stack's ``runnables`` list, imported."""
    if str(Path.cwd()) not in sys.path and "" not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # the stack's folder, as `keel serve` run there sees it
    return load_ref(target, what="runnables entry")


def _run(ctx: click.Context, body: Callable[[Runtime], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        async with _runtime(ctx) as runtime:
            return await body(runtime)

    return anyio.run(main)


async def _find(runtime: Runtime, execution_id: str, tenant: str) -> Execution:
    """The execution, through the kernel's adoption hook (what the gateway uses too): from the
    stack's store (found by flow name among the runnables, by recorded file, or by recorded
    definition), or from another runner's engine (a Temporal workflow, say)."""
    try:
        execution = await runtime.find_execution(execution_id, tenant)
    except NotFoundError:
        raise KeelError(
            f"no execution {execution_id!r} in the stack's store (tenant {tenant!r}); see 'keel flow ls'"
        ) from None
    if isinstance(execution, FlowExecution):
        execution._adopted = False  # this command drives it itself (run() below), in the foreground
    elif execution.kind != "flow":
        raise KeelError(f"execution {execution_id!r} is a {execution.kind} execution, not a flow's")
    return execution


async def _load(runtime: Runtime, execution_id: str, tenant: str) -> FlowExecution:
    """A local runner's execution (``resume`` drives only those)."""
    execution = await _find(runtime, execution_id, tenant)
    if not isinstance(execution, FlowExecution):
        raise KeelError(
            f"execution {execution_id!r} runs on another runner, which resumes it by itself: "
            f"'keel flow show {execution_id}' says where it is"
        )
    return execution


def _pending(execution: Execution) -> list[Interrupt]:
    """The waits another runner's execution reports (``get_pending_interrupts()``, if it has one)."""
    pending = getattr(execution, "get_pending_interrupts", None)
    return [Interrupt.model_validate(i) for i in (pending() if pending is not None else ())]


async def _outside(execution: Execution) -> CloseSnapshot:
    """The snapshot of an execution another runner runs, from the Execution protocol alone."""
    result: Any = None
    error: str | None = None
    if execution.status is ExecutionStatus.COMPLETED:
        result = await execution.result()
    elif execution.status.finished:
        try:
            await execution.result()
        except Exception as err:  # its failure, as the snapshot's error
            error = str(err)
    return CloseSnapshot(
        execution_id=execution.id,
        flow=str(getattr(execution, "flow", "?")),
        status=execution.status.value,
        result=result,
        error=error,
        pending_interrupts=_pending(execution) if execution.status is ExecutionStatus.WAITING else [],
    )


async def _settled(execution: Execution, quiet: bool, answered: frozenset[str] = frozenset()) -> CloseSnapshot:
    """Follow another runner's execution until it ends or waits for something not in ``answered``."""
    async for event in execution.events():
        if event.kind == "execution.waiting":
            ids = {i.get("id") for i in event.payload.get("interrupts", [])}
            if ids - answered:
                if not quiet:
                    names = ", ".join(i["name"] for i in event.payload["interrupts"])
                    click.echo(f"  … waiting for {names}", err=True)
                break
    return await _outside(execution)


async def _drive(execution: FlowExecution, body: Callable[[], Awaitable[CloseSnapshot]], quiet: bool) -> CloseSnapshot:
    """Run ``body`` while printing progress to stderr."""
    result: list[CloseSnapshot] = []

    async def progress() -> None:
        async for event in execution.events(len(execution._events)):
            if event.kind == "flow.step.completed":
                click.echo(f"  ✓ {event.payload['step']}  ({event.payload['path']})", err=True)
            elif event.kind == "flow.step.failed":
                click.echo(f"  ✗ {event.payload['step']}: {event.payload['error']['message']}", err=True)
            elif event.kind == "execution.waiting":
                names = ", ".join(i["name"] for i in event.payload["interrupts"])
                click.echo(f"  … waiting for {names}", err=True)

    async with anyio.create_task_group() as tg:
        if not quiet:
            tg.start_soon(progress)
        result.append(await body())
        tg.cancel_scope.cancel()
    return result[0]


def _report(snapshot: CloseSnapshot, as_json: bool, *, durable: bool = True) -> None:
    if as_json:
        click.echo(snapshot.model_dump_json(indent=2))
        return
    click.echo(
        f"execution {snapshot.execution_id} ({snapshot.flow}): {snapshot.status}, {snapshot.steps_completed} steps"
    )
    if snapshot.status == "completed":
        click.echo(json.dumps(snapshot.result, indent=2, default=str))
    elif snapshot.error:
        click.echo(f"error: {snapshot.error}")
    if snapshot.usage:
        usage, limits = snapshot.usage, snapshot.usage.get("limits", {})
        shown = ("tokens", "cost", "model_requests", "action_calls", "wall_time")
        parts = [f"{k} {usage.get(k, 0)}" + (f"/{limits[k]}" if k in limits else "") for k in shown if k in usage]
        click.echo("usage: " + ", ".join(parts) + ("" if limits else " (no budget set)"))
    for interrupt in snapshot.pending_interrupts:
        click.echo(
            f"waiting for {interrupt.name!r} (interrupt {interrupt.id}), payload: {json.dumps(interrupt.payload)}"
        )
        if durable:  # from a store that dies with this process, no other command can answer
            click.echo(f"  answer with: keel flow signal {snapshot.execution_id} {interrupt.name} '<json>'")


def _exit_code(snapshot: CloseSnapshot) -> None:
    if snapshot.status in {"failed", "cancelled"}:
        sys.exit(1)


def _json_arg(text: str | None, what: str) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise click.BadParameter(f"{what} must be JSON ({err}); quote strings: '\"text\"'") from None


@click.group("flow")
def flow_group() -> None:
    """Run and manage TriggerFlow executions."""


_json_option = click.option("--json", "as_json", is_flag=True, help="machine-readable output")
_tenant_option = click.option("--tenant", default="default", show_default=True)


@flow_group.command("run")
@click.argument("target")
@click.option("--input", "input_json", metavar="JSON", help="the flow's input, as JSON")
@_json_option
@_tenant_option
@click.pass_context
def run_cmd(ctx: click.Context, target: str, input_json: str | None, as_json: bool, tenant: str) -> None:
    """Run FILE[:flow] (or module:flow) until it ends or waits."""
    value = _json_arg(input_json, "--input")
    flow = import_flow(target)

    stores: list[tuple[str, bool]] = []

    async def body(runtime: Runtime) -> CloseSnapshot:
        runner = get_runner(runtime)  # an unknown runner, or a typo in its options, is an error here, not ignored
        if runner.name != "local":  # it runs where that runner runs it (a Temporal workflow, say)
            stores.append((runner.name, True))
            started = await runner.start(flow, value, tenant=tenant)
            if not as_json:
                click.echo(f"execution {started.id} (runner {runner.name!r})", err=True)
            return await _settled(started, as_json)
        registered, choice = runtime.stack.resolve("store", runtime.host)
        stores.append((choice.name, registered.spec.durable))
        execution = flow.create_execution(runtime, tenant=tenant)
        if not as_json:
            click.echo(f"execution {execution.id}", err=True)
        return await _drive(execution, lambda: execution.run(value), as_json)

    snapshot = _run(ctx, body)
    store, durable = stores[0]
    _report(snapshot, as_json, durable=durable)
    if snapshot.pending_interrupts and not durable:
        click.echo(
            f"warning: this run waits in the {store!r} store, which is not durable: it is lost when this command "
            "exits, so no other process can signal or resume it. Install keel-store-sqlite (the default store), or "
            'set store = "sqlite" (or "postgres", from keel-store-postgres) in keel.toml',
            err=True,
        )
    _exit_code(snapshot)


@flow_group.command("graph")
@click.argument("target")
def graph_cmd(target: str) -> None:
    """Print a flow's definition as a Mermaid flowchart (FILE.py[:flow] or module[:flow])."""
    click.echo(import_flow(target).to_mermaid(), nl=False)


_STATUSES = ("running", "waiting", "completed", "failed", "cancelled")


@flow_group.command("ls")
@click.option("--status", "statuses", multiple=True, type=click.Choice(_STATUSES), help="only these (repeatable)")
@click.option("--flow", "flow_name", help="only executions of this flow")
@click.option("--last", type=click.IntRange(min=1), help="only the N most recent")
@_json_option
@_tenant_option
@click.pass_context
def ls_cmd(
    ctx: click.Context, statuses: tuple[str, ...], flow_name: str | None, last: int | None, as_json: bool, tenant: str
) -> None:
    """List executions in the stack's store (or the runner's engine), oldest first."""

    async def body(runtime: Runtime) -> list[dict[str, Any]]:
        runner = get_runner(runtime)
        listing = getattr(runner, "list_executions", None)
        if runner.name != "local" and listing is not None:  # the runner keeps them (Temporal), not the store
            rows: list[dict[str, Any]] = await listing(tenant)
            return [row for row in rows if not statuses or row.get("status") in statuses]
        store = runtime.store()
        await ensure_index(store, tenant)  # executions indexed by an older version: once
        if not statuses:
            return await list_index(store, tenant)
        # each status is an index of its own, in time order: read only what is asked for
        wanted = None if flow_name is not None else last
        rows = [row for status in statuses for row in await rows_by_status(store, tenant, status, last=wanted)]
        return sorted(rows, key=lambda r: r.get("created", 0))

    rows = [row for row in _run(ctx, body) if flow_name is None or row.get("flow") == flow_name]
    if last is not None:
        rows = rows[-last:]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no executions" + (" match" if statuses or flow_name else ""))
    now = time.time()
    for row in rows:
        age = _age_text(max(0.0, round(now - float(row.get("updated", now)))))
        click.echo(f"{row['id']}  {row.get('flow', '?'):<20} {row.get('status', '?'):<10} {age} ago")


@flow_group.command("show")
@click.argument("execution_id")
@_json_option
@_tenant_option
@click.pass_context
def show_cmd(ctx: click.Context, execution_id: str, as_json: bool, tenant: str) -> None:
    """Show an execution: status, steps, pending interrupts, result."""

    async def body(runtime: Runtime) -> CloseSnapshot:
        execution = await _find(runtime, execution_id, tenant)
        snapshot = execution.snapshot() if isinstance(execution, FlowExecution) else await _outside(execution)
        snapshot.usage = await runtime.budgets.usage(execution_id, tenant)
        return snapshot

    _report(_run(ctx, body), as_json)


@flow_group.command("signal")
@click.argument("execution_id")
@click.argument("name")
@click.argument("payload", required=False)
@click.option("--request-id", help="idempotency key: the same id again is a no-op")
@_json_option
@_tenant_option
@click.pass_context
def signal_cmd(
    ctx: click.Context,
    execution_id: str,
    name: str,
    payload: str | None,
    request_id: str | None,
    as_json: bool,
    tenant: str,
) -> None:
    """Answer a waiting execution (PAYLOAD is JSON), then run it on until it ends or waits."""
    value = _json_arg(payload, "PAYLOAD")

    async def body(runtime: Runtime) -> CloseSnapshot:
        execution = await _find(runtime, execution_id, tenant)
        if not isinstance(execution, FlowExecution):  # another runner runs it: deliver, then follow it
            answered = frozenset(i.id for i in _pending(execution))
            await execution.signal(name, value, request_id=request_id)
            if getattr(execution, "served_here", False):
                return await _settled(execution, as_json, answered)
            if not as_json:
                click.echo("delivered: the runner's workers continue it ('keel flow show' follows)", err=True)
            return await _outside(execution)
        await execution.signal(name, value, request_id=request_id)
        try:
            return await _drive(execution, execution.run, as_json)
        except LeaseError as err:  # a live process owns it: the answer waits in its inbox
            if not as_json:
                click.echo(f"delivered to the process that runs it ({err})", err=True)
            return execution.snapshot()

    snapshot = _run(ctx, body)
    _report(snapshot, as_json)
    _exit_code(snapshot)


@flow_group.command("resume")
@click.argument("execution_id")
@_json_option
@_tenant_option
@click.pass_context
def resume_cmd(ctx: click.Context, execution_id: str, as_json: bool, tenant: str) -> None:
    """Resume an execution from its history (completed steps do not run again)."""

    async def body(runtime: Runtime) -> CloseSnapshot:
        execution = await _load(runtime, execution_id, tenant)
        return await _drive(execution, execution.run, as_json)

    snapshot = _run(ctx, body)
    _report(snapshot, as_json)
    _exit_code(snapshot)


@flow_group.command("cancel")
@click.argument("execution_id")
@click.option("--reason", default="cancelled from the command line")
@_json_option
@_tenant_option
@click.pass_context
def cancel_cmd(ctx: click.Context, execution_id: str, reason: str, as_json: bool, tenant: str) -> None:
    """Cancel an execution that no live process owns."""

    async def body(runtime: Runtime) -> CloseSnapshot:
        execution = await _find(runtime, execution_id, tenant)  # cancelling needs no steps
        await execution.cancel(reason)
        return execution.snapshot() if isinstance(execution, FlowExecution) else await _outside(execution)

    _report(_run(ctx, body), as_json)


@flow_group.command("purge")
@click.option("--older-than", metavar="AGE", help="e.g. 30d, 12h, 3600 (default: the runner's retention)")
@click.option("--dry-run", is_flag=True, help="list what would be deleted, delete nothing")
@_json_option
@_tenant_option
@click.pass_context
def purge_cmd(ctx: click.Context, older_than: str | None, dry_run: bool, as_json: bool, tenant: str) -> None:
    """Delete finished executions (history, inbox, index row, lease) older than AGE."""

    async def body(runtime: Runtime) -> tuple[float, list[dict[str, Any]]]:
        runner = get_runner(runtime)
        if older_than is not None:
            age = parse_age(older_than)
        else:
            configured = getattr(getattr(runner, "options", None), "retention", None)
            if configured is None:
                raise KeelError(
                    "no age given and no retention configured: pass --older-than 30d"
                    + (
                        ', or set [runner] driver = "local", retention = "30d" in keel.toml'
                        if runner.name == "local"
                        else ""
                    )
                )
            age = float(configured)
        if runner.name != "local":  # the runner's engine keeps the executions (Temporal), not the store
            purge = getattr(runner, "purge_executions", None)
            if purge is None:
                raise KeelError(
                    f"runner {runner.name!r} keeps its executions in its own engine and offers no purge, so keel "
                    "flow purge cannot delete them: use the engine's own retention or tools"
                )
            found: list[dict[str, Any]] = await purge(age, tenant, dry_run=dry_run)
            return age, found
        store = runtime.store()
        rows = await expired_executions(store, older_than=age, tenant=tenant)
        if not dry_run:
            for n, row in enumerate(rows, 1):
                await delete_execution(store, tenant, row["id"])
                if not as_json and len(rows) > 20 and n % 100 == 0:
                    click.echo(f"  {n}/{len(rows)} deleted", err=True)
        return age, rows

    age, rows = _run(ctx, body)
    if as_json:
        click.echo(json.dumps({"older_than": age, "dry_run": dry_run, "executions": [r["id"] for r in rows]}))
        return
    verb = "would delete" if dry_run else "deleted"
    click.echo(f"{verb} {len(rows)} finished execution(s) older than {_age_text(age)}")
    if dry_run:
        for row in rows:
            click.echo(f"{row['id']}  {row.get('flow', '?'):<20} {row.get('status', '?')}")


def _age_text(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"
