"""The gateway's durable state (keel_gateway.state) over the kernel's MemoryStore."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from keel import ConflictError, MemoryStore, ProductEvent
from keel_gateway.state import CLAIM_TTL, GatewayState


class _Runtime:
    """Only what GatewayState uses of a runtime: its store."""

    def __init__(self) -> None:
        self._store = MemoryStore()

    def store(self) -> Any:
        return self._store


async def test_an_idempotency_key_is_claimed_once_then_names_its_execution() -> None:
    state = GatewayState(_Runtime())  # type: ignore[arg-type]
    assert await state.claim("acme", "k1", now=100.0) is None
    with pytest.raises(ConflictError, match="under way"):
        await state.claim("acme", "k1", now=101.0)
    assert await state.claim("other", "k1", now=101.0) is None, "keys are per tenant"
    await state.settle("acme", "k1", "exe_1")
    assert await state.claim("acme", "k1", now=102.0) == "exe_1"


async def test_concurrent_claims_of_one_key_let_exactly_one_start() -> None:
    state = GatewayState(_Runtime())  # type: ignore[arg-type]
    outcomes: list[str] = []

    async def claim() -> None:
        try:
            outcomes.append("start" if await state.claim("acme", "k", now=5.0) is None else "found")
        except ConflictError:
            outcomes.append("conflict")

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(claim)
    assert sorted(outcomes) == ["conflict"] * 4 + ["start"]


async def test_a_stale_claim_is_taken_over_and_a_failed_start_releases_its_claim() -> None:
    state = GatewayState(_Runtime())  # type: ignore[arg-type]
    assert await state.claim("acme", "k", now=0.0) is None  # its process died before settling
    assert await state.claim("acme", "k", now=CLAIM_TTL + 1) is None
    await state.settle("acme", "k", None)
    assert await state.claim("acme", "k", now=CLAIM_TTL + 2) is None


async def test_runnable_names_and_product_events_are_kept() -> None:
    state = GatewayState(_Runtime())  # type: ignore[arg-type]
    assert await state.runnable_of("acme", "exe_1") is None
    await state.remember_runnable("acme", "exe_1", "review")
    assert await state.runnable_of("acme", "exe_1") == "review"
    event = ProductEvent(type="task.started", task_id="exe_1", execution_id="exe_1", seq=1, message="started")
    await state.append_product("acme", "exe_1", event, expected_seq=0)
    with pytest.raises(ConflictError):
        await state.append_product("acme", "exe_1", event, expected_seq=0)  # another process wrote first
    assert [e.seq for e in await state.product_events("acme", "exe_1")] == [1]
    assert await state.product_events("other", "exe_1") == []
