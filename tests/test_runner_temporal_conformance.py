"""TriggerFlow's conformance suites on the temporal runner: flows built in Python (the runner
contract), started through a stack whose runner line says ``temporal``, honour the Execution
protocol and are found by id from a new runtime, as plugins/triggerflow/tests runs the same suites
on the local runner. The completing flow goes through events, a collect, a reducer function and a
pydantic output, so the constructs issue 21 added run under the protocol's checks too."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydantic import BaseModel

from keel import Runtime, load_stack
from keel.testing import make_host
from keel.testing.conformance import AdoptionConformance, ExecutionConformance
from keel_runner_temporal import DevServer
from keel_runner_temporal import plugin as temporal_plugin
from keel_triggerflow import TriggerFlow
from keel_triggerflow import plugin as triggerflow_plugin


class Doubled(BaseModel):
    doubled: int


def quick() -> TriggerFlow:
    async def double(ctx: Any) -> Doubled:
        ctx.state["seen"] = ctx.value
        return Doubled(doubled=ctx.value * 2)

    flow = TriggerFlow("quick", reducers={"seen": lambda old, new: (old or 0) + new})
    flow.to(double).emit("doubled")
    flow.when("doubled").to(lambda ctx: ctx.value.doubled).collect("parts", "a")
    flow.when("doubled").to(lambda ctx: ctx.value.doubled + 1).collect("parts", "b").to(lambda ctx: ctx.value).end()
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


@pytest.fixture(scope="module")
def temporal_address() -> Iterator[str]:
    with DevServer(start_timeout=90) as address:
        yield address


def on_temporal(folder: Path, address: str) -> Any:
    """A new runtime on a stack whose runner is Temporal, with the three flows as its runnables."""
    (folder / "keel.toml").write_text(
        f'store = "memory"\n[runner]\ndriver = "temporal"\naddress = "{address}"\n'
        f'task_queue = "conformance-{uuid.uuid4().hex[:8]}"\n'
    )

    def new() -> Runtime:
        runtime = Runtime(make_host(triggerflow_plugin, temporal_plugin), load_stack(folder / "keel.toml"))
        for flow in (quick(), approval(), broken()):
            runtime.add(flow)
        return runtime

    return new


class TestPythonFlowsOnTemporal(ExecutionConformance):
    @pytest.fixture
    def new_runtime(self, temporal_address: str, tmp_path: Path) -> Any:
        return on_temporal(tmp_path, temporal_address)

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


class TestPythonFlowsOnTemporalAreFound(AdoptionConformance):
    @pytest.fixture
    def new_runtime(self, temporal_address: str, tmp_path: Path) -> Any:
        return on_temporal(tmp_path, temporal_address)

    @pytest.fixture
    def start_waiting(self) -> Any:
        async def start(runtime: Runtime) -> Any:
            return await runtime.runnables.get("approval").start("t", runtime=runtime)

        return start


async def test_the_completing_flow_gives_the_same_result_on_both_runners(temporal_address: str, tmp_path: Path) -> None:
    """The conformance flows' result is the local runner's (so the suites check the same thing)."""
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "keel.toml").write_text('store = "memory"\n')

    def local() -> Runtime:
        runtime = Runtime(make_host(triggerflow_plugin, temporal_plugin), load_stack(tmp_path / "local" / "keel.toml"))
        runtime.add(quick())
        return runtime

    results = []
    for new in (on_temporal(tmp_path, temporal_address), local):
        async with new() as runtime:
            execution = await runtime.runnables.get("quick").start(21, runtime=runtime)
            with anyio.fail_after(60):
                results.append((execution.kind, await execution.result()))
    assert results[0][1] == results[1][1] == {"a": 42, "b": 43}
    assert results[0][0] == results[1][0] == "flow"
