"""Conformance kit: subclass one of these in your plugin's tests to prove your driver honours the
kernel's contract (as langchain's standard-tests serve every chat model).

Each class names the fixtures a subclass must provide. Async tests run through anyio; set
``anyio_mode = "auto"`` in your pytest configuration or mark the module ``pytest.mark.anyio``.

Example::

    from keel.testing.conformance import StoreConformance

    class TestMyStore(StoreConformance):
        @pytest.fixture
        async def store(self, tmp_path):
            store = MyStore(tmp_path / "db")
            yield store
            await store.aclose()
"""

from __future__ import annotations

import functools
import itertools
import json
from typing import Any

import anyio
import pytest

from keel.actions import invoke_action
from keel.errors import CODE_PATTERN, ActionInputError, ConflictError, KeelError, NotFoundError, StoreError
from keel.events import RuntimeEvent
from keel.execution import Execution, ExecutionStatus
from keel.store import Append, Delete, LogRecord, Put, Store, WriteOp, blob_hash
from keel.types import (
    ActionSpec,
    Channel,
    ChannelSpec,
    Environment,
    EnvironmentSpec,
    EvalResult,
    EvalSample,
    EvaluatorSpec,
    Interrupt,
    Message,
    Model,
    ModelDone,
    ModelRequest,
    ModelSpec,
    ProductEvent,
    StoreSpec,
    TextDelta,
    ToolCallEvent,
)

__all__ = [
    "ActionConformance",
    "AdoptionConformance",
    "ChannelConformance",
    "EnvironmentConformance",
    "EvaluatorConformance",
    "ExecutionConformance",
    "ModelConformance",
    "StoreConformance",
]


async def _maybe_await(value: Any) -> Any:
    if hasattr(value, "__await__"):
        return await value
    return value


# ----------------------------------------------------------------------------------- models


class ModelConformance:
    """Fixtures: ``model_spec`` (a :class:`keel.ModelSpec`) and ``model`` (an instance built from it).

    Override ``prompt`` to suit a model that needs a particular question.
    """

    pytestmark = [pytest.mark.anyio]

    prompt = "Reply with the single word: hello"

    def test_spec_is_named(self, model_spec: ModelSpec) -> None:
        assert model_spec.name and model_spec.name.strip() == model_spec.name
        assert callable(model_spec.factory)

    async def test_stream_ends_with_exactly_one_done(self, model: Model) -> None:
        events = [e async for e in model.stream(ModelRequest(messages=[Message(role="user", content=self.prompt)]))]
        assert events, "a model stream yielded nothing"
        assert isinstance(events[-1], ModelDone), f"last event must be ModelDone, got {events[-1]!r}"
        assert sum(isinstance(e, ModelDone) for e in events) == 1
        for event in events[:-1]:
            assert isinstance(event, (TextDelta, ToolCallEvent)), f"unexpected event {event!r}"

    async def test_answers_with_text(self, model: Model) -> None:
        request = ModelRequest(messages=[Message(role="user", content=self.prompt)])
        text = "".join([e.text async for e in model.stream(request) if isinstance(e, TextDelta)])
        assert text.strip(), "the model answered with no text"

    async def test_tool_calls_have_object_arguments(self, model: Model) -> None:
        if not model.capabilities.tools:
            pytest.skip("model does not declare tool support")
        request = ModelRequest(messages=[Message(role="user", content=self.prompt)])
        async for event in model.stream(request):
            if isinstance(event, ToolCallEvent):
                assert isinstance(event.call.arguments, dict)
                assert event.call.id and event.call.name

    async def test_aclose_is_idempotent(self, model: Model) -> None:
        await model.aclose()
        await model.aclose()


# ---------------------------------------------------------------------------------- actions


class ActionConformance:
    """Fixtures: ``action_spec`` and ``valid_arguments`` (a dict the action accepts)."""

    pytestmark = [pytest.mark.anyio]

    def test_schema_is_an_object_schema(self, action_spec: ActionSpec) -> None:
        assert action_spec.parameters.get("type") == "object"
        json.dumps(action_spec.parameters)  # serialisable, so a model can receive it
        assert action_spec.description, "describe the action: the model reads the description"

    async def test_valid_arguments_give_a_json_result(
        self, action_spec: ActionSpec, valid_arguments: dict[str, Any]
    ) -> None:
        result = await invoke_action(action_spec, valid_arguments)
        json.dumps(result, default=str)

    async def test_unknown_argument_is_refused(self, action_spec: ActionSpec, valid_arguments: dict[str, Any]) -> None:
        with pytest.raises(ActionInputError, match=action_spec.name):
            await invoke_action(action_spec, {**valid_arguments, "__no_such_argument__": 1})


