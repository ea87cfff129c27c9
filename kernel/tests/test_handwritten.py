"""keel.BaseExecution: a hand-written execution keeps the Execution protocol with only a body()."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

import keel
from keel.testing import make_host
from keel.testing.conformance import ExecutionConformance


class Approval(keel.BaseExecution):
    """Waits for 'approve' when asked to, fails when asked to, else completes at once."""

    kind = "approval"

    def __init__(self, runtime: keel.Runtime, mode: str):
        super().__init__(runtime, "acme")
        self.mode = mode

    async def body(self) -> Any:
        self.emit("approval.progress", {"message": "checking", "percent": 50})
        if self.mode == "fail":
            raise ValueError("the ledger is closed")
        if self.mode == "wait":
            answer = await self.wait_for("approve", {"message": "Refund 40 EUR?"}, id="i1")
            return {"answer": answer}
        return {"answer": None}


def starter(mode: str) -> Any:
    async def start(runtime: keel.Runtime) -> keel.Execution:
        return Approval(runtime, mode).launch()

    return start


class TestBaseExecution(ExecutionConformance):
    @pytest.fixture
    def new_runtime(self) -> Any:
        return lambda: keel.Runtime(make_host(), keel.Stack())

    @pytest.fixture
    def start_completing(self) -> Any:
        return starter("complete")

    @pytest.fixture
    def start_waiting(self) -> Any:
        return starter("wait")

    @pytest.fixture
    def start_failing(self) -> Any:
        return starter("fail")


pytestmark = pytest.mark.anyio


async def test_a_wait_an_answer_and_the_events_in_order() -> None:
    async with keel.Runtime(make_host(), keel.Stack()) as runtime:
        execution = Approval(runtime, "wait").launch()
        assert runtime.executions.get(execution.id, "acme") is execution  # launch() registers it
        with anyio.fail_after(10):
            async for event in execution.events():
                if event.kind == "execution.waiting":
                    break
        assert execution.status is keel.ExecutionStatus.WAITING
        [interrupt] = event.payload["interrupts"]
        assert interrupt == {"id": "i1", "name": "approve", "payload": {"message": "Refund 40 EUR?"}}
        with pytest.raises(keel.KeelError, match="is not waiting for 'reject': it waits for 'approve'"):
            await execution.signal("reject", {})
        await execution.signal("approve", {"ok": True}, request_id="r1")
        await execution.signal("approve", {"ok": True}, request_id="r1")  # the same answer again: once
        with anyio.fail_after(10):
            assert await execution.result() == {"answer": {"ok": True}}
        with pytest.raises(keel.ConflictError, match="send a new request id"):
            await execution.signal("approve", {"ok": False}, request_id="r1")
        kinds = [e.kind async for e in execution.events()]
        assert kinds == [
            "execution.started",
            "approval.progress",
            "execution.waiting",
            "execution.completed",
        ]
        assert [e.seq async for e in execution.events()] == [1, 2, 3, 4]


async def test_a_failing_body_is_the_result_and_a_missing_body_says_what_to_write() -> None:
    class Empty(keel.BaseExecution):
        pass

    async with keel.Runtime(make_host(), keel.Stack()) as runtime:
        failing = Approval(runtime, "fail").launch()
        empty = Empty(runtime).launch()
        with anyio.fail_after(10):
            with pytest.raises(ValueError, match="the ledger is closed"):
                await failing.result()
            with pytest.raises(NotImplementedError, match="Empty must define async def body"):
                await empty.result()
        last = [e async for e in failing.events()][-1]
        assert last.kind == "execution.failed" and last.payload["reason"] == "ValueError: the ledger is closed"
        assert last.payload["code"] == "internal"  # keel.error_code: not a KeelError, so a bug


async def test_cancel_ends_a_waiting_execution_with_its_reason() -> None:
    async with keel.Runtime(make_host(), keel.Stack()) as runtime:
        execution = Approval(runtime, "wait").launch()
        with anyio.fail_after(10):
            async for event in execution.events():
                if event.kind == "execution.waiting":
                    break
            await execution.cancel("the customer withdrew")
            with pytest.raises(keel.ExecutionCancelled, match="the customer withdrew"):
                await execution.result()
        assert execution.status is keel.ExecutionStatus.CANCELLED
        await execution.cancel("again")  # a finished execution: nothing to do


async def test_a_subclass_says_its_started_payload_its_cancel_error_and_whether_it_publishes() -> None:
    class Quiet(Approval):
        publishes = False

        def started_payload(self) -> dict[str, Any]:
            return {"runnable": "quiet"}

        def cancelled_error(self, reason: str) -> BaseException:
            return keel.ExecutionCancelled(f"quiet was cancelled: {reason}")

    async with keel.Runtime(make_host(), keel.Stack()) as runtime:
        subscription = runtime.bus.subscribe()
        loud, quiet = Approval(runtime, "wait").launch(), Quiet(runtime, "wait").launch()
        with anyio.fail_after(10):
            for execution in (loud, quiet):
                async for event in execution.events():
                    if event.kind == "execution.waiting":
                        break
                await execution.cancel("the customer withdrew")
            with pytest.raises(keel.ExecutionCancelled, match="^quiet was cancelled: the customer withdrew$"):
                await quiet.result()
        seen = subscription.drain()  # publish() hands events to a subscription at once
        subscription.close()
        events = [e async for e in quiet.events()]
        assert events[0].payload == {"runnable": "quiet"}
        assert events[-1].payload == {
            "reason": "the customer withdrew",
            "error": "ExecutionCancelled: quiet was cancelled: the customer withdrew",
            "code": "execution.cancelled",
        }
        assert {e.execution_id for e in seen} == {loud.id}  # the quiet one's events stayed with it
