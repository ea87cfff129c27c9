"""SqliteStore: the kernel's conformance suite, unchanged, plus what a user of a durable store notices."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

import keel
from keel.testing import make_host
from keel.testing.conformance import StoreConformance
from keel_store_sqlite import SqliteStore, plugin

T = "tenant-a"


class TestSqliteConformance(StoreConformance):
    @pytest.fixture
    def new_store(self, tmp_path: Path) -> Callable[[], SqliteStore]:
        return lambda: SqliteStore(tmp_path / "keel.db")

    @pytest.fixture
    def store_spec(self) -> keel.StoreSpec:
        return make_host(plugin).stores()["sqlite"].spec


def test_entry_point_is_installed() -> None:
    from importlib.metadata import entry_points

    (ep,) = [ep for ep in entry_points(group="keel") if ep.name == "sqlite"]
    assert ep.load() is plugin


async def test_factory_defaults_to_dot_keel_in_the_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    spec = make_host(plugin).stores()["sqlite"].spec
    assert spec.durable
    store = spec.factory({})
    try:
        await store.put(T, "ns", "k", 1)
    finally:
        await store.aclose()
    assert (tmp_path / ".keel" / "keel.db").is_file()


async def test_factory_path_option_and_a_typo_is_an_error(tmp_path: Path) -> None:
    spec = make_host(plugin).stores()["sqlite"].spec
    store = spec.factory({"path": str(tmp_path / "sub" / "x.db")})
    await store.aclose()
    assert (tmp_path / "sub" / "x.db").is_file()
    with pytest.raises(keel.StoreError, match="pathh"):
        spec.factory({"pathh": "x.db"})


async def test_the_runtime_resolves_sqlite_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    async with keel.Runtime(make_host(plugin), keel.Stack()) as runtime:
        store = runtime.store()
        assert isinstance(store, SqliteStore)
        await store.append(T, "s", ["x"])
    assert (tmp_path / ".keel" / "keel.db").is_file()


async def test_data_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "keel.db"
    store = SqliteStore(path)
    await store.put(T, "ns", "k", {"v": 1})
    await store.append(T, "s", [1, 2, 3])
    ref = await store.put_blob(T, b"bytes")
    await store.aclose()
    store = SqliteStore(path)
    try:
        item = await store.get(T, "ns", "k")
        assert item is not None and item.value == {"v": 1}
        assert await store.last_seq(T, "s") == 3
        assert await store.append(T, "s", [4]) == 4
        assert await store.get_blob(T, ref.sha256) == b"bytes"
    finally:
        await store.aclose()


async def test_durability_settings(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "keel.db")
    await store.aclose()
    assert store.journal_mode == "wal"
    conn = sqlite3.connect(tmp_path / "keel.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # persistent in the file
    conn.close()


async def test_concurrent_appends_share_commits(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "keel.db")
    commits = 0
    commit = store._commit

    def counting(conn: sqlite3.Connection, batch: list[Any]) -> None:
        nonlocal commits
        commits += 1
        commit(conn, batch)

    store._commit = counting  # type: ignore[method-assign]
    try:
        seqs: list[int] = []

        async def one(i: int) -> None:
            seqs.append(await store.append(T, "s", [{"i": i}]))

        async with anyio.create_task_group() as tg:
            for i in range(200):
                tg.start_soon(one, i)
        assert sorted(seqs) == list(range(1, 201))
        assert commits < 100, f"200 concurrent appends took {commits} commits: no group commit"
        assert sorted(r.data["i"] for r in await store.read(T, "s")) == list(range(200))
    finally:
        await store.aclose()


async def test_a_conflict_in_a_batch_fails_only_its_own_operation(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "keel.db")
    try:
        results: dict[int, Any] = {}

        async def one(i: int) -> None:
            try:
                # every even writer expects the stream to be empty: at most one of them can win
                results[i] = await store.append(T, "s", [i], expected_seq=0 if i % 2 == 0 else None)
            except keel.ConflictError as err:
                results[i] = err

        async with anyio.create_task_group() as tg:
            for i in range(10):
                tg.start_soon(one, i)
        ok = [i for i, r in results.items() if isinstance(r, int)]
        failed = [i for i, r in results.items() if isinstance(r, keel.ConflictError)]
        assert {1, 3, 5, 7, 9} <= set(ok)  # the unconditional appends all landed
        assert len([i for i in ok if i % 2 == 0]) <= 1 and len(failed) >= 4
        assert {r.data for r in await store.read(T, "s")} == set(ok)
        assert await store.last_seq(T, "s") == len(ok)
    finally:
        await store.aclose()


async def test_subscribe_sees_appends_from_another_store_object(tmp_path: Path) -> None:
    """Another process's appends are noticed by polling; a second store object on the file stands in."""
    mine = SqliteStore(tmp_path / "keel.db", poll_interval=0.05)
    theirs = SqliteStore(tmp_path / "keel.db")
    seen: list[Any] = []
    try:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:

                async def follow() -> None:
                    async for record in mine.subscribe(T, "s"):
                        seen.append(record.data)
                        if len(seen) == 2:
                            tg.cancel_scope.cancel()

                tg.start_soon(follow)
                await anyio.sleep(0.1)
                await theirs.append(T, "s", ["a"])
                await theirs.append(T, "s", ["b"])
        assert seen == ["a", "b"]
    finally:
        await mine.aclose()
        await theirs.aclose()


