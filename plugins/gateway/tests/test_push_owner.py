"""Who pushes an execution's product events to the push channels (the webhook): the process that
started it. A gateway pushes the executions it started (and, after a restart, those a gateway
started: tests/test_gateway_serve_restart.py); one that another process started, a worker's job
say, is pushed by that process, so a gateway that only shows it to a page must not push it too
(each event would reach the receiver twice, under two delivery ids)."""

from __future__ import annotations

import anyio
import httpx

import keel
from keel.testing import Reply, ScriptedModel, make_host
from keel_gateway import create_app


class Recording:
    """A push channel that keeps what it is sent."""

    name = "recording"

    def __init__(self) -> None:
        self.events: list[keel.ProductEvent] = []

    async def send(self, event: keel.ProductEvent) -> None:
        self.events.append(event)

    async def aclose(self) -> None:
        return None


async def test_a_gateway_pushes_what_it_started_and_not_what_it_only_follows() -> None:
    brief = keel.Agent("brief", "Write.", output={"title": (str, "t")})
    async with keel.Runtime(make_host(), keel.Stack()) as runtime:
        runtime.use_model(ScriptedModel([Reply('{"title": "Otters"}', chunks=4, delay=0.02)] * 2))
        runtime.add(brief)
        app = create_app(runtime, {})
        pushed = Recording()
        app.state.gateway.dispatcher.channels = [pushed]
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as http:
            # started by another part of the system (a worker's job: its own channels push it); a page
            # follows it through the gateway while it runs, twice at once, and to its end
            elsewhere = await runtime.start(brief, "x")
            seen = [await http.get(f"/v1/executions/{elsewhere.id}") for _ in range(2)]
            assert [r.status_code for r in seen] == [200, 200] and seen[0].json()["status"] == "running"
            events = await http.get(f"/v1/executions/{elsewhere.id}/events")
            assert "event: task.completed" in events.text, "the page sees every product event (pull)"
            # started through the gateway: the gateway pushes it, each event once
            started = await http.post("/v1/runnables/brief/executions?wait=true", json="x")
            mine = started.json()["id"]
            with anyio.fail_after(10):
                while not any(e.type == "task.completed" for e in pushed.events):
                    await anyio.sleep(0.01)
    assert {e.execution_id for e in pushed.events} == {mine}, "only what this gateway started is pushed"
    seqs = [e.seq for e in pushed.events]
    assert seqs == sorted(set(seqs)) and pushed.events[0].type == "task.started"
