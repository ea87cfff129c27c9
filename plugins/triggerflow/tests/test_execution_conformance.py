"""FlowExecution honours the Execution protocol (keel.testing.conformance.ExecutionConformance),
in memory and over a durable store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import SharedStore

from keel import MemoryStore, Runtime, load_stack
from keel.testing import make_host
from keel.testing.conformance import ExecutionConformance
from keel_triggerflow import TriggerFlow, plugin


def quick() -> TriggerFlow:
    flow = TriggerFlow("quick")
    flow.to(lambda ctx: {"doubled": ctx.value * 2}).to(lambda ctx: ctx.value)
    return flow


def approval() -> TriggerFlow:
    flow = TriggerFlow("approval")
    flow.to(lambda ctx: {"draft": ctx.value}).pause_for("approve").to(lambda ctx: ctx.value)
    return flow


def broken() -> TriggerFlow:
    def fail(ctx: Any) -> Any:
        raise ValueError("the step failed on purpose")

    flow = TriggerFlow("broken")
    flow.to(fail)
    return flow


class InMemory(ExecutionConformance):
    def runtime(self, tmp_path: Path) -> Runtime:
        return Runtime(make_host(plugin))

    @pytest.fixture
    def new_runtime(self, tmp_path: Path) -> Any:
        def build() -> Runtime:
            runtime = self.runtime(tmp_path)
            for flow in (quick(), approval(), broken()):
                runtime.add(flow)
            return runtime

        return build

    @pytest.fixture
    def start_completing(self) -> Any:
        async def start(runtime: Runtime) -> Any:
            return await runtime.runnables.get("quick").start(21, runtime=runtime, tenant="acme")

        return start

    @pytest.fixture
    def start_waiting(self) -> Any:
        async def start(runtime: Runtime) -> Any:
            return await runtime.runnables.get("approval").start("t", runtime=runtime, tenant="acme")

        return start

    @pytest.fixture
    def start_failing(self) -> Any:
        async def start(runtime: Runtime) -> Any:
            return await runtime.runnables.get("broken").start(1, runtime=runtime, tenant="acme")

        return start


class TestFlowExecutionInMemory(InMemory):
    pass


class TestFlowExecutionDurable(InMemory):
    store = None

    def runtime(self, tmp_path: Path) -> Runtime:
        if self.store is None:
            self.store = MemoryStore()
        stack_file = tmp_path / "keel.toml"
        stack_file.write_text('store = "shared"\n')
        return Runtime(make_host(plugin, SharedStore(self.store)), load_stack(stack_file))
