"""The Workspace over the kernel's MemoryStore (this package's isolated venv has no other store)."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
from click.testing import CliRunner

import keel
from keel.testing import make_host
from keel_workspace import (
    ArtifactRef,
    ContextPack,
    Limits,
    TooLargeError,
    Workspace,
    check_small,
    estimate_tokens,
    list_scopes,
    plugin,
)


@pytest.fixture
def store() -> keel.MemoryStore:
    return keel.MemoryStore()


async def test_observations_artifacts_decisions_round_trip(store: keel.MemoryStore) -> None:
    ws = Workspace(store, "task-1")
    seen = await ws.observe("the invoice total is 360 EUR", source="invoice.pdf", tags=["invoice"])
    report = b"%PDF-1.7 pretend" * 1000
    ref = await ws.put_artifact(report, name="invoice.pdf", description="the original")
    assert ref == ArtifactRef(sha256=ref.sha256, size=len(report), media_type="application/pdf", name="invoice.pdf")
    assert await ws.read_artifact(ref) == report
    assert b"".join([c async for c in ws.open_artifact(ref, chunk_size=4096)]) == report
    decision = await ws.decide("pay", by="reviewer", why="total matches the order", evidence=[seen, ref])
    assert decision.evidence == [seen.id, f"sha256:{ref.sha256}"]

    again = await Workspace(store, "task-1").entries()
    assert [e.kind for e in again] == ["observation", "artifact", "decision"]
    assert again[1].ref == ref and again[0].source == "invoice.pdf"
    assert [e.seq for e in again] == [1, 2, 3]
    # the entries hold the ref, never the bytes
    raw = json.dumps([r.data for r in await store.read("default", "workspace/task-1")])
    assert "pretend" not in raw and ref.sha256 in raw


async def test_large_content_is_refused_with_the_fix(store: keel.MemoryStore) -> None:
    ws = Workspace(store, "task-1", limits=Limits(text_bytes=100, state_bytes=200))
    with pytest.raises(TooLargeError, match="put_artifact") as err:
        await ws.observe("x" * 101)
    assert "101 bytes" in str(err.value)
    with pytest.raises(TooLargeError, match="ArtifactRef"):
        await ws.checkpoint("state", {"page": "y" * 300})
    assert await store.read("default", "workspace/task-1") == []  # nothing half-written
    assert await ws.checkpoints() == []
    with pytest.raises(TooLargeError):
        check_small({"html": "<p>" * 10_000}, 16_384, "the page")
    assert check_small({"ok": 1}, 100) == {"ok": 1}
    with pytest.raises(TooLargeError):
        ws.check_small(list(range(1000)))


async def test_checkpoints_are_versioned_snapshots(store: keel.MemoryStore) -> None:
    ws = Workspace(store, "flow-9")
    first = await ws.checkpoint("progress", {"step": 1}, expected_version=0)
    assert first.version == 1
    with pytest.raises(keel.ConflictError):
        await ws.checkpoint("progress", {"step": 1}, expected_version=0)
    await ws.checkpoint("progress", {"step": 2}, expected_version=1)
    assert await ws.restore("progress") == {"step": 2}
    assert await ws.checkpoints() == ["progress"]
    with pytest.raises(keel.NotFoundError, match="progress"):
        await ws.restore("missing")
    assert [e.version for e in await ws.entries(kinds=["checkpoint"])] == [1, 2]


async def test_a_checkpoint_and_its_timeline_entry_are_saved_together(store: keel.MemoryStore) -> None:
    ws = Workspace(store, "flow-10")
    await ws.checkpoint("progress", {"step": 1})
    with pytest.raises(keel.ConflictError):
        await ws.checkpoint("progress", {"step": 9}, expected_version=5)
    assert await ws.restore("progress") == {"step": 1}  # neither the state ...
    assert [e.version for e in await ws.entries(kinds=["checkpoint"])] == [1]  # ... nor its entry

    async def save(step: int) -> None:  # unconditional saves racing each other all land, in order
        await ws.checkpoint("progress", {"step": step})

    async with anyio.create_task_group() as tg:
        for step in range(2, 6):
            tg.start_soon(save, step)
    assert [e.version for e in await ws.entries(kinds=["checkpoint"])] == [1, 2, 3, 4, 5]


async def test_child_shared_role_and_own_visibility(store: keel.MemoryStore) -> None:
    task = Workspace(store, "task-7")
    research = task.child("research", role="researcher")
    writer = task.child("writing", role="writer")
    await task.observe("the brief", visibility="shared")
    await research.observe("source A says 42")
    await research.observe("researchers only", visibility="role")
    await writer.observe("draft 1")

    assert [e.content for e in await research.entries()] == ["the brief", "source A says 42", "researchers only"]
    assert [e.content for e in await writer.entries()] == ["the brief", "draft 1"]  # isolated from research
    assert [e.content for e in await task.entries()] == ["the brief"]
    assert len(await task.entries(include_children=True)) == 3  # children's own, not role entries
    another = task.child("fact-check", role="researcher")
    assert "researchers only" in [e.content for e in await another.entries()]
    with pytest.raises(keel.KeelError, match="no role"):
        await task.observe("x", visibility="role")
    with pytest.raises(keel.KeelError, match="invalid"):
        task.child("a b")
    scopes = await list_scopes(store)
    assert set(scopes) >= {"task-7/~shared", "task-7/research", "task-7/writing", "task-7/~role/researcher"}


async def test_tenants_do_not_see_each_other(store: keel.MemoryStore) -> None:
    await Workspace(store, "task-1", tenant="acme").observe("secret")
    assert await Workspace(store, "task-1", tenant="globex").entries() == []


async def test_context_pack_is_bounded_newest_first(store: keel.MemoryStore) -> None:
    ws = Workspace(store, "task-2")
    for i in range(20):
        await ws.observe(f"fact number {i:02d} " + "." * 60, tags=["fact"] if i % 2 else ["noise"])
    ref = await ws.put_artifact(b"\x00" * 5_000_000, name="dump.bin", tags=["fact"])
    pack = await ContextPack.build(ws, budget_tokens=100, tags=["fact"])
    text = pack.render()
    assert pack.tokens <= 100 and pack.items
    assert pack.filtered_out == 10  # the "noise" entries
    assert pack.left_out == 11 - len(pack.items) and pack.left_out > 0
    assert "dump.bin" in text and ref.sha256[:12] in text  # the artifact as a ref, never its bytes
    assert len(text) < 1000
    assert "fact number 19" in text and "fact number 01" not in text  # the newest won
    assert f"{pack.left_out} more workspace entries left out" in text
    assert [i.kind for i in pack.items][-1] == "artifact"  # rendered oldest first
    everything = await ContextPack.build(ws, budget_tokens=100_000)
    assert everything.left_out == 0 and len(everything.items) == 21


def test_token_estimate_is_documented_four_chars() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcd") == 1
    assert estimate_tokens("abcde") == 2


class _OneStore:
    """A test plugin: store "fixture" is one MemoryStore shared by every runtime, so the CLI sees data."""

    def __init__(self) -> None:
        self.store = keel.MemoryStore()

    @keel.hookimpl
    def keel_stores(self) -> list[keel.StoreSpec]:
        return [keel.StoreSpec(name="fixture", durable=False, factory=lambda options: self.store)]


def test_cli_reads_the_store_the_stack_resolves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import anyio

    from keel.cli import build_cli

    fixture = _OneStore()

    async def fill() -> None:
        ws = Workspace(fixture.store, "task-3")
        await ws.observe("seen it", source="web")
        await ws.put_artifact("a long log", name="run.log")
        await ws.checkpoint("state", {"step": 4})
        await ws.child("sub").decide("stop", by="planner")

    anyio.run(fill)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "keel.toml").write_text('store = "fixture"\n')
    cli = build_cli(make_host(plugin, fixture), keel.load_stack())
    runner = CliRunner()

    result = runner.invoke(cli, ["workspace", "ls", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == [{"scope": "task-3", "entries": 3}, {"scope": "task-3/sub", "entries": 1}]
    result = runner.invoke(cli, ["workspace", "show", "task-3"])
    assert result.exit_code == 0, result.output
    assert "seen it" in result.output and "run.log" in result.output and "stop" not in result.output
    result = runner.invoke(cli, ["workspace", "show", "task-3", "--children", "--json"])
    assert [e["kind"] for e in json.loads(result.output)] == ["observation", "artifact", "checkpoint", "decision"]
    result = runner.invoke(cli, ["workspace", "export", "task-3", "-o", str(tmp_path / "x.json")])
    assert result.exit_code == 0, result.output
    exported = json.loads((tmp_path / "x.json").read_text())
    assert exported["checkpoints"] == {"state": {"step": 4}} and len(exported["entries"]) == 3
    result = runner.invoke(cli, ["workspace", "show", "nope"])
    assert result.exit_code != 0 and "no workspace 'nope'" in str(result.exception)
