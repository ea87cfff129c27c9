"""A restart with work in flight: the gateway finds durable executions through the kernel's
adoption hook (real uvicorn, real SQLite store, two 'processes' one after the other)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import httpx
from conftest import wait_for_status

import keel
from keel_gateway import ProductHub, create_app
from keel_gateway.state import GatewayState
from keel_gateway.testing import serve
from keel_triggerflow import TriggerFlow


def review_flow() -> TriggerFlow:
    async def draft(ctx: Any) -> Any:
        return f"draft about {ctx.value['topic']}"

    async def approve(ctx: Any) -> Any:
        return await ctx.pause_for("approve", {"message": "publish this?", "draft": ctx.value})

    async def publish(ctx: Any) -> Any:
        return {"published": bool(ctx.value.get("approved"))}

    flow = TriggerFlow("review")
    flow.to(draft).to(approve).to(publish)
    return flow


def runtime_for(folder: Path) -> keel.Runtime:
    (folder / "keel.toml").write_text(f'[store]\ndriver = "sqlite"\npath = "{folder / "state.db"}"\n')
    host = keel.PluginHost.discover(load=["sqlite", "triggerflow", "gateway"])
    runtime = keel.Runtime(host, keel.load_stack(folder / "keel.toml"), shutdown_grace=2.0)
    runtime.add(review_flow())
    return runtime


def test_a_waiting_execution_is_reachable_and_answerable_after_a_restart(tmp_path: Path) -> None:
    settings: dict[str, Any] = {}
    with serve(create_app(runtime_for(tmp_path), settings, adopt=True)) as url, httpx.Client(base_url=url) as http:
        started = http.post("/v1/runnables/review/executions", json={"topic": "tides"})
        assert started.status_code == 202, started.text
        execution_id = started.json()["id"]
        assert wait_for_status(http, f"/v1/executions/{execution_id}", "waiting", 20)["status"] == "waiting"

    # the first process is gone; a new one over the same store
    with serve(create_app(runtime_for(tmp_path), settings, adopt=True)) as url, httpx.Client(base_url=url) as http:
        view = http.get(f"/v1/executions/{execution_id}")
        assert view.status_code == 200, view.text
        assert view.json()["status"] == "waiting"
        assert view.json()["waiting_for"]["signals"][0]["name"] == "approve"
        assert http.get("/v1/executions/flow_doesnotexist").status_code == 404
        answer = {"payload": {"approved": True}, "request_id": "r1"}
        accepted = http.post(f"/v1/executions/{execution_id}/signals/approve", json=answer)
        assert accepted.status_code == 202, accepted.text
        done = wait_for_status(http, f"/v1/executions/{execution_id}", "completed", 20)
        assert done["status"] == "completed" and done["output"] == {"published": True}, done
        again = http.post(f"/v1/executions/{execution_id}/signals/approve", json=answer)
        assert again.status_code == 202, again.text  # the same request again: delivered once

    with serve(create_app(runtime_for(tmp_path), settings, adopt=True)) as url, httpx.Client(base_url=url) as http:
        final = http.get(f"/v1/executions/{execution_id}").json()
        assert final["status"] == "completed" and final["output"] == {"published": True}


async def test_a_restart_says_the_wait_once_more_and_nothing_else_again(tmp_path: Path) -> None:
    """The product log of an execution found after a restart goes on from the events the previous
    process kept: the wait is said once more (docs/service.md), not its start a second time (a found
    TriggerFlow execution says execution.started again; push channels sent it on with a new seq)."""
    async with runtime_for(tmp_path) as runtime:
        execution = await runtime.start("review", {"topic": "tides"})
        state = GatewayState(runtime)
        log = ProductHub(runtime, state=state).log(execution, new=True)
        with anyio.fail_after(20):
            await log.settled()
            while len(await state.product_events(execution.tenant, execution.id)) < len(log):
                await anyio.sleep(0.01)  # kept behind the log
        before = [(f.event.type, f.event.message) for f in log.frames]
        assert before == [("task.started", "started"), ("task.progress", "1 step done"), ("task.waiting", "publish this?")]  # fmt: skip

    async with runtime_for(tmp_path) as runtime:  # the next process, over the same store
        await runtime.adopt_executions()
        found = await runtime.find_execution(execution.id)
        log = ProductHub(runtime, state=GatewayState(runtime)).log(found)
        with anyio.fail_after(20):
            await log.ready.wait()
            while len(log) == log.restored:
                await log.changed()
        assert log.restored == len(before) and log.waiting_for is not None
        await found.signal("approve", {"approved": True}, request_id="r1")
        with anyio.fail_after(20):
            async for _ in log.follow():
                pass
        events = [(f.event.type, f.event.message) for f in log.frames]
        assert events[: len(before)] == before
        after = events[len(before) :]
        assert after[0] == ("task.waiting", "publish this?"), after
        assert ("task.started", "started") not in after and "task.waiting" not in [t for t, _ in after[1:]], after
        assert after[-1] == ("task.completed", "completed"), after
