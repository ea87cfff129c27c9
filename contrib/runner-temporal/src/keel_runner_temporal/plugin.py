"""The entry point ``runner-temporal`` (group ``keel``): registers the ``temporal`` runner with
TriggerFlow's ``keel_triggerflow_runners`` hook. Cheap to import: temporalio loads when a runner is
built.

``optionalhook=True``: the hook is TriggerFlow's own; without keel-triggerflow installed this plugin
loads and registers nothing. The spec is duck-typed (``name``, ``description``, ``factory``), as
TriggerFlow reads it: a plugin never imports another plugin."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import keel

#: one runner per runtime: its client, its worker and the executions it follows are the runtime's
_runners: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def create_runner(runtime: Any, options: dict[str, Any]) -> Any:
    """The runtime's temporal runner, built on first use (``runtime.start(flow)``, ``keel flow``,
    ``keel worker`` and the gateway all reach the same one)."""
    from keel_runner_temporal.runner import TemporalRunner

    runner = _runners.get(runtime)
    if runner is None or runner.options_given != dict(options):
        runner = _runners[runtime] = TemporalRunner(runtime, options)
    return runner


@keel.hookimpl(optionalhook=True)
def keel_triggerflow_runners() -> Iterator[Any]:
    yield SimpleNamespace(
        name="temporal",
        description="each execution a Temporal workflow, each chunk an activity (keel-runner-temporal)",
        factory=create_runner,
    )


@keel.hookimpl
async def keel_find_execution(runtime: Any, execution_id: str, tenant: str) -> Any:
    """With ``runner = "temporal"``: the execution whose workflow id is ``execution_id`` (its tenant
    from the workflow's memo), so the gateway and ``keel flow show|signal|cancel`` reach it after a
    restart. Other stacks never connect to Temporal here."""
    choice = runtime.stack.choice("runner")
    if choice.name != "temporal":
        return None
    return await create_runner(runtime, dict(choice.options)).find(execution_id, tenant)


@keel.hookimpl
async def keel_adopt_executions(runtime: Any) -> None:
    """With ``runner = "temporal"``: serve the stack's flows (start this process's worker), so
    Temporal hands their executions to it; there is nothing else to adopt (Temporal keeps them)."""
    choice = runtime.stack.choice("runner")
    if choice.name == "temporal":
        runner = create_runner(runtime, dict(choice.options))
        from keel_runner_temporal.activities import is_flow

        await runner.serve([r for r in runtime.runnables if is_flow(r)])


@keel.hookimpl(optionalhook=True)
def keel_scheduler_schedules(runtime: Any) -> Any:
    """keel-scheduler's own hook: with ``runner = "temporal"``, the stack's schedules are Temporal
    Schedules (``keel schedule ...`` creates and reads them; Temporal fires them). Other stacks keep
    keel-scheduler's own (``None``). Connects to nothing until a command asks."""
    choice = runtime.stack.choice("runner")
    if choice.name != "temporal":
        return None
    from keel_runner_temporal.schedules import TemporalSchedules

    return TemporalSchedules(create_runner(runtime, dict(choice.options)))


@keel.hookimpl
def keel_commands(cli: Any) -> None:
    # a kind of `keel worker`, beside keel-scheduler's job worker: `keel worker --runner temporal`
    cli.add_lazy_command(
        "worker",
        "keel_runner_temporal.cli:worker",
        help="Run a Temporal worker for the stack's flows.",
        kind="temporal",
    )
