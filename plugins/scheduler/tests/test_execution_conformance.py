"""A @task function's execution honours the Execution protocol
(keel.testing.conformance.ExecutionConformance)."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

import keel
from keel.testing import make_host
from keel.testing.conformance import ExecutionConformance
from keel_scheduler import task


@task
async def double(input: Any) -> Any:
    await anyio.sleep(0)
    return {"doubled": input * 2}


@task
async def broken(input: Any) -> Any:
    raise ValueError("the task failed on purpose")


class TestFunctionExecution(ExecutionConformance):
    @pytest.fixture
    def new_runtime(self) -> Any:
        def build() -> keel.Runtime:
            runtime = keel.Runtime(make_host(), keel.Stack())
            runtime.add(double)
            runtime.add(broken)
            return runtime

        return build

    @pytest.fixture
    def start_completing(self) -> Any:
        async def start(runtime: keel.Runtime) -> keel.Execution:
            return await double.start(21, runtime=runtime, tenant="acme")

        return start

    @pytest.fixture
    def start_failing(self) -> Any:
        async def start(runtime: keel.Runtime) -> keel.Execution:
            return await broken.start(1, runtime=runtime, tenant="acme")

        return start

    @pytest.fixture
    def start_waiting(self) -> Any:
        pytest.skip("a function task waits for no signal")


@task
async def slow(input: Any) -> Any:
    await anyio.sleep(30)


async def test_what_a_task_execution_says_beyond_the_protocol() -> None:
    # the parts keel.BaseExecution leaves to it: the started event names the runnable, a cancel's
    # error names the task, any signal is taken while it runs and refused after, no bus events
    async with keel.Runtime(make_host(), keel.Stack()) as runtime:
        subscription = runtime.bus.subscribe()
        execution = await slow.start(None, runtime=runtime, tenant="acme")
        await execution.signal("anything", {"n": 1})  # a function waits for nothing: taken, kept
        with anyio.fail_after(10):
            await execution.cancel("no longer needed")
            with pytest.raises(keel.ExecutionCancelled, match=r"of task 'slow' was cancelled: no longer needed$"):
                await execution.result()
        with pytest.raises(keel.KeelError, match="is cancelled: it takes no more signals"):
            await execution.signal("anything", {"n": 2})
        events = [e async for e in execution.events()]
        assert [e.kind for e in events] == ["execution.started", "execution.cancelled"]
        assert events[0].payload == {"runnable": "slow"}
        assert events[-1].payload["reason"] == "no longer needed"
        assert events[-1].payload["code"] == "execution.cancelled"
        assert [e for e in subscription.drain() if e.execution_id == execution.id] == []
        subscription.close()
