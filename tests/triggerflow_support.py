"""Runtimes as 'processes' over one store, for the TriggerFlow tests that need a real SQLite store
(keel-store-sqlite), which keel-triggerflow's own tests cannot import: they run in a venv holding
only keel-triggerflow and the kernel (tools/test_packages.py), where such tests were skipped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keel
from keel import Runtime, load_stack
from keel.testing import make_host
from keel_triggerflow import TriggerFlow, plugin


class SharedStore:
    """A plugin registering one store instance: several runtimes over it act as several processes."""

    def __init__(self, store: Any):
        self.store = store

    @keel.hookimpl
    def keel_stores(self) -> Any:
        yield keel.StoreSpec(name="shared", durable=True, factory=lambda options: self.store)


def process(store: Any, tmp_path: Path, *flows: TriggerFlow, **kwargs: Any) -> Runtime:
    """A 'process': a fresh runtime over ``store`` with the TriggerFlow plugin and these runnables."""
    stack_file = tmp_path / "keel.toml"
    stack_file.write_text('store = "shared"\n')
    runtime = Runtime(make_host(plugin, SharedStore(store)), load_stack(stack_file), **kwargs)
    for flow in flows:
        runtime.add(flow)
    return runtime


def approval() -> TriggerFlow:
    flow = TriggerFlow("approval")
    flow.to(lambda ctx: {"draft": ctx.value}).pause_for("approve").to(lambda ctx: ctx.value)
    return flow
