"""Conformance of a :class:`keel.Store` backend (see :class:`StoreConformance`)."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest

from keel.errors import ConflictError, NotFoundError, StoreError
from keel.store import Append, Delete, LogRecord, Put, Store, WriteOp, blob_hash
from keel.types import StoreSpec

# ----------------------------------------------------------------------------------- stores


class StoreConformance:
    """Fixtures: ``new_store`` (a callable returning a fresh, empty :class:`keel.store.Store`: the
    kit makes one per test and closes it), or ``store`` itself; optionally ``store_spec``."""

    pytestmark = [pytest.mark.anyio]

    T = "tenant-a"

    # The kit has sync tests (test_is_a_store) and pytest refuses an async fixture for a sync test:
    # so ``store`` is sync, and an async test closes the store in its own event loop.
    @pytest.fixture
    def store(self, new_store: Callable[[], Store], request: pytest.FixtureRequest) -> Store:
        store = new_store()
        if inspect.iscoroutinefunction(request.function):
            request.getfixturevalue("_close_after")(store)
        else:
            request.addfinalizer(lambda: anyio.run(store.aclose))
        return store

    @pytest.fixture
    async def _close_after(self) -> AsyncIterator[Callable[[Store], None]]:
        stores: list[Store] = []
        yield stores.append
        for store in stores:
            await store.aclose()

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