# ------------------------------------------------------------------------------- evaluators


class EvaluatorConformance:
    """Fixtures: ``evaluator_spec``, ``passing_sample`` and ``failing_sample``."""

    pytestmark = [pytest.mark.anyio]

    async def _run(self, spec: EvaluatorSpec, sample: EvalSample) -> EvalResult:
        result = await _maybe_await(spec.evaluate(sample))
        assert isinstance(result, EvalResult)
        assert result.evaluator == spec.name
        return result

    async def test_passing_sample_passes(self, evaluator_spec: EvaluatorSpec, passing_sample: EvalSample) -> None:
        result = await self._run(evaluator_spec, passing_sample)
        assert result.passed and 0.0 <= result.score <= 1.0

    async def test_failing_sample_fails_with_a_reason(
        self, evaluator_spec: EvaluatorSpec, failing_sample: EvalSample
    ) -> None:
        result = await self._run(evaluator_spec, failing_sample)
        assert not result.passed
        assert result.reason, "a failure must say why"


# --------------------------------------------------------------------------------- channels


class ChannelConformance:
    """Fixtures: ``channel_spec`` and ``channel`` (an instance)."""

    pytestmark = [pytest.mark.anyio]

    def test_spec_builds_channels(self, channel_spec: ChannelSpec) -> None:
        assert channel_spec.name and callable(channel_spec.factory)

    async def test_sends_every_product_event_type(self, channel: Channel) -> None:
        assert isinstance(channel, Channel)
        for seq, kind in enumerate(
            ["task.started", "task.progress", "task.partial", "task.waiting", "task.completed", "task.failed"], 1
        ):
            await channel.send(ProductEvent(type=kind, task_id="t1", execution_id="x1", seq=seq))  # type: ignore[arg-type]

    async def test_aclose_is_idempotent(self, channel: Channel) -> None:
        await channel.aclose()
        await channel.aclose()


# ----------------------------------------------------------------------------- environments


class EnvironmentConformance:
    """Fixtures: ``environment_spec`` and ``environment`` (an instance, not started)."""

    pytestmark = [pytest.mark.anyio]

    def test_spec_declares_kind_and_permissions(self, environment_spec: EnvironmentSpec) -> None:
        assert environment_spec.kind
        assert environment_spec.permissions is not None

    async def test_lifecycle(self, environment: Environment) -> None:
        assert isinstance(environment, Environment)
        assert environment.status == "stopped"
        await environment.start()
        try:
            status: str = environment.status
            assert status == "ready"
            assert (await environment.health()).ok
        finally:
            await environment.stop()
        assert environment.status == "stopped"
        await environment.stop()  # idempotent


# ----------------------------------------------------------------------------------- stores


