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
from keel import ExecutionStatus, RuntimeEvent
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


class ReviewExecution:
    """Draft with the agent, then wait for a human's ``approve`` signal (implements keel.Execution)."""

    kind = "review"

    def __init__(self, topic: str, runtime: keel.Runtime, tenant: str):
        self.id = keel.new_id("exe")
        self.topic, self.runtime, self.tenant = topic, runtime, tenant
        self._status = ExecutionStatus.PENDING
        self._events: keel.EventLog[RuntimeEvent] = keel.EventLog()
        self._drafting = anyio.Event()
        self._answered = anyio.Event()
        self._done = anyio.Event()
        self._scope = anyio.CancelScope()
        self._answers: dict[str, Any] = {}
        self._answer: Any = None
        self._draft: keel.AgentExecution | None = None
        self._result: Any = None
        self._error: BaseException | None = None
        self._reason = ""

    @property
    def status(self) -> ExecutionStatus:
        return self._status

    def _emit(self, kind: str, payload: dict[str, Any]) -> None:
        event = RuntimeEvent(
            kind=kind, execution_id=self.id, seq=len(self._events) + 1, tenant=self.tenant, payload=payload
        )
        self._events.append(event)
        self.runtime.publish(event)

    def events(self, since: int = 0) -> AsyncIterator[RuntimeEvent]:
        return self._events.follow(since, lambda: self._status.finished)

    async def instant(self, since: int = 0) -> AsyncIterator[keel.InstantEvent]:
        """The draft's instant events: the gateway shows them as task.partial."""
        while self._draft is None and not self._status.finished:
            await self._drafting.wait()
        if self._draft is not None:
            async for event in self._draft.instant(since):
                yield event

    async def result(self) -> Any:
        await self._done.wait()
        if self._error is not None:
            raise self._error
        return self._result

    async def signal(self, name: str, payload: Any = None, *, request_id: str | None = None) -> None:
        if request_id is not None and request_id in self._answers:
            if self._answers[request_id] != payload:
                raise keel.ConflictError(f"request {request_id!r} was already answered with another payload")
            return
        if name != "approve" or self._status is not ExecutionStatus.WAITING:
            raise keel.KeelError(f"review {self.id} is not waiting for {name!r}")
        self._answers[request_id or keel.new_id("req")] = payload
        self._answer = payload
        self._answered.set()

    async def cancel(self, reason: str = "cancelled") -> None:
        if not self._status.finished:
            self._reason = reason
            self._scope.cancel()
            await self._done.wait()

    def _finish(self, status: ExecutionStatus, error: BaseException | None = None) -> None:
        self._status, self._error = status, error
        payload = {}
        if error is not None:  # the protocol's user-safe reason, and the error for the logs
            reason = str(error) if status is ExecutionStatus.CANCELLED else f"{type(error).__name__}: {error}"
            payload = {"reason": reason, "error": f"{type(error).__name__}: {error}"}
        self._emit(f"execution.{status.value}", payload)
        self._done.set()

    async def run(self) -> None:
        try:
            with self._scope:
                self._status = ExecutionStatus.RUNNING
                self._emit("execution.started", {})
                self._emit("review.progress", {"message": "drafting", "percent": 10})
                self._draft = await brief.start(self.topic, runtime=self.runtime, tenant=self.tenant)
                self._drafting.set()
                draft = await self._draft.get_data()
                self._emit("review.progress", {"message": "draft ready", "percent": 60})
                self._status = ExecutionStatus.WAITING
                question = {"message": "Publish this brief?", "schema": APPROVE_SCHEMA}
                self._emit("execution.waiting", {"interrupts": [{"name": "approve", "payload": question}]})
                await self._answered.wait()
                self._status = ExecutionStatus.RUNNING
                answer = self._answer or {}
                self._result = {
                    "brief": draft.model_dump(),
                    "approved": bool(answer.get("approved")),
                    "note": answer.get("note", ""),
                }
                self._finish(ExecutionStatus.COMPLETED)
        except Exception as err:  # the execution's failure is its result
            self._finish(ExecutionStatus.FAILED, err)
        finally:
            self._drafting.set()
            if not self._status.finished:
                self._finish(ExecutionStatus.CANCELLED, keel.ExecutionCancelled(self._reason or "runtime closed"))


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
        execution = ReviewExecution(input["topic"], runtime, tenant)
        runtime.executions.add(execution)
        runtime.task_group.start_soon(execution.run)
        return execution


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
