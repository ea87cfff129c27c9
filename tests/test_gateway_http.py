"""The gateway over real HTTP: uvicorn on 127.0.0.1, httpx and websockets as clients."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_gateway_support import KEYS, SECRET, auth, build_runtime, running, sse_events, token, write_stack

import keel
from keel import ChannelSpec, ProductEvent

TIMEOUT = httpx.Timeout(30.0)
LEAKS = (
    "model.delta",
    "execution.",
    "secret_path",
    "chunk.x",
    "internal",
    "interrupts",
    '"i1"',
    "OutputValidationError",
)


class FlakyChannel:
    """A channel that always fails: the task must not notice."""

    name = "flaky"
    calls = 0
    loop: asyncio.AbstractEventLoop | None = None

    def __init__(self, options: dict[str, Any]):
        pass

    async def send(self, event: ProductEvent) -> None:
        FlakyChannel.calls += 1
        FlakyChannel.loop = asyncio.get_running_loop()
        raise RuntimeError("the IM service is down")

    async def aclose(self) -> None:
        pass


class FlakyPlugin:
    @keel.hookimpl
    def keel_channels(self) -> list[ChannelSpec]:
        return [ChannelSpec(name="flaky", factory=FlakyChannel)]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, keel.Runtime, Any]]:
    import keel_gateway.plugin

    stack = write_stack(tmp_path_factory.mktemp("stack"), channels=["console", "flaky"])
    runtime, task = build_runtime(stack, keel_gateway.plugin, FlakyPlugin())
    with running(runtime) as url:
        yield url, runtime, task


@pytest.fixture
def client(server: tuple[str, keel.Runtime, Any]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server[0], timeout=TIMEOUT, headers=auth(KEYS["acme"])) as c:
        yield c


def read_sse(client: httpx.Client, execution_id: str, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    with client.stream("GET", f"/v1/executions/{execution_id}/events", headers=headers or {}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        body = response.read().decode()
    frames = sse_events(body)
    for frame in frames:
        assert not any(leak in frame["data"] for leak in LEAKS), frame
    return [{"id": int(f["id"]), "event": f["event"], **json.loads(f["data"])} for f in frames]


def test_start_with_wait_returns_the_validated_output(client: httpx.Client) -> None:
    response = client.post("/v1/runnables/brief/executions", params={"wait": "true"}, json="cats")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "completed"
    assert body["runnable"] == "brief"
    assert body["output"] == {"title": "Cats", "points": ["they purr", "they nap"]}
    assert client.get(body["links"]["self"]).json()["output"] == body["output"]


def test_input_is_validated_against_the_runnable_schema(client: httpx.Client) -> None:
    bad = client.post("/v1/runnables/approval/executions", json={"topic": ""})
    assert bad.status_code == 422
    assert bad.json()["error"]["code"] == "invalid_request"
    assert "topic" in bad.json()["error"]["message"]
    assert client.post("/v1/runnables/brief/executions", json=5).status_code == 422
    assert client.post("/v1/runnables/brief/executions", content=b"{not json").status_code == 422
    missing = client.post("/v1/runnables/nobody/executions", json="x")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_sse_streams_product_events_and_resumes_from_last_event_id(client: httpx.Client) -> None:
    started = client.post("/v1/runnables/brief/executions", json="slow cats")
    assert started.status_code == 202
    eid = started.json()["id"]
    first: list[dict[str, Any]] = []
    with client.stream("GET", f"/v1/executions/{eid}/events") as response:
        for frame in sse_events_iter(response.iter_lines()):
            first.append(frame)
            if len(first) == 3:
                break  # the client goes away mid-stream
    rest = read_sse(client, eid, {"Last-Event-ID": str(first[-1]["id"])})
    whole = read_sse(client, eid)
    joined = [e["id"] for e in first] + [e["id"] for e in rest]
    assert joined == list(range(1, len(whole) + 1)), "no event lost or repeated across the reconnect"
    assert [e["seq"] for e in whole] == [e["id"] for e in whole]
    assert [e["type"] for e in first] + [e["type"] for e in rest] == [e["type"] for e in whole]
    types = [e["type"] for e in whole]
    assert types[0] == "task.started" and types[-1] == "task.completed"
    partial_titles = [
        e["data"]["value"] for e in whole if e["type"] == "task.partial" and e["data"]["field"] == "title"
    ]
    assert partial_titles[-1] == "Cats" and len(partial_titles) > 1, "the title streams in pieces"
    assert whole[-1]["data"] == {"title": "Cats", "points": ["they purr", "they nap"]}
    after = read_sse(client, eid, {"Last-Event-ID": str(len(whole))})
    assert after == []


def sse_events_iter(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    frame: dict[str, str] = {}
    for line in lines:
        if not line:
            if "data" in frame:
                yield {"id": int(frame["id"]), "event": frame["event"], **json.loads(frame["data"])}
            frame = {}
        elif not line.startswith(":") and ":" in line:
            key, _, value = line.partition(":")
            frame[key] = value.lstrip(" ")


def test_waiting_state_is_shown_and_answered_once(client: httpx.Client, server: tuple[str, keel.Runtime, Any]) -> None:
    task = server[2]
    waiting = client.post("/v1/runnables/approval/executions", params={"wait": "true"}, json={"topic": "cats"})
    assert waiting.status_code == 202, waiting.text
    view = waiting.json()
    assert view["status"] == "waiting"
    (signal,) = view["waiting_for"]["signals"]
    assert signal["name"] == "approve"
    assert signal["message"] == "Publish the note about cats?"
    assert signal["schema"]["required"] == ["approved"]
    assert signal["answer"]["path"] == f"/v1/executions/{view['id']}/signals/approve"
    url = signal["answer"]["path"]
    bad = client.post(url, json={"payload": {"approved": "yes"}, "request_id": "r1"})
    assert bad.status_code == 422, "the answer is checked against the schema task.waiting announced"
    first = client.post(url, json={"payload": {"approved": True, "note": "ok"}, "request_id": "r1"})
    assert first.status_code == 202, first.text
    again = client.post(url, json={"payload": {"approved": True, "note": "ok"}, "request_id": "r1"})
    assert again.status_code == 202
    other = client.post(url, json={"payload": {"approved": False}, "request_id": "r1"})
    assert other.status_code == 409
    events = read_sse(client, view["id"])
    types = [e["type"] for e in events]
    assert types == ["task.started", "task.progress", "task.waiting", "task.progress", "task.completed"]
    assert events[1]["percent"] == 50.0 and events[1]["message"] == "draft ready"
    assert events[-1]["data"] == {"topic": "cats", "approved": True, "note": "ok"}
    execution = next(e for e in task.started if e.id == view["id"])
    assert execution.delivered == [{"approved": True, "note": "ok"}], "delivered exactly once"
    late = client.post(url, json={"payload": {"approved": True}, "request_id": "r2"})
    assert late.status_code == 409


def test_websocket_follows_and_answers(server: tuple[str, keel.Runtime, Any], client: httpx.Client) -> None:
    from websockets.asyncio.client import connect

    eid = client.post("/v1/runnables/approval/executions", json={"topic": "dogs"}).json()["id"]
    ws_url = server[0].replace("http://", "ws://") + f"/v1/executions/{eid}/ws"

    async def follow() -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        async with asyncio.timeout(30):
            async with connect(ws_url, additional_headers=auth(token("acme"))) as ws:
                async for text in ws:
                    message = json.loads(text)
                    seen.append(message)
                    if message["type"] == "task.waiting":
                        await ws.send(
                            json.dumps(
                                {
                                    "type": "signal",
                                    "name": "approve",
                                    "payload": {"approved": False},
                                    "request_id": "w1",
                                }
                            )
                        )
                assert ws.close_code == 1000
        return seen

    seen = asyncio.run(follow())
    types = [m["type"] for m in seen]
    assert "ack" in types
    product = [m for m in seen if m["type"].startswith("task.")]
    assert [m["seq"] for m in product] == list(range(1, len(product) + 1))
    assert product[-1]["type"] == "task.completed" and product[-1]["data"]["approved"] is False


def test_websocket_refuses_other_tenants_and_strangers(
    server: tuple[str, keel.Runtime, Any], client: httpx.Client
) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    eid = client.post("/v1/runnables/brief/executions", json="cats").json()["id"]
    ws_url = server[0].replace("http://", "ws://") + f"/v1/executions/{eid}/ws"

    async def code(headers: dict[str, str]) -> int | None:
        async with asyncio.timeout(30):
            try:
                async with connect(ws_url, additional_headers=headers) as ws:
                    await ws.recv()
            except ConnectionClosed as closed:
                return closed.rcvd.code if closed.rcvd else None
        return None

    assert asyncio.run(code(auth(KEYS["globex"]))) == 4404
    assert asyncio.run(code({})) == 4401


def test_cancel_ends_with_a_safe_failure(client: httpx.Client) -> None:
    eid = client.post("/v1/runnables/approval/executions", json={"topic": "cats"}).json()["id"]
    cancelled = client.post(f"/v1/executions/{eid}/cancel", json={"reason": "changed my mind"})
    assert cancelled.status_code == 202
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["error"]["code"] == "cancelled"
    events = read_sse(client, eid)
    assert events[-1]["type"] == "task.failed" and events[-1]["data"] == {"code": "cancelled"}
    again = client.post(f"/v1/executions/{eid}/cancel")
    assert again.status_code == 202 and again.json()["status"] == "cancelled"


def test_a_failed_task_reports_a_user_safe_reason(client: httpx.Client) -> None:
    body = client.post("/v1/runnables/brief/executions", params={"wait": "true"}, json="bad").json()
    assert body["status"] == "failed"
    assert body["error"] == {"code": "invalid_output", "message": "the answer did not match the expected format"}
    events = read_sse(client, body["id"])
    assert events[-1]["type"] == "task.failed"
    assert any(e["type"] == "task.partial" and e["data"] == {"reset": True} for e in events), "retried fields dropped"


def test_keys_tokens_and_scopes(server: tuple[str, keel.Runtime, Any], client: httpx.Client) -> None:
    url = server[0]
    eid = client.post("/v1/runnables/brief/executions", json="cats").json()["id"]
    with httpx.Client(base_url=url, timeout=TIMEOUT) as anon:
        missing = anon.get(f"/v1/executions/{eid}")
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert anon.get(f"/v1/executions/{eid}", headers=auth("not-a-key")).status_code == 401
        assert anon.get(f"/v1/executions/{eid}", headers=auth(token("acme", ttl=-60))).status_code == 401
        forged = token("acme", secret="another-secret-of-at-least-32-bytes")
        assert anon.get(f"/v1/executions/{eid}", headers=auth(forged)).status_code == 401
        assert anon.get(f"/v1/executions/{eid}", headers=auth(token("acme"))).status_code == 200
        assert anon.get(f"/v1/executions/{eid}", headers={"X-API-Key": KEYS["acme"]}).status_code == 200
        assert anon.get(f"/v1/executions/{eid}", params={"access_token": KEYS["acme"]}).status_code == 200
        reader = auth(KEYS["reader"])
        assert anon.get(f"/v1/executions/{eid}", headers=reader).status_code == 200, "same tenant, read scope"
        denied = anon.post("/v1/runnables/brief/executions", json="cats", headers=reader)
        assert denied.status_code == 403 and denied.json()["error"]["code"] == "forbidden"
        assert anon.post(f"/v1/executions/{eid}/cancel", headers=reader).status_code == 403
        assert (
            anon.post("/v1/runnables/brief/executions", json="x", headers=auth(token("acme", "read"))).status_code
            == 403
        )
        assert anon.get(f"/v1/executions/{eid}", headers=auth(KEYS["globex"])).status_code == 404


def test_idempotency_key_starts_one_execution(client: httpx.Client) -> None:
    headers = {"Idempotency-Key": "order-17"}
    first = client.post("/v1/runnables/brief/executions", json="cats", headers=headers).json()["id"]
    second = client.post("/v1/runnables/brief/executions", json="cats", headers=headers).json()["id"]
    assert first == second
    other = httpx.post(
        str(client.base_url).rstrip("/") + "/v1/runnables/brief/executions",
        json="cats",
        headers={**headers, **auth(KEYS["globex"])},
    )
    assert other.json()["id"] != first, "keys are per tenant"


def test_request_size_limit(client: httpx.Client) -> None:
    big = client.post("/v1/runnables/brief/executions", json="x" * 10_000)
    assert big.status_code == 413 and big.json()["error"]["code"] == "too_large"

    def chunks() -> Iterator[bytes]:
        yield b'"'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"'

    streamed = client.post(
        "/v1/runnables/brief/executions", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert streamed.status_code == 413


def test_cors_from_the_stack(server: tuple[str, keel.Runtime, Any]) -> None:
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    allowed = httpx.options(
        f"{server[0]}/v1/runnables/brief/executions", headers={"Origin": "http://ui.example", **preflight}
    )
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "http://ui.example"
    refused = httpx.options(
        f"{server[0]}/v1/runnables/brief/executions", headers={"Origin": "http://evil.example", **preflight}
    )
    assert "access-control-allow-origin" not in refused.headers


def test_openapi_carries_the_runnables_schemas(client: httpx.Client) -> None:
    doc = client.get("/openapi.json").json()
    start = doc["paths"]["/v1/runnables/approval/executions"]["post"]
    assert start["requestBody"]["content"]["application/json"]["schema"]["required"] == ["topic"]
    result = doc["components"]["schemas"]["BriefResult"]
    output = result["allOf"][1]["properties"]["output"]["anyOf"][0]
    assert set(output["properties"]) == {"title", "points"}
    assert "/v1/executions/{execution_id}/signals/{name}" in doc["paths"]


def test_a_failing_channel_never_fails_the_task(
    client: httpx.Client, server: tuple[str, keel.Runtime, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    before = FlakyChannel.calls
    body = client.post("/v1/runnables/brief/executions", params={"wait": "true"}, json="cats").json()
    assert body["status"] == "completed"
    read_sse(client, body["id"])  # the log is complete; deliveries run beside it
    runtime = server[1]

    async def dead_letters() -> list[Any]:
        for _ in range(200):
            records = await runtime.store().read("acme", "gateway.dead-letters")
            mine = [r.data for r in records if r.data["event"]["execution_id"] == body["id"]]
            if mine and mine[-1]["event"]["type"] == "task.completed":
                return mine
            await asyncio.sleep(0.02)
        return mine

    assert FlakyChannel.loop is not None
    records = asyncio.run_coroutine_threadsafe(dead_letters(), FlakyChannel.loop).result(30)
    assert FlakyChannel.calls > before
    assert {r["channel"] for r in records} == {"flaky"}
    assert records[-1]["error"] == "RuntimeError: the IM service is down"
    assert body["id"] in capsys.readouterr().out, "the console channel printed the task"


def test_rate_limit_per_key(tmp_path: Path) -> None:
    from keel_gateway import create_app
    from keel_gateway.testing import serve

    runtime, _ = build_runtime(write_stack(tmp_path))
    settings = {
        "api_keys": [{"key": "k1", "tenant": "t"}, {"key": "k2", "tenant": "t"}],
        "rate_limit_burst": 3,
        "rate_limit_per_minute": 1,
    }
    with serve(create_app(runtime, settings)) as url:
        codes = [httpx.get(f"{url}/v1/runnables", headers=auth("k1")).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        limited = httpx.get(f"{url}/v1/runnables", headers=auth("k1"))
        assert int(limited.headers["retry-after"]) >= 1
        assert httpx.get(f"{url}/v1/runnables", headers=auth("k2")).status_code == 200, "limits are per key"


def test_token_secret_is_required_for_tokens(tmp_path: Path) -> None:
    assert SECRET  # the module server trusts SECRET; a server without a secret refuses tokens
    from keel_gateway import create_app
    from keel_gateway.testing import serve

    runtime, _ = build_runtime(write_stack(tmp_path))
    with serve(create_app(runtime, {"api_keys": [{"key": "k1", "tenant": "t"}]})) as url:
        assert httpx.get(f"{url}/v1/runnables", headers=auth(token("t"))).status_code == 401
