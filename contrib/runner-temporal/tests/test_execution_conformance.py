"""A Temporal execution honours the Execution protocol (keel.testing.conformance.ExecutionConformance)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

import keel
from keel.testing import make_host
from keel.testing.conformance import ExecutionConformance
from keel_runner_temporal import TemporalRunner

from .test_runner import data_flow


def double(ctx: Any) -> Any:
    return {"doubled": ctx.value * 2}


def broken(ctx: Any) -> Any:
    raise ValueError("the chunk failed on purpose")


def decided(ctx: Any) -> Any:
    return {"decision": ctx.value}


class TestTemporalExecution(ExecutionConformance):
    @pytest.fixture
    def new_runtime(self, temporal_address: str) -> Any:
        self.address = temporal_address
        return lambda: keel.Runtime(make_host(), keel.Stack())

    def _runner(self, runtime: keel.Runtime) -> TemporalRunner:
        return TemporalRunner(runtime, {"address": self.address, "task_queue": f"c-{uuid.uuid4().hex[:8]}"})

    @pytest.fixture
    def start_completing(self) -> Any:
        async def start(runtime: keel.Runtime) -> keel.Execution:
            return await self._runner(runtime).start(data_flow("double", [{"to": "double"}], double=double), 21)

        return start

    @pytest.fixture
    def start_failing(self) -> Any:
        async def start(runtime: keel.Runtime) -> keel.Execution:
            return await self._runner(runtime).start(data_flow("broken", [{"to": "broken"}], broken=broken), 1)

        return start

    @pytest.fixture
    def start_waiting(self) -> Any:
        async def start(runtime: keel.Runtime) -> keel.Execution:
            flow = data_flow("waits", [{"pause_for": self.signal_name, "payload": "approve?"}, {"to": "decided"}],
                             decided=decided)  # fmt: skip
            return await self._runner(runtime).start(flow)

        return start