async def test_large_blob_streams_in_chunks(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "keel.db")
    data = os.urandom(3 * 1024 * 1024 + 17)
    try:
        ref = await store.put_blob(T, data, "application/zip")
        assert ref.size == len(data) and ref.media_type == "application/zip"
        chunks = [c async for c in store.stream_blob(T, ref.sha256, chunk_size=1 << 20)]
        assert [len(c) for c in chunks] == [1 << 20] * 3 + [17]
        assert b"".join(chunks) == data
        with pytest.raises(keel.NotFoundError):
            async for _ in store.stream_blob("tenant-b", ref.sha256):
                pass
    finally:
        await store.aclose()


async def test_closed_store_refuses_work(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "keel.db")
    await store.aclose()
    await store.aclose()  # idempotent
    with pytest.raises(keel.StoreError, match="closed"):
        await store.put(T, "ns", "k", 1)


async def test_non_json_values_are_refused_with_a_hint(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "keel.db")
    try:
        with pytest.raises(keel.StoreError, match="put_blob"):
            await store.put(T, "ns", "k", b"raw bytes")
        with pytest.raises(keel.StoreError):
            await store.append(T, "s", [1, object()])
        assert await store.last_seq(T, "s") == 0  # nothing of a refused batch was appended
    finally:
        await store.aclose()


async def test_subscribe_sees_appends_from_another_process(tmp_path: Path) -> None:
    import sys

    path = tmp_path / "keel.db"
    store = SqliteStore(path, poll_interval=0.05)
    code = (
        "import anyio, sys\n"
        "from keel_store_sqlite import SqliteStore\n"
        "async def main():\n"
        "    s = SqliteStore(sys.argv[1])\n"
        "    await s.append('tenant-a', 's', ['from', 'elsewhere'])\n"
        "    await s.aclose()\n"
        "anyio.run(main)\n"
    )
    seen: list[Any] = []
    try:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:

                async def follow() -> None:
                    async for record in store.subscribe(T, "s"):
                        seen.append(record.data)
                        if len(seen) == 2:
                            tg.cancel_scope.cancel()

                tg.start_soon(follow)
                done = await anyio.run_process([sys.executable, "-c", code, str(path)], check=False)
                assert done.returncode == 0, done.stderr
        assert seen == ["from", "elsewhere"]
    finally:
        await store.aclose()


async def test_subscribe_wakes_at_once_on_this_store_s_appends(tmp_path: Path) -> None:
    """The poll interval is an hour: only the in-process wake-up can deliver these in time."""
    store = SqliteStore(tmp_path / "keel.db", poll_interval=3600)
    seen: list[Any] = []
    try:
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:

                async def follow() -> None:
                    async for record in store.subscribe(T, "s"):
                        seen.append(record.data)
                        if len(seen) == 3:
                            tg.cancel_scope.cancel()

                tg.start_soon(follow)
                for word in ["a", "b", "c"]:
                    await anyio.sleep(0.05)
                    await store.append(T, "s", [word])
        assert seen == ["a", "b", "c"]
    finally:
        await store.aclose()


def test_a_typo_in_the_store_table_is_named_before_the_store_opens(tmp_path: Path) -> None:
    (tmp_path / "keel.toml").write_text(f'[store]\ndriver = "sqlite"\npaht = "{tmp_path / "x.db"}"\n')
    stack = keel.load_stack(tmp_path / "keel.toml")
    with pytest.raises(keel.StackError) as caught:
        stack.check(make_host(plugin))
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'keel.toml'}: [store] of store 'sqlite': invalid options (paht: ")
    assert "Valid options: path, poll_interval, max_batch, busy_timeout" in message
    assert not list(tmp_path.glob("*.db")) and not (tmp_path / ".keel").exists(), "the driver was not started"
