"""Shared pieces of the gateway tests (no tests here): a runnable that waits for a signal, a stack,
a scripted model, tokens, and a server fixture factory. Real uvicorn on 127.0.0.1, real clients."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jwt

import keel
from keel import RuntimeEvent
from keel.testing import Reply, ScriptedModel, make_host

APPROVE_SCHEMA = {
    "type": "object",
    "properties": {"approved": {"type": "boolean"}, "note": {"type": "string", "maxLength": 200}},
    "required": ["approved"],
    "additionalProperties": False,
}
SECRET = "test-secret-of-at-least-thirty-two-bytes!"
KEYS = {"acme": "key-acme-0123456789", "globex": "key-globex-0123456789", "reader": "key-reader-0123456789"}


class WaitingExecution(keel.BaseExecution):
    """Reports progress, waits for an 'approve' signal, then completes (keel.BaseExecution does the
    protocol's bookkeeping)."""

    kind = "task"

    def __init__(self, topic: str, runtime: keel.Runtime, tenant: str):
        super().__init__(runtime, tenant)
        self.topic = topic
        self.delivered: list[Any] = []

    def emit(self, kind: str, payload: dict[str, Any] | None = None) -> RuntimeEvent:
        if kind == "execution.started":  # a payload the product projection must never show
            payload = {"internal": "never shown"}
        return super().emit(kind, payload)

    async def body(self) -> dict[str, Any]:
        self.emit("work.progress", {"message": "draft ready", "percent": 50, "secret_path": "step.a.b"})
        question = {"message": f"Publish the note about {self.topic}?", "schema": APPROVE_SCHEMA}
        answer = await self.wait_for("approve", question, id="i1", path="chunk.x")
        self.delivered.append(answer)
        self.emit("work.progress", {"message": "answer received", "percent": 90})
        return {"topic": self.topic, "approved": bool(answer.get("approved")), "note": answer.get("note", "")}


class WaitingTask:
    """A runnable whose executions wait for approval (before TriggerFlow lands)."""

    kind = "task"

    def __init__(self, name: str = "approval"):
        self.name = name
        self.description = "Prepare a note, then wait for approval"
        self.started: list[WaitingExecution] = []

    def input_schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {"topic": {"type": "string", "minLength": 1, "maxLength": 100}},
            "required": ["topic"],
            "additionalProperties": False,
        }

    def output_schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {"topic": {"type": "string"}, "approved": {"type": "boolean"}, "note": {"type": "string"}},
            "required": ["topic", "approved", "note"],
            "additionalProperties": False,
        }

    async def start(self, input: Any, *, runtime: keel.Runtime, tenant: str = "default") -> WaitingExecution:
        execution = WaitingExecution(input["topic"], runtime, tenant).launch()
        self.started.append(execution)
        return execution


def responder(request: keel.ModelRequest) -> Reply:
    """Valid JSON for any task; slowly for 'slow', never valid for 'bad'."""
    task = " ".join(m.content for m in request.messages if m.role == "user")
    if "bad" in task:
        return Reply('{"title": 5}', chunks=4)
    text = '{"title": "Cats", "points": ["they purr", "they nap"]}'
    if "slow" in task:
        return Reply(text, chunks=2, delay=0.05)
    return Reply(text, chunks=3)


def brief() -> keel.Agent:
    return keel.Agent(
        "brief",
        "Write a brief.",
        output={"title": (str, "the title"), "points": (list[str], "key points")},
        max_retries=1,
    )


def token(tenant: str, scopes: str = "run read signal cancel", *, secret: str = SECRET, ttl: float = 600) -> str:
    claims = {"sub": f"user-{tenant}", "tenant": tenant, "scope": scopes, "exp": int(time.time() + ttl)}
    return jwt.encode(claims, secret, algorithm="HS256")


def auth(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def write_stack(folder: Path, *, channels: list[str] | None = None, extra: str = "", max_body: int = 4096) -> Path:
    lines = []
    if channels is not None:
        lines.append("channels = [" + ", ".join(f'"{c}"' for c in channels) + "]")
    lines += [
        "[settings.gateway]",
        f'jwt_secret = "{SECRET}"',
        "rate_limit_per_minute = 6000",
        "rate_limit_burst = 1000",
        f"max_body_bytes = {max_body}",
        'cors_origins = ["http://ui.example"]',
        "keepalive_seconds = 0.5",
    ]
    for tenant, key in KEYS.items():
        scopes = '["read"]' if tenant == "reader" else '["*"]'
        lines += [
            "[[settings.gateway.api_keys]]",
            f'key = "{key}"',
            f'tenant = "{"acme" if tenant == "reader" else tenant}"',
            f"scopes = {scopes}",
        ]
    path = folder / "keel.toml"
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def build_runtime(stack_file: Path, *plugins: object) -> tuple[keel.Runtime, WaitingTask]:
    runtime = keel.Runtime(make_host(*plugins), keel.load_stack(stack_file))
    runtime.use_model(ScriptedModel(responder))
    runtime.add(brief())
    task = WaitingTask()
    runtime.add(task)
    return runtime, task


@contextmanager
def running(runtime: keel.Runtime) -> Iterator[str]:
    from keel_gateway import create_app
    from keel_gateway.testing import serve

    with serve(create_app(runtime)) as url:
        yield url


def sse_events(text: str) -> list[dict[str, str]]:
    """Parse an SSE body into frames with id, event and data (comments dropped)."""
    frames = []
    for block in text.split("\n\n"):
        frame: dict[str, str] = {}
        for line in block.splitlines():
            if line.startswith(":") or ":" not in line:
                continue
            field, _, value = line.partition(":")
            frame[field] = value[1:] if value.startswith(" ") else value
        if "data" in frame:
            frames.append(frame)
    return frames
