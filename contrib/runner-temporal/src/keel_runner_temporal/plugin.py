"""The entry point ``runner-temporal`` (group ``keel``): registers the ``temporal`` runner with
TriggerFlow's ``keel_triggerflow_runners`` hook. Cheap to import: temporalio loads when a runner is
built.

``optionalhook=True``: the hook is TriggerFlow's own; without keel-triggerflow installed this plugin
loads and registers nothing. The spec is duck-typed (``name``, ``description``, ``factory``), as
TriggerFlow reads it: a plugin never imports another plugin."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import keel


def create_runner(runtime: Any, options: dict[str, Any]) -> Any:
    from keel_runner_temporal.runner import TemporalRunner

    return TemporalRunner(runtime, options)


@keel.hookimpl(optionalhook=True)
def keel_triggerflow_runners() -> Iterator[Any]:
    yield SimpleNamespace(
        name="temporal",
        description="each execution a Temporal workflow, each chunk an activity (keel-runner-temporal)",
        factory=create_runner,
    )
