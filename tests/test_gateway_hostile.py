"""Hostile input against the gateway over real HTTP: every malformed request is a 4xx naming the
cause, and one runnable that crashes fails only its own execution (the service goes on)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import httpx
import pytest
from test_gateway_support import KEYS, auth, build_runtime, running, write_stack

import keel

TIMEOUT = httpx.Timeout(30.0)


class NapExecution:
    """A third-party execution that sleeps for what its input says, trusting it."""

    kind = "nap"

    def __init__(self, seconds: Any, tenant: str):
        self.id = keel.new_id("nap")
        self.tenant = tenant
        self.seconds = seconds
        self._status = keel.ExecutionStatus.RUNNING
        self.log: keel.EventLog[keel.RuntimeEvent] = keel.EventLog()
        self.done = anyio.Event()
        self._emit("execution.started")

    def _emit(self, kind: str) -> None:
        self.log.append(keel.RuntimeEvent(kind=kind, execution_id=self.id, tenant=self.tenant, seq=len(self.log) + 1))

    @property
    def status(self) -> keel.ExecutionStatus:
        return self._status

    async def run(self) -> None:
        await anyio.sleep(self.seconds)  # a string raises TypeError here: the author never expected it
        self._status = keel.ExecutionStatus.COMPLETED
        self._emit("execution.completed")
        self.done.set()

    def events(self, since: int = 0) -> AsyncIterator[keel.RuntimeEvent]:
        return self.log.follow(since, lambda: self._status.finished)

    async def result(self) -> Any:
        await self.done.wait()
        return "rested"

    async def signal(self, name: str, payload: Any = None, *, request_id: str | None = None) -> None:
        raise keel.ConflictError("a nap takes no signal")

    async def cancel(self, reason: str = "cancelled") -> None:
        self._status = keel.ExecutionStatus.CANCELLED
        self.log.notify()


class Nap:
    name = "nap"
    kind = "nap"
    description = "sleeps for input.seconds"

    def input_schema(self) -> dict[str, Any]:
        return {"type": "object", "properties": {"seconds": {}}, "required": ["seconds"]}

    def output_schema(self) -> dict[str, Any]:
        return {"type": "string"}

    async def start(self, input: Any, *, runtime: keel.Runtime, tenant: str = "default") -> keel.Execution:
        execution = NapExecution(input["seconds"], tenant)
        runtime.task_group.start_soon(execution.run)
        return execution


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    runtime, _ = build_runtime(write_stack(tmp_path_factory.mktemp("stack"), max_body=200_000))
    runtime.add(Nap())
    with running(runtime) as url:
        yield url


@pytest.fixture
def client(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=TIMEOUT, headers=auth(KEYS["acme"])) as c:
        yield c


def wait_finished(client: httpx.Client, eid: str) -> dict[str, Any]:
    for _ in range(500):  # bounded: 10 s at most
        view = client.get(f"/v1/executions/{eid}").json()
        if view["status"] in ("completed", "failed", "cancelled"):
            return view  # type: ignore[no-any-return]
        time.sleep(0.02)
    raise AssertionError(f"execution {eid} did not finish")


def test_a_crashing_runnable_fails_only_its_execution(client: httpx.Client) -> None:
    slow = client.post("/v1/runnables/nap/executions", json={"seconds": 0.5}).json()["id"]
    bad = client.post("/v1/runnables/nap/executions", json={"seconds": "forever"})
    assert bad.status_code == 202
    view = wait_finished(client, bad.json()["id"])
    assert view["status"] == "failed" and view["error"]["code"] == "error"
    events = client.get(f"/v1/executions/{view['id']}/events").text
    assert "task.failed" in events, "the stream of the crashed execution ends"
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    again = client.post("/v1/runnables/nap/executions", params={"wait": "true"}, json={"seconds": 0})
    assert again.status_code == 200 and again.json()["output"] == "rested", "the runtime still starts work"
    assert wait_finished(client, slow)["status"] == "completed", "what ran before the crash finishes"


async def test_healthz_reports_a_runtime_that_cannot_start_work(tmp_path: Any) -> None:
    from keel_gateway import create_app

    runtime, _ = build_runtime(write_stack(tmp_path))
    app = create_app(runtime)  # its lifespan never ran: the runtime is not started
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        response = await client.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "detail": "the runtime is not started"}


@pytest.mark.parametrize(
    "body",
    [
        b'{"seconds": NaN}',
        b'{"seconds": Infinity}',
        b'{"seconds": -Infinity}',
        b'{"seconds": 1e999}',
        b'{"seconds": ' + b"[" * 2000 + b"]" * 2000 + b"}",
        b'{"seconds": ' + b'{"a":' * 100 + b"1" + b"}" * 100 + b"}",
        b'{"seconds": ' + b"9" * 5000 + b"}",
        b'{"seconds": "\xff"}',
    ],
    ids=["nan", "infinity", "minus-infinity", "overflow", "deep-2000", "deep-100", "huge-int", "bad-utf8"],
)
def test_malformed_json_is_a_422_on_every_body(client: httpx.Client, body: bytes) -> None:
    headers = {"Content-Type": "application/json"}
    started = client.post("/v1/runnables/nap/executions", content=body, headers=headers)
    assert started.status_code == 422, started.text
    assert started.json()["error"]["code"] == "invalid_request"
    eid = client.post("/v1/runnables/approval/executions", json={"topic": "cats"}).json()["id"]
    signal_body = body.replace(b'{"seconds": ', b'{"payload": ', 1)
    signalled = client.post(f"/v1/executions/{eid}/signals/approve", content=signal_body, headers=headers)
    assert signalled.status_code == 422, signalled.text
    cancel_body = body.replace(b'{"seconds": ', b'{"reason": ', 1)
    assert client.post(f"/v1/executions/{eid}/cancel", content=cancel_body, headers=headers).status_code == 422


def test_nan_names_the_cause(client: httpx.Client) -> None:
    response = client.post("/v1/runnables/nap/executions", content=b'{"seconds": NaN}')
    assert "NaN is not allowed" in response.json()["error"]["message"]
    deep = client.post("/v1/runnables/nap/executions", content=b"[" * 2000 + b"]" * 2000)
    assert "nested deeper than 64 levels" in deep.json()["error"]["message"]


@pytest.mark.parametrize("value", ["²", "abc", "-1", "1.5", "\u0661", "9" * 40])
def test_a_malformed_last_event_id_is_a_422(client: httpx.Client, value: str) -> None:
    eid = client.post("/v1/runnables/nap/executions", json={"seconds": 0}).json()["id"]
    raw = value.encode("latin-1") if all(ord(c) < 256 for c in value) else value.encode()  # as a client sends it
    response = client.get(f"/v1/executions/{eid}/events", headers={"Last-Event-ID": raw})  # type: ignore[dict-item]
    assert response.status_code == 422 and "Last-Event-ID" in response.json()["error"]["message"]


@pytest.mark.parametrize("value", ["²", "x", "-3"])
def test_a_malformed_websocket_after_is_a_4422_close(server: str, client: httpx.Client, value: str) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    eid = client.post("/v1/runnables/nap/executions", json={"seconds": 0}).json()["id"]
    url = server.replace("http://", "ws://") + f"/v1/executions/{eid}/ws"

    async def close_code() -> int | None:
        async with asyncio.timeout(30):
            try:
                async with connect(url, additional_headers=auth(KEYS["acme"])) as ws:
                    await ws.recv()
            except ConnectionClosed as closed:
                return closed.rcvd.code if closed.rcvd else None
        return None

    url = str(httpx.URL(url, params={"after": value}))
    assert asyncio.run(close_code()) == 4422


def test_a_websocket_message_with_nan_is_an_error_reply(server: str, client: httpx.Client) -> None:
    import json

    from websockets.asyncio.client import connect

    eid = client.post("/v1/runnables/approval/executions", json={"topic": "cats"}).json()["id"]
    url = server.replace("http://", "ws://") + f"/v1/executions/{eid}/ws"

    async def reply() -> dict[str, Any]:
        async with asyncio.timeout(30), connect(url, additional_headers=auth(KEYS["acme"])) as ws:
            await ws.send('{"type": "signal", "name": "approve", "payload": NaN}')
            while True:
                message = json.loads(await ws.recv())
                if message.get("type") == "error":
                    return message  # type: ignore[no-any-return]

    answer = asyncio.run(reply())
    assert answer["code"] == "invalid_request" and "NaN" in answer["message"]
