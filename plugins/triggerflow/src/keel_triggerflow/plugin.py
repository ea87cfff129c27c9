"""The entry-point module (group ``keel``): cheap to import; everything heavy loads on first use."""

from __future__ import annotations

from typing import Any

import keel


@keel.hookimpl
def keel_commands(cli: Any) -> None:
    from keel_triggerflow.cli import flow_group

    cli.add_command(flow_group)


@keel.hookimpl
def keel_addhooks(pluginmanager: Any) -> None:
    from keel_triggerflow import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


@keel.hookimpl
def keel_triggerflow_runners() -> Any:
    from keel_triggerflow.runners import RunnerSpec, _local

    yield RunnerSpec(name="local", description="in-process, on anyio (the embedded default)", factory=_local)
