"""A Temporal execution is found by id from a new runtime, as after a restart or from another
process: the kernel's ``keel_find_execution`` contract (keel.testing.conformance.AdoptionConformance),
against the real dev server. Temporal is the durable store here: the runtimes share only its address."""

from __future__ import annotations

import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import pytest

import keel
from keel.testing import make_host
from keel.testing.conformance import AdoptionConformance
from keel_runner_temporal import plugin


def decided(ctx: Any) -> Any:
    return ctx.value


class DataFlow(SimpleNamespace):
    """What the runner reads of a data-defined TriggerFlow, registrable as a runnable."""

    kind = "flow"
    description = "a data flow"

    def input_schema(self) -> dict[str, Any]:
        return {}

    def output_schema(self) -> dict[str, Any]:
        return {}

    async def start(self, input: Any = None, *, runtime: keel.Runtime, tenant: str = "default") -> Any:
        return await plugin.create_runner(runtime, dict(runtime.stack.choice("runner").options)).start(
            self, input, tenant=tenant
        )


WAITS = DataFlow(
    name="waits-for-approval",
    definition={"name": "waits-for-approval", "steps": [{"pause_for": "approve", "payload": "ok?"}, {"to": "decided"}]},
    registry=SimpleNamespace(chunks={"decided": (decided, None, None)}),
)


class TestTemporalAdoption(AdoptionConformance):
    @pytest.fixture
    def new_runtime(self, temporal_address: str, tmp_path: Path) -> Any:
        (tmp_path / "keel.toml").write_text(
            f'store = "memory"\n[runner]\ndriver = "temporal"\naddress = "{temporal_address}"\n'
            f'task_queue = "adopt-{uuid.uuid4().hex[:8]}"\n'
        )

        def new() -> keel.Runtime:
            runtime = keel.Runtime(make_host(plugin), keel.load_stack(tmp_path / "keel.toml"))
            runtime.add(WAITS)  # as the stack's runnables list would
            return runtime

        return new

    @pytest.fixture
    def start_waiting(self) -> Any:
        async def start(runtime: keel.Runtime) -> keel.Execution:
            return await runtime.start(WAITS)

        return start


async def test_a_stack_on_another_runner_never_asks_temporal(tmp_path: Path) -> None:
    (tmp_path / "keel.toml").write_text('store = "memory"\nrunner = "local"\n')
    async with keel.Runtime(make_host(plugin), keel.load_stack(tmp_path / "keel.toml")) as runtime:
        assert await plugin.keel_find_execution(runtime, "flow_x", "default") is None
        with pytest.raises(keel.NotFoundError):
            await runtime.find_execution("flow_x")


TWO_WAITS = DataFlow(
    name="two-waits",
    definition={"name": "two-waits", "steps": [{"pause_for": "a"}, {"pause_for": "b"}]},
    registry=SimpleNamespace(chunks={}),
)


async def test_a_held_copy_learns_where_another_process_moved_the_execution(
    temporal_address: str, tmp_path: Path
) -> None:
    queue = f"held-{uuid.uuid4().hex[:8]}"
    for name, worker in (("serving", "true"), ("reading", "false")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "keel.toml").write_text(
            f'store = "memory"\n[runner]\ndriver = "temporal"\naddress = "{temporal_address}"\n'
            f'task_queue = "{queue}"\nworker = {worker}\n'
        )
    serving = keel.Runtime(make_host(plugin), keel.load_stack(tmp_path / "serving" / "keel.toml"))
    reading = keel.Runtime(make_host(plugin), keel.load_stack(tmp_path / "reading" / "keel.toml"))
    async with serving, reading:
        started = await serving.start(TWO_WAITS)
        with anyio.fail_after(30):
            while started.status is not keel.ExecutionStatus.WAITING:
                await anyio.sleep(0.01)
        held = await reading.find_execution(started.id)
        with anyio.fail_after(30):  # the memo is written when the workflow task that reached the wait ends
            while not held.get_pending_interrupts():  # type: ignore[attr-defined]
                assert await reading.find_execution(started.id) is held
                await anyio.sleep(0.05)
        assert [i["name"] for i in held.get_pending_interrupts()] == ["a"]  # type: ignore[attr-defined]
        await started.signal("a", 1)
        with anyio.fail_after(30):  # the serving process's worker reaches the second wait
            while [i["name"] for i in started.get_pending_interrupts()] != ["b"]:  # type: ignore[attr-defined]
                await anyio.sleep(0.01)
        with anyio.fail_after(30):
            while [i["name"] for i in held.get_pending_interrupts()] != ["b"]:  # type: ignore[attr-defined]
                assert await reading.find_execution(started.id) is held  # refreshed from the workflow's memo
                await anyio.sleep(0.05)
        assert held.status is keel.ExecutionStatus.WAITING
        await held.signal("b", 2)
        with anyio.fail_after(30):
            assert await held.result() == 2
