"""Conformance of :class:`keel.Execution` implementations and of the adoption hook."""

from __future__ import annotations

import functools
import itertools
from typing import Any

import anyio
import pytest

from keel.errors import CODE_PATTERN, ConflictError, KeelError, NotFoundError
from keel.events import RuntimeEvent
from keel.execution import Execution, ExecutionStatus
from keel.types import Interrupt


class AdoptionConformance:
    """The ``keel_find_execution`` contract, for a plugin that owns a kind of durable execution.

    Fixtures a subclass provides:

    - ``new_runtime``: a callable returning a NEW, unstarted :class:`keel.Runtime` (with the
      plugin registered) over the SAME durable store each time: as far as the plugin can tell,
      another process after a restart;
    - ``start_waiting``: ``async (runtime) -> Execution``, an execution started in ``runtime``
      and left waiting for the signal ``"approve"``; answered, it completes with the signal's
      payload as its result.
    """

    async def _waiting_id(self, new_runtime: Any, start_waiting: Any, tenant: str = "default") -> str:
        async with new_runtime() as runtime:
            execution = await start_waiting(runtime)
            assert execution.tenant == tenant
            with anyio.fail_after(10):
                while execution.status is not ExecutionStatus.WAITING:
                    await anyio.sleep(0.01)
            return str(execution.id)

    async def test_a_waiting_execution_is_found_after_a_restart(self, new_runtime: Any, start_waiting: Any) -> None:
        execution_id = await self._waiting_id(new_runtime, start_waiting)
        async with new_runtime() as runtime:
            found = await runtime.find_execution(execution_id, "default")
            assert isinstance(found, Execution)
            assert (found.id, found.tenant, found.status) == (execution_id, "default", ExecutionStatus.WAITING)
            assert await runtime.find_execution(execution_id, "default") is found, "one object per execution"

    async def test_another_tenant_or_an_unknown_id_is_not_found(self, new_runtime: Any, start_waiting: Any) -> None:
        execution_id = await self._waiting_id(new_runtime, start_waiting)
        async with new_runtime() as runtime:
            with pytest.raises(NotFoundError):
                await runtime.find_execution(execution_id, "another-tenant")
            with pytest.raises(NotFoundError):
                await runtime.find_execution(execution_id + "-nope", "default")

    async def test_a_signal_continues_the_adopted_execution(self, new_runtime: Any, start_waiting: Any) -> None:
        execution_id = await self._waiting_id(new_runtime, start_waiting)
        async with new_runtime() as runtime:
            found = await runtime.find_execution(execution_id, "default")
            await found.signal("approve", {"ok": True}, request_id="r1")
            await found.signal("approve", {"ok": True}, request_id="r1")  # the same request again: a no-op
            with anyio.fail_after(20):
                assert await found.result() == {"ok": True}
            assert found.status is ExecutionStatus.COMPLETED
        async with new_runtime() as runtime:  # and it is finished for the next process too
            again = await runtime.find_execution(execution_id, "default")
            assert again.status is ExecutionStatus.COMPLETED

    async def test_a_cancel_of_an_adopted_execution_is_kept(self, new_runtime: Any, start_waiting: Any) -> None:
        execution_id = await self._waiting_id(new_runtime, start_waiting)
        async with new_runtime() as runtime:
            found = await runtime.find_execution(execution_id, "default")
            with anyio.fail_after(20):
                await found.cancel("no longer needed")
            assert found.status is ExecutionStatus.CANCELLED
        async with new_runtime() as runtime:
            again = await runtime.find_execution(execution_id, "default")
            assert again.status is ExecutionStatus.CANCELLED

    async def test_repeats_of_one_answer_to_an_adopted_execution_apply_once(
        self, new_runtime: Any, start_waiting: Any
    ) -> None:
        """A client retrying one answer (same request id) at an adopted execution, several times
        at once: it is applied once, and the same id with another payload is a ConflictError."""
        execution_id = await self._waiting_id(new_runtime, start_waiting)
        async with new_runtime() as runtime:
            found = await runtime.find_execution(execution_id, "default")

            async def send() -> None:
                await found.signal("approve", {"n": 1}, request_id="r-repeat")

            with anyio.fail_after(20):
                async with anyio.create_task_group() as tg:
                    for _ in range(5):
                        tg.start_soon(send)
            with pytest.raises(ConflictError):
                await found.signal("approve", {"n": 2}, request_id="r-repeat")
            with anyio.fail_after(20):
                assert await found.result() == {"n": 1}
            assert found.status is ExecutionStatus.COMPLETED


