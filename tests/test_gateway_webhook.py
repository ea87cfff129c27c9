"""Webhook deliveries against a real receiver on 127.0.0.1 that fails, times out, then succeeds."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
from test_gateway_support import KEYS, auth, build_runtime, write_stack

import keel_gateway.plugin
from keel_gateway import create_app, verify
from keel_gateway.testing import serve

HOOK_SECRET = "whsec-0123456789abcdef"


class Receiver:
    """An ASGI webhook receiver: 500 on the first try of a delivery, too slow on the second (it records
    the event, then answers after the sender gave up), 200 after that; it records each delivery once."""

    def __init__(self, mode: str = "flaky"):
        self.mode = mode
        self.attempts: list[dict[str, Any]] = []
        self.records: dict[str, dict[str, Any]] = {}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        delivery = headers["x-keel-delivery"]
        tries = sum(1 for a in self.attempts if a["delivery"] == delivery) + 1
        self.attempts.append(
            {
                "delivery": delivery,
                "attempt": int(headers["x-keel-attempt"]),
                "signed": verify(HOOK_SECRET, headers["x-keel-signature"], body),
                "forged": verify("wrong-secret", headers["x-keel-signature"], body),
            }
        )
        status = 200
        if self.mode == "down":
            status = 503
        elif tries == 1:
            status = 500
        else:
            if delivery not in self.records:  # deduplicate by delivery id: recorded once
                self.records[delivery] = json.loads(body)
            if tries == 2:
                await anyio.sleep(2.0)  # the sender's timeout is 0.5 s
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})


def webhook_stack(folder: Path, url: str, attempts: int) -> Path:
    extra = (
        "[settings.gateway.channels.webhook]\n"
        f'url = "{url}/hook"\nsecret = "{HOOK_SECRET}"\ntimeout = 0.5\nbackoff = 0.05\n'
        f'max_attempts = {attempts}\ntypes = ["task.completed"]\n'
    )
    return write_stack(folder, channels=["webhook"], extra=extra)


def wait_for(condition: Any, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the webhook"
        time.sleep(0.02)


def test_delivery_is_retried_signed_and_recorded_once(tmp_path: Path) -> None:
    receiver = Receiver()
    with serve(receiver) as hook_url:
        runtime, _ = build_runtime(webhook_stack(tmp_path, hook_url, attempts=4), keel_gateway.plugin)
        with serve(create_app(runtime)) as url:
            done = httpx.post(
                f"{url}/v1/runnables/brief/executions?wait=true", json="cats", headers=auth(KEYS["acme"]), timeout=30
            )
            assert done.json()["status"] == "completed", "the task finishes while its webhook still retries"
            eid = done.json()["id"]
            wait_for(lambda: len(receiver.attempts) >= 3)
            time.sleep(0.3)  # a fourth attempt, if the channel wrongly retried a success, would show up
            dead = asyncio.run(runtime.store().read("acme", "gateway.dead-letters"))
    assert [a["attempt"] for a in receiver.attempts] == [1, 2, 3]
    assert {a["delivery"] for a in receiver.attempts} == {f"{eid}.{done.json()['last_seq']}"}
    assert all(a["signed"] for a in receiver.attempts) and not any(a["forged"] for a in receiver.attempts)
    (record,) = receiver.records.values()
    assert record["type"] == "task.completed" and record["execution_id"] == eid
    assert record["data"] == {"title": "Cats", "points": ["they purr", "they nap"]}
    assert dead == []


def test_a_receiver_that_stays_down_leaves_a_dead_letter(tmp_path: Path) -> None:
    receiver = Receiver("down")
    with serve(receiver) as hook_url:
        runtime, _ = build_runtime(webhook_stack(tmp_path, hook_url, attempts=2), keel_gateway.plugin)
        with serve(create_app(runtime)) as url:
            done = httpx.post(
                f"{url}/v1/runnables/brief/executions?wait=true", json="cats", headers=auth(KEYS["acme"]), timeout=30
            )
            assert done.json()["status"] == "completed"
            records: list[Any] = []

            def dead_lettered() -> bool:
                records[:] = asyncio.run(runtime.store().read("acme", "gateway.dead-letters"))
                return bool(records)

            wait_for(dead_lettered)
    (letter,) = records
    assert letter.data["channel"] == "webhook"
    assert letter.data["event"]["execution_id"] == done.json()["id"]
    assert letter.data["attempts"] == [{"attempt": 1, "status": 503}, {"attempt": 2, "status": 503}]
    assert len(receiver.attempts) == 2