class StoreConformance:
    """Fixture: ``store`` (a fresh, empty :class:`keel.store.Store`); optionally ``store_spec``."""

    pytestmark = [pytest.mark.anyio]

    T = "tenant-a"

    async def test_is_a_store(self, store: Store) -> None:
        assert isinstance(store, Store)

    async def test_spec(self, request: pytest.FixtureRequest) -> None:
        try:
            spec: StoreSpec = request.getfixturevalue("store_spec")
        except pytest.FixtureLookupError:
            pytest.skip("no store_spec fixture")
        assert spec.name and callable(spec.factory)

    # key-value
    async def test_put_get_versions(self, store: Store) -> None:
        assert await store.get(self.T, "ns", "k") is None
        assert await store.put(self.T, "ns", "k", {"a": [1, 2]}) == 1
        assert await store.put(self.T, "ns", "k", {"a": 3}) == 2
        item = await store.get(self.T, "ns", "k")
        assert item is not None and item.value == {"a": 3} and item.version == 2 and item.key == "k"

    async def test_compare_and_set(self, store: Store) -> None:
        assert await store.put(self.T, "ns", "k", 1, expected_version=0) == 1
        with pytest.raises(ConflictError):
            await store.put(self.T, "ns", "k", 2, expected_version=0)
        with pytest.raises(ConflictError):
            await store.put(self.T, "ns", "k", 2, expected_version=5)
        assert await store.put(self.T, "ns", "k", 2, expected_version=1) == 2
        with pytest.raises(ConflictError):
            await store.delete(self.T, "ns", "k", expected_version=1)
        assert await store.delete(self.T, "ns", "k", expected_version=2) is True
        assert await store.delete(self.T, "ns", "k") is False

    async def test_concurrent_compare_and_set_has_one_winner(self, store: Store) -> None:
        await store.put(self.T, "ns", "counter", 0)
        wins: list[int] = []

        async def attempt(i: int) -> None:
            try:
                await store.put(self.T, "ns", "counter", i, expected_version=1)
                wins.append(i)
            except ConflictError:
                pass

        async with anyio.create_task_group() as tg:
            for i in range(8):
                tg.start_soon(attempt, i)
        assert len(wins) == 1
        item = await store.get(self.T, "ns", "counter")
        assert item is not None and item.value == wins[0] and item.version == 2

    async def test_list_keys_sorted_with_prefix(self, store: Store) -> None:
        for key in ["b/2", "a/1", "b/1", "c"]:
            await store.put(self.T, "ns", key, key)
        assert await store.list_keys(self.T, "ns") == ["a/1", "b/1", "b/2", "c"]
        assert await store.list_keys(self.T, "ns", prefix="b/") == ["b/1", "b/2"]
        assert await store.list_keys(self.T, "other") == []

    async def test_values_round_trip_as_json(self, store: Store) -> None:
        value = {"s": "é✓", "n": None, "f": 1.5, "b": True, "l": [1, {"x": "y"}], "big": 2**53}
        await store.put(self.T, "ns", "v", value)
        item = await store.get(self.T, "ns", "v")
        assert item is not None and item.value == value

    # blobs
    async def test_blobs_by_content_hash(self, store: Store) -> None:
        data = b"\x00binary\xff" * 1000
        ref = await store.put_blob(self.T, data, "application/x-test")
        assert ref.sha256 == blob_hash(data) and ref.size == len(data)
        assert await store.has_blob(self.T, ref.sha256)
        assert await store.get_blob(self.T, ref.sha256) == data
        again = await store.put_blob(self.T, data, "application/x-test")
        assert again == ref
        chunks = [c async for c in store.stream_blob(self.T, ref.sha256, chunk_size=999)]
        assert b"".join(chunks) == data and max(len(c) for c in chunks) <= 999
        with pytest.raises(NotFoundError):
            await store.get_blob(self.T, "0" * 64)
        assert not await store.has_blob(self.T, "0" * 64)
        assert await store.blob_ref(self.T, ref.sha256) == ref  # size and type, without the bytes
        assert await store.blob_ref(self.T, "0" * 64) is None
        assert await store.blob_ref("another-tenant", ref.sha256) is None

    # logs
    async def test_append_and_read(self, store: Store) -> None:
        assert await store.last_seq(self.T, "s") == 0
        assert await store.append(self.T, "s", [{"n": 1}, {"n": 2}]) == 2
        assert await store.append(self.T, "s", [{"n": 3}]) == 3
        records = await store.read(self.T, "s")
        assert [r.seq for r in records] == [1, 2, 3]
        assert [r.data["n"] for r in records] == [1, 2, 3]
        assert all(isinstance(r, LogRecord) and r.stream == "s" for r in records)
        assert [r.seq for r in await store.read(self.T, "s", after=1, limit=1)] == [2]
        assert await store.read(self.T, "s", after=3) == []
        assert await store.last_seq(self.T, "s") == 3

    async def test_empty_append_creates_nothing(self, store: Store) -> None:
        assert await store.append(self.T, "empty", []) == 0
        assert await store.list_streams(self.T) == []

    async def test_a_deleted_stream_starts_again_at_one(self, store: Store) -> None:
        await store.append(self.T, "s", ["a", "b"])
        await store.delete_stream(self.T, "s")
        assert await store.last_seq(self.T, "s") == 0
        assert await store.append(self.T, "s", ["c"]) == 1

    async def test_append_with_expected_seq(self, store: Store) -> None:
        assert await store.append(self.T, "s", ["a"], expected_seq=0) == 1
        with pytest.raises(ConflictError):
            await store.append(self.T, "s", ["b"], expected_seq=0)
        assert await store.append(self.T, "s", ["b"], expected_seq=1) == 2
        assert [r.data for r in await store.read(self.T, "s")] == ["a", "b"]

    async def test_streams_listed_and_deleted(self, store: Store) -> None:
        await store.append(self.T, "flow/1", [1])
        await store.append(self.T, "flow/2", [1])
        await store.append(self.T, "other", [1])
        assert await store.list_streams(self.T, prefix="flow/") == ["flow/1", "flow/2"]
        await store.delete_stream(self.T, "flow/1")
        assert await store.list_streams(self.T, prefix="flow/") == ["flow/2"]
        assert await store.read(self.T, "flow/1") == []

    async def test_subscribe_replays_then_follows(self, store: Store) -> None:
        await store.append(self.T, "s", ["old"])
        seen: list[Any] = []
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:

                async def follow() -> None:
                    async for record in store.subscribe(self.T, "s"):
                        seen.append(record.data)
                        if len(seen) == 3:
                            tg.cancel_scope.cancel()

                tg.start_soon(follow)
                await anyio.sleep(0.05)
                await store.append(self.T, "s", ["new1"])
                await store.append(self.T, "s", ["new2"])
        assert seen == ["old", "new1", "new2"]

    # tenants
    async def test_tenants_are_isolated(self, store: Store) -> None:
        other = "tenant-b"
        await store.put(self.T, "ns", "k", "mine")
        ref = await store.put_blob(self.T, b"secret")
        await store.append(self.T, "s", ["mine"])
        assert await store.get(other, "ns", "k") is None
        assert await store.list_keys(other, "ns") == []
        assert not await store.has_blob(other, ref.sha256)
        with pytest.raises(NotFoundError):
            await store.get_blob(other, ref.sha256)
        assert await store.read(other, "s") == []
        assert await store.list_streams(other) == []
        assert await store.put(other, "ns", "k", "theirs") == 1  # versions are per tenant
        item = await store.get(self.T, "ns", "k")
        assert item is not None and item.value == "mine"

    # retention
    async def test_purge_removes_old_keys_and_streams(self, store: Store) -> None:
        import time

        await store.put(self.T, "ns", "old", 1)
        await store.append(self.T, "old-stream", [1])
        cutoff = time.time() + 0.001
        await anyio.sleep(0.01)
        await store.put(self.T, "ns", "new", 1)
        await store.append(self.T, "new-stream", [1])
        removed = await store.purge(self.T, older_than=cutoff)
        assert removed == 2
        assert await store.list_keys(self.T, "ns") == ["new"]
        assert await store.list_streams(self.T) == ["new-stream"]

    # transactions
    async def test_transact_applies_every_op_in_order(self, store: Store) -> None:
        await store.put(self.T, "ns", "gone", "x")
        results = await store.transact(
            self.T,
            [
                Put("ns", "k", {"n": 1}, expected_version=0),
                Append("s", ["a", "b"], expected_seq=0),
                Put("ns", "k", {"n": 2}, expected_version=1),  # sees the op before it
                Append("s", ["c"], expected_seq=2),
                Delete("ns", "gone", expected_version=1),
                Delete("ns", "never"),
            ],
        )
        assert results == [1, 2, 2, 3, True, False]
        item = await store.get(self.T, "ns", "k")
        assert item is not None and item.value == {"n": 2} and item.version == 2
        assert [r.data for r in await store.read(self.T, "s")] == ["a", "b", "c"]
        assert await store.get(self.T, "ns", "gone") is None
        assert await store.transact(self.T, []) == []

    async def test_transact_writes_nothing_when_one_condition_fails(self, store: Store) -> None:
        await store.put(self.T, "ns", "k", "before")
        await store.append(self.T, "s", ["one"])
        ops: list[WriteOp] = [
            Put("ns", "new", 1),
            Append("s", ["two"]),
            Delete("ns", "k"),
            Put("ns", "k", "after", expected_version=7),  # k was deleted just before: a conflict
        ]
        with pytest.raises(ConflictError, match=r"transaction op 3 \(put ns/k\).*nothing was written"):
            await store.transact(self.T, ops)
        assert await store.get(self.T, "ns", "new") is None
        item = await store.get(self.T, "ns", "k")
        assert item is not None and item.value == "before" and item.version == 1
        assert [r.data for r in await store.read(self.T, "s")] == ["one"]
        with pytest.raises(ConflictError, match=r"transaction op 0 \(append s\)"):
            await store.transact(self.T, [Append("s", ["x"], expected_seq=5)])
        assert await store.last_seq(self.T, "s") == 1

    async def test_transact_refuses_a_value_that_is_not_json_before_writing(self, store: Store) -> None:
        with pytest.raises(StoreError, match="JSON"):
            await store.transact(self.T, [Put("ns", "ok", 1), Put("ns", "bad", object())])
        assert await store.get(self.T, "ns", "ok") is None

    async def test_transact_is_atomic_against_a_concurrent_writer(self, store: Store) -> None:
        """Two transactions move one unit between two keys at once: the total never changes."""
        await store.transact(self.T, [Put("ns", "a", 10), Put("ns", "b", 0)])

        async def move() -> None:
            while True:
                a, b = await store.get(self.T, "ns", "a"), await store.get(self.T, "ns", "b")
                assert a is not None and b is not None
                try:
                    await store.transact(
                        self.T,
                        [
                            Put("ns", "a", a.value - 1, expected_version=a.version),
                            Put("ns", "b", b.value + 1, expected_version=b.version),
                        ],
                    )
                    return
                except ConflictError:
                    continue  # the other one won this round: read again

        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(move)
        a, b = await store.get(self.T, "ns", "a"), await store.get(self.T, "ns", "b")
        assert a is not None and b is not None and (a.value, b.value) == (6, 4)


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
