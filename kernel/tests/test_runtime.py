"""Runtime: drivers resolved from the stack, built once, closed with it; runnables and executions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import keel
from keel.stack import load_stack
from keel.testing import ScriptedModel, make_host


async def test_model_and_store_come_from_the_stack(tmp_path: Path) -> None:
    (tmp_path / "keel.toml").write_text(
        'model = "s"\nstore = "memory"\n[models.s]\nprovider = "scripted"\nreplies = ["ok"]\n'
    )
    async with keel.Runtime(make_host(), load_stack(cwd=tmp_path)) as runtime:
        model = runtime.model()
        assert isinstance(model, ScriptedModel)
        assert runtime.model() is model, "built once per runtime"
        store = runtime.store()
        await store.put("t", "n", "k", 1)
        assert runtime.store() is store
    assert model.closed, "the runtime closes the drivers it built"


async def test_unknown_alias_provider(tmp_path: Path) -> None:
    (tmp_path / "keel.toml").write_text('[models.big]\nprovider = "openai"\n')
    runtime = keel.Runtime(make_host(), load_stack(cwd=tmp_path))
    with pytest.raises(keel.DriverNotFoundError, match=r"unknown model 'openai'.*alias 'big'"):
        runtime.model("big")


def test_task_group_needs_a_started_runtime() -> None:
    with pytest.raises(keel.KeelError, match="async with runtime"):
        keel.Runtime(make_host()).task_group  # noqa: B018


class EchoRunnable:
    name = "echo"
    kind = "test"
    description = "returns its input"

    def input_schema(self) -> dict[str, Any]:
        return {}

    def output_schema(self) -> dict[str, Any]:
        return {}

    async def start(self, input: Any, *, runtime: keel.Runtime, tenant: str = "default") -> keel.Execution:
        raise NotImplementedError


def test_runnable_registry() -> None:
    runtime = keel.Runtime(make_host())
    runtime.add(EchoRunnable())
    assert runtime.runnables.names() == ["echo"]
    with pytest.raises(keel.KeelError, match="already registered"):
        runtime.add(EchoRunnable())
    with pytest.raises(keel.NotFoundError, match="registered: echo"):
        runtime.runnables.get("nope")
    with pytest.raises(keel.KeelError, match="not a runnable"):
        runtime.add(object())  # type: ignore[arg-type]


def test_execution_registry_is_tenant_scoped() -> None:
    class Ex:
        id, kind, tenant = "x1", "test", "acme"

    registry = keel.ExecutionRegistry()
    registry.add(Ex())  # type: ignore[arg-type]
    assert registry.get("x1", tenant="acme").id == "x1"
    with pytest.raises(keel.NotFoundError):
        registry.get("x1", tenant="other")
    assert registry.list("other") == []


def test_execution_registry_forgets_the_oldest_finished_only() -> None:
    class Ex:
        kind, tenant = "test", "default"

        def __init__(self, n: int, done: bool):
            self.id = f"x{n}"
            self.status = keel.ExecutionStatus.COMPLETED if done else keel.ExecutionStatus.WAITING

    registry = keel.ExecutionRegistry(keep_finished=10)
    registry.add(Ex(0, done=False))  # old but still waiting: never dropped
    for n in range(1, 30):
        registry.add(Ex(n, done=True))  # type: ignore[arg-type]
    ids = [e.id for e in registry.list()]
    assert "x0" in ids and "x29" in ids and "x1" not in ids
    assert len(ids) <= 12


class _Parked:
    """An execution object that only mirrors the store (``running_here = False``)."""

    kind, tenant = "test", "default"

    def __init__(self, n: int, *, here: bool = False):
        self.id = f"p{n}"
        self.status = keel.ExecutionStatus.WAITING
        self.running_here = here
        self.refreshed = 0

    async def refresh(self) -> None:
        self.refreshed += 1
        self.status = keel.ExecutionStatus.COMPLETED  # what another process did meanwhile


def test_execution_registry_forgets_parked_copies_but_not_what_runs_here() -> None:
    registry = keel.ExecutionRegistry(keep_finished=10)
    registry.add(_Parked(0, here=True))  # type: ignore[arg-type]  # waits here, old: kept
    for n in range(1, 40):
        registry.add(_Parked(n))  # type: ignore[arg-type]  # copies of executions others run
    ids = [e.id for e in registry.list()]
    assert "p0" in ids and "p39" in ids and "p1" not in ids
    assert len(ids) <= 12


def test_a_registry_full_of_running_executions_is_not_scanned_on_every_add() -> None:
    scans = 0

    class Counted:
        kind, tenant = "test", "default"
        running_here = True

        def __init__(self, n: int):
            self.id = f"r{n}"

        @property
        def status(self) -> keel.ExecutionStatus:
            nonlocal scans
            scans += 1
            return keel.ExecutionStatus.RUNNING

    registry = keel.ExecutionRegistry(keep_finished=100)
    for n in range(1_100):
        registry.add(Counted(n))  # type: ignore[arg-type]
    assert len(registry.list()) == 1_100  # none could be forgotten
    # past the bound, one look at every execution per 10 additions (~60,000 status reads here);
    # before, one per addition (~600,000)
    assert scans < 100_000, scans


async def test_find_execution_refreshes_a_parked_copy_before_handing_it_out() -> None:
    runtime = keel.Runtime(make_host(), keel.Stack())
    parked, here = _Parked(1), _Parked(2, here=True)
    runtime.executions.add(parked)  # type: ignore[arg-type]
    runtime.executions.add(here)  # type: ignore[arg-type]
    assert await runtime.find_execution("p1") is parked
    assert parked.refreshed == 1 and parked.status is keel.ExecutionStatus.COMPLETED
    assert await runtime.find_execution("p1") is parked and parked.refreshed == 1  # finished: as it is
    assert await runtime.find_execution("p2") is here and here.refreshed == 0  # runs here: it is the truth


async def test_event_log_replays_then_follows_until_finished() -> None:
    import anyio

    log: keel.EventLog[int] = keel.EventLog()
    log.append(1)
    finished = False
    seen: list[int] = []

    async def read() -> None:
        async for item in log.follow(0, lambda: finished):
            seen.append(item)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            await anyio.sleep(0.01)
            log.append(2)
            await anyio.sleep(0.01)
            finished = True
            log.append(3)  # the last item wakes the reader, which then ends
    assert seen == [1, 2, 3]
    assert [i async for i in log.follow(2, lambda: True)] == [3], "a late reader starts where it asks"


async def test_event_log_replace_leaves_a_following_reader_on_its_items() -> None:
    """An execution that coalesces its events once finished: a reader that started before goes
    on over the full items; one that starts after reads the coalesced ones."""
    import anyio

    log: keel.EventLog[int] = keel.EventLog()
    log.extend([1, 2, 3])
    assert (len(log), log[0], log[-1], log[1:], list(log)) == (3, 1, 3, [2, 3], [1, 2, 3])
    finished = False
    early = log.follow(0, lambda: finished)
    assert [await early.__anext__(), await early.__anext__()] == [1, 2]
    log.replace([13])
    finished = True
    assert [i async for i in early] == [3], "the reader that started before keeps its items"
    assert [i async for i in log.follow(0, lambda: True)] == [13] and list(log) == [13]

    woken: list[int] = []

    async def wait() -> None:
        await log.changed()
        woken.append(len(log))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            assert woken == [], "changed() waits for the next append"
            log.extend([14, 15])
    assert woken == [3]
