"""The entry-point module (group ``keel``): cheap to import; everything heavy loads on first use."""

from __future__ import annotations

from typing import Any

import keel


@keel.hookimpl
def keel_commands(cli: Any) -> None:
    # by reference: `keel flow` imports the engine, every other command starts without it
    cli.add_lazy_command("flow", "keel_triggerflow.cli:flow_group", help="Run and manage TriggerFlow executions.")


@keel.hookimpl
def keel_addhooks(pluginmanager: Any) -> None:
    from keel_triggerflow import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


@keel.hookimpl
def keel_doctor_checks() -> list[keel.DoctorCheck]:
    from keel_triggerflow.doctor import doctor_checks  # imported when doctor runs, not at discovery

    return doctor_checks()


@keel.hookimpl
def keel_triggerflow_runners() -> Any:
    from keel_triggerflow.runners import RunnerSpec, _local

    yield RunnerSpec(name="local", description="in-process, on anyio (the embedded default)", factory=_local)


@keel.hookimpl
def keel_stack_slots() -> Any:
    yield keel.SlotSpec(name="runner", description="what runs flows (default: local, in-process)", check=_check_runner)


def _check_runner(choice: Any, host: Any) -> str:
    from keel_triggerflow.runners import check_runner  # imported when `keel stack` checks, not at discovery

    return check_runner(choice, host)


@keel.hookimpl
async def keel_find_execution(runtime: Any, execution_id: str, tenant: str) -> Any:
    from keel_triggerflow._adopt import find_execution

    return await find_execution(runtime, execution_id, tenant)


@keel.hookimpl
async def keel_adopt_executions(runtime: Any) -> None:
    from keel_triggerflow._adopt import adopt_executions

    await adopt_executions(runtime)
