"""The hand-written Executions of the gateway's example and tests honour the Execution protocol
(keel.testing.conformance.ExecutionConformance), as AgentExecution and FlowExecution do."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from test_gateway_support import WaitingTask

import keel
from keel.testing import Reply, ScriptedModel, make_host
from keel.testing.conformance import ExecutionConformance

ROOT = Path(__file__).resolve().parents[1]


def load_example() -> Any:
    spec = importlib.util.spec_from_file_location("gateway_app_conformance", ROOT / "examples" / "gateway_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gateway_app = load_example()


def respond(request: keel.ModelRequest) -> Reply:
    """A valid brief about any topic; an invalid one, every time, for a topic that says 'bad'."""
    topic = request.messages[1].content.strip()  # the user's, also on a retry
    if "bad" in topic:
        return Reply('{"title": 5}', chunks=4)
    answer = {"title": topic, "summary": "Short. Sweet.", "points": ["one", "two", "three"]}
    return Reply(json.dumps(answer), chunks=8)


def answered_soon(start_waiting: Any, answer: Any) -> Any:
    """An execution that completes on its own: a waiting one that a helper task answers."""

    async def start(runtime: keel.Runtime) -> keel.Execution:
        execution = await start_waiting(runtime)

        async def answer_it() -> None:
            with anyio.fail_after(20):
                async for event in execution.events():
                    if event.kind == "execution.waiting":
                        await execution.signal("approve", answer, request_id="answered-soon")
                        return

        runtime.task_group.start_soon(answer_it)
        return execution

    return start


class TestGatewayExampleReview(ExecutionConformance):
    """examples/gateway_app.py's ReviewExecution: an agent drafts, then it waits for approval."""

    @pytest.fixture
    def new_runtime(self) -> Any:
        def build() -> keel.Runtime:
            runtime = keel.Runtime(make_host(), keel.Stack())
            runtime.use_model(ScriptedModel(respond))
            runtime.add(gateway_app.brief)
            runtime.add(gateway_app.Review())
            return runtime

        return build

    @pytest.fixture
    def start_waiting(self) -> Any:
        async def start(runtime: keel.Runtime) -> keel.Execution:
            review = runtime.runnables.get("review")
            return await review.start({"topic": "sea otters"}, runtime=runtime, tenant="acme")

        return start

    @pytest.fixture
    def start_completing(self, start_waiting: Any) -> Any:
        return answered_soon(start_waiting, self.answer)

    @pytest.fixture
    def start_failing(self) -> Any:
        async def start(runtime: keel.Runtime) -> keel.Execution:
            review = runtime.runnables.get("review")
            return await review.start({"topic": "a bad topic"}, runtime=runtime, tenant="acme")

        return start


class TestGatewaySupportWaiting(ExecutionConformance):
    """tests/test_gateway_support.py's WaitingExecution, behind most gateway tests."""

    @pytest.fixture
    def new_runtime(self) -> Any:
        def build() -> keel.Runtime:
            runtime = keel.Runtime(make_host(), keel.Stack())
            runtime.add(WaitingTask())
            return runtime

        return build

    @pytest.fixture
    def start_waiting(self) -> Any:
        async def start(runtime: keel.Runtime) -> keel.Execution:
            task = runtime.runnables.get("approval")
            return await task.start({"topic": "otters"}, runtime=runtime, tenant="acme")

        return start

    @pytest.fixture
    def start_completing(self, start_waiting: Any) -> Any:
        return answered_soon(start_waiting, self.answer)

    @pytest.fixture
    def start_failing(self) -> Any:
        pytest.skip("WaitingExecution has no way to fail: it only waits, completes or is cancelled")
