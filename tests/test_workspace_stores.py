"""The Workspace over the durable stores, through the stack: the same code on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from conftest import BIN, clean_env

import keel
from keel.testing import make_host
from keel.testing.postgres import local_postgres, temporary_database
from keel_store_postgres import plugin as postgres_plugin
from keel_store_sqlite import plugin as sqlite_plugin
from keel_workspace import ContextPack, Workspace


@pytest.fixture(scope="module")
def pg_dsn() -> Iterator[str]:
    """A database of this module's own on the machine's PostgreSQL; fails (never skips) if it is down."""
    with temporary_database(local_postgres(), prefix="keel_ws") as dsn:
        yield dsn


async def exercise(store: keel.Store) -> None:
    """Application code: never names a store driver."""
    ws = Workspace(store, "task-100")
    page = ("<html>" + "lorem ipsum " * 50_000 + "</html>").encode()
    ref = await ws.put_artifact(page, name="page.html")
    seen = await ws.observe("the page lists 3 prices", source="https://example.test/p")
    await ws.child("check", role="checker").observe("prices verified", visibility="shared")
    await ws.decide("buy the cheapest", by="planner", why="same spec", evidence=[seen, ref])
    await ws.checkpoint("plan", {"step": "buy"})
    pack = await ContextPack.build(ws, budget_tokens=60)
    assert pack.tokens <= 60 and pack.left_out >= 1
    assert "lorem" not in pack.render()
    again = Workspace(store, "task-100")
    assert [e.kind for e in await again.entries()] == [
        "artifact",
        "observation",
        "observation",
        "decision",
        "checkpoint",
    ]
    assert await again.read_artifact(ref) == page
    assert await again.restore("plan") == {"step": "buy"}

    async def save(step: int) -> None:  # checkpoints racing on a real backend: each retries, all land
        await again.checkpoint("plan", {"step": step})

    async with anyio.create_task_group() as tg:
        for step in range(6):
            tg.start_soon(save, step)
    versions = [e.version for e in await again.entries(kinds=["checkpoint"])]
    assert versions == list(range(1, 8)), versions  # each saved version has exactly one timeline entry


async def test_workspace_on_sqlite_through_the_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    async with keel.Runtime(make_host(sqlite_plugin), keel.load_stack()) as runtime:
        await exercise(runtime.store())
    assert (tmp_path / ".keel" / "keel.db").is_file()


async def test_workspace_on_postgres_through_the_stack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pg_dsn: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "keel.toml").write_text(f'[store]\ndriver = "postgres"\ndsn = "{pg_dsn}"\n')
    async with keel.Runtime(make_host(postgres_plugin), keel.load_stack()) as runtime:
        await exercise(runtime.store())


def test_keel_workspace_cli_reads_the_default_sqlite_store(tmp_path: Path) -> None:
    async def fill() -> None:
        async with keel.Runtime(make_host(sqlite_plugin), keel.Stack()) as runtime:
            ws = Workspace(runtime.store(), "task-cli")
            await ws.observe("one")
            await ws.put_artifact(b"\x89PNG...", name="shot.png")

    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        anyio.run(fill)
    finally:
        os.chdir(cwd)

    def keel_cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "keel"), *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            env=clean_env(KEEL_LOAD_PLUGINS="sqlite,workspace"),
        )

    listed = keel_cli("workspace", "ls", "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == [{"scope": "task-cli", "entries": 2}]
    shown = keel_cli("workspace", "show", "task-cli")
    assert "shot.png" in shown.stdout and "image/png" in shown.stdout
    exported = json.loads(keel_cli("workspace", "export", "task-cli", "--json").stdout)
    assert [e["kind"] for e in exported["entries"]] == ["observation", "artifact"]
