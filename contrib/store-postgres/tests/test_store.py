"""PostgresStore against the machine's PostgreSQL: the kernel's conformance suite, unchanged, and more."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest

import keel
from keel.testing import make_host
from keel.testing.conformance import StoreConformance
from keel_store_postgres import PostgresStore, plugin

T = "tenant-a"
_schemas = itertools.count()


def fresh_schema() -> str:
    return f"t{os.getpid()}_{next(_schemas)}"


class TestPostgresConformance(StoreConformance):
    @pytest.fixture
    def new_store(self, pg_dsn: str) -> Callable[[], PostgresStore]:
        return lambda: PostgresStore(pg_dsn, schema=fresh_schema(), poll_interval=0.2)  # the pool opens lazily

    @pytest.fixture
    def store_spec(self) -> keel.StoreSpec:
        return make_host(plugin).stores()["postgres"].spec


@pytest.fixture
async def open_store(pg_dsn: str) -> AsyncIterator[Callable[..., PostgresStore]]:
    stores: list[PostgresStore] = []

    def make(schema: str | None = None, **kw: Any) -> PostgresStore:
        store = PostgresStore(pg_dsn, schema=schema or fresh_schema(), **kw)
        stores.append(store)
        return store

    yield make
    for store in stores:
        await store.aclose()


def test_entry_point_is_installed() -> None:
    from importlib.metadata import entry_points

    (ep,) = [ep for ep in entry_points(group="keel") if ep.name == "postgres"]
    assert ep.load() is plugin


def test_factory_options(pg_dsn: str) -> None:
    spec = make_host(plugin).stores()["postgres"].spec
    assert spec.durable
    store = spec.factory({"dsn": pg_dsn, "schema": "app_one"})
    assert isinstance(store, PostgresStore) and store.schema == "app_one"
    with pytest.raises(keel.StoreError, match="dsnn"):
        spec.factory({"dsnn": pg_dsn})
    with pytest.raises(keel.StoreError):
        spec.factory({"schema": "Robert'); DROP TABLE"})


async def test_unreachable_server_is_a_clear_error() -> None:
    store = PostgresStore("postgresql://postgres@127.0.0.1:1/none")
    with pytest.raises(keel.StoreError, match="cannot connect to PostgreSQL"):
        await store.get(T, "ns", "k")
    await store.aclose()


async def test_data_is_shared_by_two_store_objects(open_store: Callable[..., PostgresStore]) -> None:
    schema = fresh_schema()
    a, b = open_store(schema), open_store(schema)
    await a.put(T, "ns", "k", {"v": 1})
    await a.append(T, "s", [1, 2])
    item = await b.get(T, "ns", "k")
    assert item is not None and item.value == {"v": 1}
    assert await b.append(T, "s", [3]) == 3


async def test_notify_wakes_a_subscriber_of_another_connection(open_store: Callable[..., PostgresStore]) -> None:
    """The poll interval is an hour, so only LISTEN/NOTIFY can deliver these in time."""
    schema = fresh_schema()
    mine, theirs = open_store(schema, poll_interval=3600), open_store(schema)
    seen: list[Any] = []
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:

            async def follow() -> None:
                async for record in mine.subscribe(T, "s"):
                    seen.append(record.data)
                    if len(seen) == 2:
                        tg.cancel_scope.cancel()

            tg.start_soon(follow)
            await anyio.sleep(0.3)
            await theirs.append(T, "s", ["a"])
            await anyio.sleep(0.1)
            await theirs.append(T, "s", ["b"])
    assert seen == ["a", "b"]


async def test_concurrent_appends_get_consecutive_seqs(open_store: Callable[..., PostgresStore]) -> None:
    store = open_store(max_size=8)
    seqs: list[int] = []

    async def one(i: int) -> None:
        seqs.append(await store.append(T, "s", [i, i]))

    async with anyio.create_task_group() as tg:
        for i in range(40):
            tg.start_soon(one, i)
    assert sorted(seqs) == list(range(2, 81, 2))
    records = await store.read(T, "s")
    assert [r.seq for r in records] == list(range(1, 81))
    assert all(records[k].data == records[k + 1].data for k in range(0, 80, 2))  # a batch stays together


async def test_large_blob_streams_in_chunks(open_store: Callable[..., PostgresStore]) -> None:
    store = open_store()
    data = os.urandom(2 * 1024 * 1024 + 5)
    ref = await store.put_blob(T, data)
    chunks = [c async for c in store.stream_blob(T, ref.sha256, chunk_size=1 << 20)]
    assert [len(c) for c in chunks] == [1 << 20, 1 << 20, 5] and b"".join(chunks) == data