# ------------------------------------------------------------------------------- executions

TERMINAL_KINDS = {"execution.completed", "execution.failed", "execution.cancelled"}


class ExecutionConformance:
    """The :class:`keel.Execution` protocol, for anything that implements it (an agent's, a flow's,
    a hand-written runnable's executions): event kinds and order, the waiting payload, signal
    idempotency by request id, cancel, and late readers.

    Fixtures a subclass provides (each factory is ``async (runtime) -> Execution``):

    - ``new_runtime``: a callable returning a NEW, unstarted :class:`keel.Runtime` that can run
      the executions below (the tests enter it with ``async with``);
    - ``start_completing``: an execution that completes on its own, soon;
    - ``start_waiting``: an execution that waits for the signal named ``signal_name`` (class
      attribute, default ``"approve"``) and completes once it is answered with ``answer``;
    - ``start_failing``: an execution that fails on its own, soon.

    An implementation that legitimately cannot produce a case (agent executions take no signals)
    overrides that fixture with one that calls ``pytest.skip(<why>)``; a missing fixture is an error,
    so a forgotten case never passes silently.
    """

    pytestmark = [pytest.mark.anyio]

    signal_name = "approve"
    answer: Any = {"approved": True, "note": "conformance"}
    other_answer: Any = {"approved": False, "note": "another payload"}
    timeout = 20.0  # seconds any one wait may take before the test fails (never a timed assertion)

    # helpers
    async def _events(self, execution: Execution, since: int = 0) -> list[RuntimeEvent]:
        with anyio.fail_after(self.timeout):
            return [event async for event in execution.events(since)]

    async def _finish(self, execution: Execution) -> Any:
        with anyio.fail_after(self.timeout):
            return await execution.result()

    async def _waiting(self, execution: Execution) -> RuntimeEvent:
        """Follow ``execution`` until it emits ``execution.waiting``; return that event."""
        with anyio.fail_after(self.timeout):
            async for event in execution.events():
                if event.kind == "execution.waiting":
                    return event
        raise AssertionError(f"{execution!r} finished ({execution.status.value}) without execution.waiting")

    def _check_log(self, execution: Execution, events: list[RuntimeEvent], terminal: str) -> None:
        kinds = [e.kind for e in events]
        assert kinds, f"{execution!r} emitted no events"
        assert kinds[0] == "execution.started", f"the first event must be execution.started, got {kinds}"
        assert [k for k in kinds if k in TERMINAL_KINDS] == [terminal], f"one terminal event, {terminal!r}: {kinds}"
        assert kinds[-1] == terminal, f"the terminal event must be the last one: {kinds}"
        seqs = [e.seq for e in events]
        assert all(isinstance(s, int) for s in seqs), f"every event carries a seq: {seqs}"
        assert all(a < b for a, b in itertools.pairwise(seqs)), f"seq must strictly increase: {seqs}"  # type: ignore[operator]
        for event in events:
            assert event.execution_id == execution.id, f"{event.kind} names execution {event.execution_id!r}"
            assert event.tenant == execution.tenant, f"{event.kind} is for tenant {event.tenant!r}"

    # identity
    async def test_is_an_execution(self, new_runtime: Any, start_completing: Any) -> None:
        async with new_runtime() as runtime:
            execution = await start_completing(runtime)
            assert isinstance(execution, Execution)
            assert isinstance(execution.id, str) and execution.id
            assert isinstance(execution.kind, str) and execution.kind
            assert isinstance(execution.tenant, str) and execution.tenant
            assert isinstance(execution.status, ExecutionStatus)
            await self._finish(execution)

    # event kinds and order
    async def test_a_completed_execution_has_started_first_and_completed_last(
        self, new_runtime: Any, start_completing: Any
    ) -> None:
        async with new_runtime() as runtime:
            execution = await start_completing(runtime)
            await self._finish(execution)
            assert execution.status is ExecutionStatus.COMPLETED
            self._check_log(execution, await self._events(execution), "execution.completed")

    async def test_a_failed_execution_ends_with_failed_and_result_raises(
        self, new_runtime: Any, start_failing: Any
    ) -> None:
        async with new_runtime() as runtime:
            execution = await start_failing(runtime)
            with anyio.fail_after(self.timeout), pytest.raises(Exception):  # noqa: B017 - what it failed with
                await execution.result()
            assert execution.status is ExecutionStatus.FAILED
            self._check_log(execution, await self._events(execution), "execution.failed")

    async def test_failed_and_cancelled_events_carry_a_reason(
        self, new_runtime: Any, request: pytest.FixtureRequest
    ) -> None:
        """``execution.failed`` and ``execution.cancelled`` say why, in a user-safe ``reason``."""
        factories = {}
        for name in ("start_waiting", "start_failing"):
            try:
                factories[name] = request.getfixturevalue(name)
            except pytest.skip.Exception:
                pass  # this implementation cannot produce that case: the other one is still checked
        if not factories:
            pytest.skip("neither a waiting nor a failing execution to end with a reason")
        async with new_runtime() as runtime:
            ended = []
            if "start_waiting" in factories:
                execution = await factories["start_waiting"](runtime)
                await self._waiting(execution)
                with anyio.fail_after(self.timeout):
                    await execution.cancel("no longer needed")
                ended.append(execution)
            if "start_failing" in factories:
                failing = await factories["start_failing"](runtime)
                with anyio.fail_after(self.timeout), pytest.raises(Exception):  # noqa: B017
                    await failing.result()
                ended.append(failing)
            for done in ended:
                last = (await self._events(done))[-1]
                assert last.kind in {"execution.failed", "execution.cancelled"}, last.kind
                reason = last.payload.get("reason")
                assert isinstance(reason, str) and reason, f"{last.kind} must carry a 'reason': {last.payload}"
                assert CODE_PATTERN.match(last.payload.get("code", "error")), f"'code' is an error code: {last.payload}"

    # late readers
    async def test_a_late_reader_replays_what_a_live_reader_saw(self, new_runtime: Any, start_completing: Any) -> None:
        async with new_runtime() as runtime:
            execution = await start_completing(runtime)
            live = await self._events(execution)  # follows from wherever the execution is now
            assert execution.status.finished, "events() ended before the execution finished"
            late = await self._events(execution)
            assert [(e.seq, e.kind) for e in late] == [(e.seq, e.kind) for e in live]
            assert [e.payload for e in late] == [e.payload for e in live]

    async def test_since_resumes_after_that_seq(self, new_runtime: Any, start_completing: Any) -> None:
        async with new_runtime() as runtime:
            execution = await start_completing(runtime)
            await self._finish(execution)
            events = await self._events(execution)
            for event in events:
                after = await self._events(execution, since=event.seq or 0)
                assert [e.seq for e in after] == [e.seq for e in events if (e.seq or 0) > (event.seq or 0)]
            assert await self._events(execution, since=(events[-1].seq or 0) + 100) == []

    async def test_a_since_below_zero_reads_from_the_start(self, new_runtime: Any, start_completing: Any) -> None:
        """Every seq is past a negative ``since``: a hostile or careless position is not an index."""
        async with new_runtime() as runtime:
            execution = await start_completing(runtime)
            early = await self._events(execution, since=-1)  # live, most likely
            await self._finish(execution)
            everything = [e.seq for e in await self._events(execution)]
            assert [e.seq for e in early] == everything
            assert [e.seq for e in await self._events(execution, since=-3)] == everything

    async def test_readers_that_join_while_it_waits_see_the_rest_live(
        self, new_runtime: Any, start_waiting: Any
    ) -> None:
        async with new_runtime() as runtime:
            execution = await start_waiting(runtime)
            waiting = await self._waiting(execution)
            seen: list[RuntimeEvent] = []

            async def follow() -> None:
                seen.extend(await self._events(execution, since=waiting.seq or 0))

            async with anyio.create_task_group() as tg:
                tg.start_soon(follow)
                await execution.signal(self.signal_name, self.answer, request_id="conformance-live")
            everything = await self._events(execution)
            assert [e.seq for e in seen] == [e.seq for e in everything if (e.seq or 0) > (waiting.seq or 0)]
            assert seen and seen[-1].kind == "execution.completed"

    # waiting
    async def test_a_waiting_execution_says_what_it_waits_for(self, new_runtime: Any, start_waiting: Any) -> None:
        async with new_runtime() as runtime:
            execution = await start_waiting(runtime)
            waiting = await self._waiting(execution)
            assert execution.status.value == "waiting", f"status {execution.status.value} while it waits"
            interrupts = waiting.payload.get("interrupts")
            assert isinstance(interrupts, list) and interrupts, f"execution.waiting needs 'interrupts': {waiting}"
            for interrupt in interrupts:  # each a keel.Interrupt, dumped, with its 'payload' spelled out
                assert Interrupt.model_validate(interrupt) and "payload" in interrupt, interrupt
                question = interrupt["payload"]
                if isinstance(question, dict) and "schema" in question:
                    assert "message" in question, f"a form names its question in 'message': {question}"
                    assert isinstance(question["schema"], dict), f"'schema' is a JSON schema: {question}"
            assert self.signal_name in [i["name"] for i in interrupts]
            await execution.signal(self.signal_name, self.answer, request_id="conformance-1")
            await self._finish(execution)
            assert execution.status is ExecutionStatus.COMPLETED
            events = await self._events(execution)
            self._check_log(execution, events, "execution.completed")
            assert waiting.seq in [e.seq for e in events]

    # signals
    async def test_the_same_request_id_twice_has_one_effect(self, new_runtime: Any, start_waiting: Any) -> None:
        async with new_runtime() as runtime:
            execution = await start_waiting(runtime)
            await self._waiting(execution)
            await execution.signal(self.signal_name, self.answer, request_id="conformance-1")
            await execution.signal(self.signal_name, self.answer, request_id="conformance-1")
            await self._finish(execution)
            assert execution.status is ExecutionStatus.COMPLETED
            before = await self._events(execution)
            # even once it has finished, a repeat (a client retrying) is a no-op, not an error
            await execution.signal(self.signal_name, self.answer, request_id="conformance-1")
            after = await self._events(execution)
            assert [(e.seq, e.kind) for e in after] == [(e.seq, e.kind) for e in before]
            self._check_log(execution, after, "execution.completed")
            assert [e.kind for e in after].count("execution.waiting") == 1, "answered once, so waited once"

    async def test_the_same_request_id_at_once_has_one_effect(self, new_runtime: Any, start_waiting: Any) -> None:
        """A client retrying before the first call returned: both calls succeed, one answer counts."""
        async with new_runtime() as runtime:
            execution = await start_waiting(runtime)
            await self._waiting(execution)
            with anyio.fail_after(self.timeout):
                async with anyio.create_task_group() as tg:
                    for _ in range(3):
                        tg.start_soon(
                            functools.partial(execution.signal, request_id="conformance-1"),
                            self.signal_name,
                            self.answer,
                        )
            await self._finish(execution)
            assert execution.status is ExecutionStatus.COMPLETED
            events = await self._events(execution)
            self._check_log(execution, events, "execution.completed")
            assert [e.kind for e in events].count("execution.waiting") == 1, "answered once, so waited once"

    async def test_a_signal_after_the_end_is_refused(self, new_runtime: Any, start_completing: Any) -> None:
        """A new request to a finished execution is an error naming it, never silently dropped."""
        async with new_runtime() as runtime:
            execution = await start_completing(runtime)
            await self._finish(execution)
            events = await self._events(execution)
            with pytest.raises(KeelError):
                await execution.signal(self.signal_name, self.answer, request_id="conformance-late")
            assert execution.status is ExecutionStatus.COMPLETED
            assert [e.seq for e in await self._events(execution)] == [e.seq for e in events]

    async def test_the_same_request_id_with_another_payload_is_a_conflict(
        self, new_runtime: Any, start_waiting: Any
    ) -> None:
        async with new_runtime() as runtime:
            execution = await start_waiting(runtime)
            await self._waiting(execution)
            await execution.signal(self.signal_name, self.answer, request_id="conformance-1")
            with pytest.raises(ConflictError):
                await execution.signal(self.signal_name, self.other_answer, request_id="conformance-1")
            await self._finish(execution)
            assert execution.status is ExecutionStatus.COMPLETED
            with pytest.raises(ConflictError):  # and still after the end
                await execution.signal(self.signal_name, self.other_answer, request_id="conformance-1")

    # cancel
    async def test_cancel_a_waiting_execution(self, new_runtime: Any, start_waiting: Any) -> None:
        async with new_runtime() as runtime:
            execution = await start_waiting(runtime)
            await self._waiting(execution)
            with anyio.fail_after(self.timeout):
                await execution.cancel("no longer needed")
            assert execution.status is ExecutionStatus.CANCELLED, "cancel() returns once it is cancelled"
            with anyio.fail_after(self.timeout), pytest.raises(KeelError):
                await execution.result()
            events = await self._events(execution)
            self._check_log(execution, events, "execution.cancelled")
            with anyio.fail_after(self.timeout):
                await execution.cancel("again")  # a no-op
            assert execution.status is ExecutionStatus.CANCELLED
            assert [e.seq for e in await self._events(execution)] == [e.seq for e in events]

    async def test_cancel_right_after_start(self, new_runtime: Any, start_waiting: Any) -> None:
        async with new_runtime() as runtime:
            execution = await start_waiting(runtime)
            with anyio.fail_after(self.timeout):
                await execution.cancel("changed my mind")
            assert execution.status is ExecutionStatus.CANCELLED
            with anyio.fail_after(self.timeout), pytest.raises(KeelError):
                await execution.result()
            self._check_log(execution, await self._events(execution), "execution.cancelled")

    async def test_cancel_races_the_end(self, new_runtime: Any, start_completing: Any) -> None:
        """Cancel a quick execution at once: whichever wins, it ends once, as its status says."""
        async with new_runtime() as runtime:
            execution = await start_completing(runtime)
            with anyio.fail_after(self.timeout):
                await execution.cancel("changed my mind")
            status = execution.status
            assert status in {ExecutionStatus.CANCELLED, ExecutionStatus.COMPLETED}, status
            if status is ExecutionStatus.CANCELLED:
                with anyio.fail_after(self.timeout), pytest.raises(KeelError):
                    await execution.result()
            else:
                await self._finish(execution)
            self._check_log(execution, await self._events(execution), f"execution.{status.value}")

    async def test_cancel_after_the_end_changes_nothing(self, new_runtime: Any, start_completing: Any) -> None:
        async with new_runtime() as runtime:
            execution = await start_completing(runtime)
            result = await self._finish(execution)
            events = await self._events(execution)
            with anyio.fail_after(self.timeout):
                await execution.cancel("too late")
            assert execution.status is ExecutionStatus.COMPLETED
            assert await self._finish(execution) == result
            assert [e.seq for e in await self._events(execution)] == [e.seq for e in events]
