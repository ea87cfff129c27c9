"""AgentExecution honours the Execution protocol (keel.testing.conformance.ExecutionConformance)."""

from __future__ import annotations

from typing import Any

import pytest

import keel
from keel.testing import Reply, ScriptedModel, make_host
from keel.testing.conformance import ExecutionConformance


def respond(request: keel.ModelRequest) -> Reply:
    """A valid answer, a few characters at a time; never valid for a task that says 'bad'."""
    task = request.messages[-1].content
    return Reply('{"title": 5}' if "bad" in task else '{"title": "otters"}', chunks=4)


agent = keel.Agent("brief", "Write a title.", output={"title": (str, "the title")}, max_retries=0)


class TestAgentExecution(ExecutionConformance):
    @pytest.fixture
    def new_runtime(self) -> Any:
        def build() -> keel.Runtime:
            runtime = keel.Runtime(make_host(), keel.Stack())
            runtime.use_model(ScriptedModel(respond))
            return runtime

        return build

    @pytest.fixture
    def start_completing(self) -> Any:
        async def start(runtime: keel.Runtime) -> keel.Execution:
            return await agent.start("sea otters", runtime=runtime, tenant="acme")

        return start

    @pytest.fixture
    def start_failing(self) -> Any:
        async def start(runtime: keel.Runtime) -> keel.Execution:
            return await agent.start("a bad one", runtime=runtime, tenant="acme")

        return start

    @pytest.fixture
    def start_waiting(self) -> Any:
        pytest.skip("an agent execution takes no signals: approvals reach agents through the actions support")
