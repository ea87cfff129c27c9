"""The gateway example: an agent drafts a brief, a reviewer approves it, a web page shows it all.

    python examples/gateway_app.py            # self-check: serve, run one task over HTTP, print it
    python examples/gateway_app.py --serve    # http://127.0.0.1:8000/ui/ (the page in examples/web/)

Offline: the agent's model is the kernel's ScriptedModel. ``review`` is a runnable written against the
kernel's Execution protocol only: it runs the ``brief`` agent (its instant fields reach the page as
``task.partial``), then waits for an ``approve`` signal (``task.waiting`` says how to answer).
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
from pydantic import BaseModel, Field

import keel
from keel.testing import Reply, ScriptedModel, make_host

WEB = Path(__file__).resolve().parent / "web"
APPROVE_SCHEMA = {
    "type": "object",
    "properties": {"approved": {"type": "boolean"}, "note": {"type": "string", "maxLength": 500}},
    "required": ["approved"],
    "additionalProperties": False,
}


class Brief(BaseModel):
    title: str = Field(description="a short title")
    summary: str = Field(description="two sentences")
    points: list[str] = Field(description="three key points")


brief = keel.Agent("brief", "Write a short brief about the user's topic.", output=Brief)


def scripted(delay: float) -> ScriptedModel:
    """Answers about whatever topic the user names, a few characters at a time."""

    def respond(request: keel.ModelRequest) -> Reply:
        topic = request.messages[-1].content.strip() or "nothing"
        answer = {
            "title": f"All about {topic}",
            "summary": f"{topic.capitalize()} are worth a look. This brief says why.",
            "points": [f"{topic} are interesting", f"{topic} are well studied", f"{topic} need care"],
        }
        return Reply(json.dumps(answer), chunks=4, delay=delay)

    return ScriptedModel(respond)


class ReviewExecution(keel.BaseExecution):
    """Draft with the agent, then wait for a human's ``approve`` signal. keel.BaseExecution keeps the
    Execution protocol's promises (ordered events for late readers, idempotent signals, cancel)."""

    kind = "review"

    def __init__(self, topic: str, runtime: keel.Runtime, tenant: str):
        super().__init__(runtime, tenant)
        self.topic = topic
        self._draft: keel.AgentExecution | None = None
        self._drafting = anyio.Event()

    async def instant(self, since: int = 0) -> AsyncIterator[keel.InstantEvent]:
        """The draft's instant events: the gateway shows them as task.partial."""
        while self._draft is None and not self.status.finished:
            await self._drafting.wait()
        if self._draft is not None:
            async for event in self._draft.instant(since):
                yield event

    async def body(self) -> dict[str, Any]:
        try:
            self.emit("review.progress", {"message": "drafting", "percent": 10})
            self._draft = await brief.start(self.topic, runtime=self.runtime, tenant=self.tenant)
        finally:
            self._drafting.set()
        draft = await self._draft.get_data()
        self.emit("review.progress", {"message": "draft ready", "percent": 60})
        answer = await self.wait_for("approve", {"message": "Publish this brief?", "schema": APPROVE_SCHEMA}) or {}
        return {"brief": draft.model_dump(), "approved": bool(answer.get("approved")), "note": answer.get("note", "")}


class Review:
    """The runnable: ``{"topic": ...}`` in, the approved brief out."""

    name = "review"
    kind = "review"
    description = "Draft a brief with an agent, then wait for approval"

    def input_schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {"topic": {"type": "string", "minLength": 1, "maxLength": 200}},
            "required": ["topic"],
            "additionalProperties": False,
        }

    def output_schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {
                "brief": Brief.model_json_schema(),
                "approved": {"type": "boolean"},
                "note": {"type": "string"},
            },
            "required": ["brief", "approved", "note"],
        }

    async def start(self, input: Any, *, runtime: keel.Runtime, tenant: str = "default") -> ReviewExecution:
        return ReviewExecution(input["topic"], runtime, tenant).launch()


def build_app(delay: float = 0.02, *, page: bool = True) -> Any:
    """The gateway app over a runtime holding ``brief`` and ``review``, serving the page at /ui/
    (``page=False``: the gateway's own console page instead)."""
    from keel_gateway import create_app

    runtime = keel.Runtime(make_host(), keel.Stack())
    runtime.use_model(scripted(delay))
    runtime.add(brief)
    runtime.add(Review())
    return create_app(runtime, {"static_dir": str(WEB)} if page else {})


def self_check() -> None:
    """Serve on a free port, run one review over HTTP and SSE, answer it, print what a UI saw."""
    from keel_gateway.testing import serve

    with serve(build_app(delay=0.0)) as url, httpx.Client(base_url=url, timeout=30) as http:
        execution = http.post("/v1/runnables/review/executions", json={"topic": "sea otters"}).json()
        answered = False
        with http.stream("GET", f"/v1/executions/{execution['id']}/events") as stream:
            for line in stream.iter_lines():
                if not line.startswith("data: "):
                    continue
                event = json.loads(line[6:])
                shown = event["data"] if event["type"] == "task.partial" else event["message"]
                print(f"#{event['seq']:<3} {event['type']:<15} {json.dumps(shown)[:70]}")
                if event["type"] == "task.waiting" and not answered:
                    answer = {"payload": {"approved": True, "note": "ship it"}, "request_id": "example-1"}
                    http.post(event["waiting_for"]["signals"][0]["answer"]["path"], json=answer).raise_for_status()
                    answered = True
        final = http.get(f"/v1/executions/{execution['id']}").json()
        print(json.dumps({"status": final["status"], "output": final["output"]}, indent=2))


if __name__ == "__main__":
    if "--serve" in sys.argv:
        import uvicorn

        print("open http://127.0.0.1:8000/ui/")
        uvicorn.run(build_app(), host="127.0.0.1", port=8000)
    else:
        self_check()
