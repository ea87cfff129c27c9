"""AgentExecution honours the Execution protocol (keel.testing.conformance.ExecutionConformance)."""

from __future__ import annotations

from typing import Any

import anyio
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


class Sleeper:
    """A third-party execution, correct but trusting: its task crashes on a ``seconds`` that is not
    a number, and the runtime's containment must turn that into a protocol-shaped failure."""

    kind = "sleep"

    def __init__(self, tenant: str):
        self.id, self.tenant = keel.new_id("exe"), tenant
        self._status = keel.ExecutionStatus.RUNNING
        self._log: keel.EventLog[keel.RuntimeEvent] = keel.EventLog()
        self._done = anyio.Event()
        self._emit("execution.started")

    def _emit(self, kind: str, **payload: Any) -> None:
        event = keel.RuntimeEvent(
            kind=kind, execution_id=self.id, tenant=self.tenant, seq=len(self._log) + 1, payload=payload
        )
        self._log.append(event)

    @property
    def status(self) -> keel.ExecutionStatus:
        return self._status

    async def run(self, seconds: Any) -> None:
        await anyio.sleep(seconds)  # "forever" raises TypeError: the author never expected it
        self._status = keel.ExecutionStatus.COMPLETED
        self._emit("execution.completed")
        self._done.set()

    def events(self, since: int = 0) -> Any:
        return self._log.follow(since, lambda: self._status.finished)

    async def result(self) -> Any:
        await self._done.wait()
        return "rested"

    async def signal(self, name: str, payload: Any = None, *, request_id: str | None = None) -> None:
        raise keel.KeelError("a sleeper takes no signal")

    async def cancel(self, reason: str = "cancelled") -> None:
        raise NotImplementedError  # never reached by these tests: cancel is covered by the agent


class Sleep:
    name, kind, description = "sleep", "sleep", "sleeps for input['seconds']"

    def input_schema(self) -> dict[str, Any]:
        return {"type": "object"}

    def output_schema(self) -> dict[str, Any]:
        return {}

    async def start(self, input: Any, *, runtime: keel.Runtime, tenant: str = "default") -> keel.Execution:
        execution = Sleeper(tenant)
        runtime.task_group.start_soon(execution.run, input["seconds"])
        return execution


class TestContainedExecution(TestAgentExecution):
    """What ``runtime.start`` hands out (the execution inside the kernel's containment), including
    a third-party execution whose task crashed."""

    @pytest.fixture
    def new_runtime(self) -> Any:
        def build() -> keel.Runtime:
            runtime = keel.Runtime(make_host(), keel.Stack())
            runtime.use_model(ScriptedModel(respond))
            runtime.add(agent)
            runtime.add(Sleep())
            return runtime

        return build

    @pytest.fixture
    def start_completing(self) -> Any:
        async def start(runtime: keel.Runtime) -> keel.Execution:
            return await runtime.start("brief", "sea otters", tenant="acme")

        return start

    @pytest.fixture
    def start_failing(self) -> Any:
        async def start(runtime: keel.Runtime) -> keel.Execution:
            return await runtime.start("sleep", {"seconds": "forever"}, tenant="acme")

        return start
