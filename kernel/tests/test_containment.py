"""One bad execution never takes the runtime down: a third-party runnable whose task raises
fails only its own execution, with the cause, and the runtime keeps starting others."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

import keel
from keel.testing import make_host


class NapExecution:
    """A third-party execution that naps for ``input["seconds"]``: it trusts its input."""

    kind = "nap"

    def __init__(self, seconds: Any, tenant: str):
        self.id = keel.new_id("nap")
        self.tenant = tenant
        self.seconds = seconds
        self._status = keel.ExecutionStatus.RUNNING
        self.log: keel.EventLog[keel.RuntimeEvent] = keel.EventLog()
        self.done = anyio.Event()
        self._emit("execution.started")

    def _emit(self, kind: str, **payload: Any) -> None:
        self.log.append(
            keel.RuntimeEvent(
                kind=kind, execution_id=self.id, tenant=self.tenant, seq=len(self.log) + 1, payload=payload
            )
        )

    @property
    def status(self) -> keel.ExecutionStatus:
        return self._status

    async def run(self) -> None:
        await anyio.sleep(self.seconds)  # sleep(nan) raises ValueError: the author never expected it
        self._status = keel.ExecutionStatus.COMPLETED
        self._emit("execution.completed")
        self.done.set()

    def events(self, since: int = 0) -> AsyncIterator[keel.RuntimeEvent]:
        return self.log.follow(since, lambda: self._status.finished)

    async def result(self) -> Any:
        await self.done.wait()
        return "rested"

    async def signal(self, name: str, payload: Any = None, *, request_id: str | None = None) -> None:
        raise keel.ConflictError("a nap takes no signal")

    async def cancel(self, reason: str = "cancelled") -> None:
        self._status = keel.ExecutionStatus.CANCELLED
        self.log.notify()


class Nap:
    name = "nap"
    kind = "nap"
    description = "sleeps for input['seconds']"

    def input_schema(self) -> dict[str, Any]:
        return {"type": "object"}

    def output_schema(self) -> dict[str, Any]:
        return {"type": "string"}

    async def start(self, input: Any, *, runtime: keel.Runtime, tenant: str = "default") -> keel.Execution:
        execution = NapExecution(input["seconds"], tenant)
        runtime.task_group.start_soon(execution.run)
        return execution


async def test_a_raising_runnable_fails_only_its_execution() -> None:
    runtime = keel.Runtime(make_host())
    runtime.add(Nap())
    seen: list[keel.RuntimeEvent] = []
    async with runtime, runtime.bus.subscribe() as events:
        early = await runtime.start("nap", {"seconds": 0.3})
        bad = await runtime.start("nap", {"seconds": float("nan")}, tenant="acme")
        with anyio.fail_after(5):
            kinds = [event.kind async for event in bad.events()]
        assert kinds == ["execution.started", "execution.failed"]
        assert bad.status is keel.ExecutionStatus.FAILED
        with pytest.raises(keel.ExecutionCrashed, match="ValueError: delay must be a non-negative number"):
            await bad.result()
        assert runtime.executions.get(bad.id, "acme").status is keel.ExecutionStatus.FAILED
        assert runtime.health() == (True, "ok")
        # the runtime still starts work, and what ran before finishes
        later = await runtime.start("nap", {"seconds": 0})
        with anyio.fail_after(5):
            assert await later.result() == "rested"
            assert await early.result() == "rested"
        assert early.status is keel.ExecutionStatus.COMPLETED
        with anyio.fail_after(5):
            async for event in events:
                seen.append(event)
                if event.kind == "runtime.task_failed":
                    break
    [failed] = [e for e in seen if e.kind == "runtime.task_failed"]
    assert failed.execution_id == bad.id and failed.payload["error"] == "ValueError"
    assert runtime.failed_tasks == 1


async def test_a_task_outside_any_execution_is_contained_too() -> None:
    async def boom() -> None:
        raise RuntimeError("an observer's helper broke")

    async with keel.Runtime(make_host()) as runtime:
        runtime.task_group.start_soon(boom)
        with anyio.fail_after(5):
            while runtime.failed_tasks == 0:
                await anyio.sleep(0.01)
        assert runtime.health() == (True, "ok")
        runtime.task_group.start_soon(anyio.sleep, 0)


async def test_health_reports_a_runtime_that_is_not_running() -> None:
    runtime = keel.Runtime(make_host())
    assert runtime.health() == (False, "the runtime is not started")
    async with runtime:
        runtime.task_group.cancel_scope.cancel()
        ok, why = runtime.health()
        assert not ok and "stopped" in why
        with pytest.raises(keel.KeelError, match="the runtime has stopped"):
            runtime.task_group  # noqa: B018


async def test_a_task_started_with_start_is_contained_once_it_reported_started() -> None:
    async def early(*, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        raise RuntimeError("could not bind")

    async def late(*, task_status: anyio.abc.TaskStatus[str] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started("listening")
        await anyio.sleep(0)
        raise RuntimeError("lost the socket")

    async with keel.Runtime(make_host()) as runtime:
        with pytest.raises(RuntimeError, match="could not bind"):
            await runtime.task_group.start(early)  # before started: the starter hears of it
        assert await runtime.task_group.start(late) == "listening"
        with anyio.fail_after(5):
            while runtime.failed_tasks == 0:
                await anyio.sleep(0.01)
        assert runtime.health() == (True, "ok")
