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
