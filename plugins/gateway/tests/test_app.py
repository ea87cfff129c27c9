"""Routes in-process (httpx's ASGI transport); the real-server tests live in tests/test_gateway_*.py."""

from __future__ import annotations

import httpx

import keel
from keel.testing import ScriptedModel, make_host
from keel_gateway import create_app


async def test_start_wait_read_and_isolation() -> None:
    async with keel.Runtime(make_host(), keel.Stack()) as runtime:
        runtime.use_model(ScriptedModel(['{"title": "Otters"}'] * 3))
        runtime.add(keel.Agent("brief", "Write.", output={"title": (str, "t")}))
        keys = [{"key": "ka", "tenant": "a"}, {"key": "kb", "tenant": "b"}]
        app = create_app(runtime, {"api_keys": keys})
        assert runtime.serving == {"gateway"}  # keel doctor reads what this process serves
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
            done = await http.post("/v1/runnables/brief/executions?wait=true", json="x", headers={"X-API-Key": "ka"})
            assert done.status_code == 200 and done.json()["output"] == {"title": "Otters"}
            eid = done.json()["id"]
            view = await http.get(f"/v1/executions/{eid}", headers={"X-API-Key": "ka"})
            assert view.status_code == 200
            usage = view.json()["usage"]  # the kernel's budgets: what it spent, and the limits in force
            assert usage["model_requests"] == 1 and usage["tokens"] > 0 and usage["limits"] == {}
            other = await http.get(f"/v1/executions/{eid}", headers={"X-API-Key": "kb"})
            assert other.status_code == 404 and other.json()["error"]["code"] == "not_found"
            doc = (await http.get("/openapi.json")).json()
            assert "/v1/runnables/brief/executions" in doc["paths"]
            assert doc["components"]["schemas"]["BriefResult"]["allOf"][0] == {
                "$ref": "#/components/schemas/ExecutionView"
            }


TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


async def test_a_traceparent_header_puts_the_execution_in_the_callers_trace() -> None:
    async with keel.Runtime(make_host(), keel.Stack()) as runtime:
        runtime.use_model(ScriptedModel(['{"title": "Otters"}'] * 3))
        runtime.add(keel.Agent("brief", "Write.", output={"title": (str, "t")}))
        transport = httpx.ASGITransport(app=create_app(runtime, {}))
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
            traced = await http.post(
                "/v1/runnables/brief/executions?wait=true", json="x", headers={"traceparent": TRACEPARENT}
            )
            plain = await http.post(
                "/v1/runnables/brief/executions?wait=true", json="x", headers={"traceparent": "00-zz-bad-01"}
            )
        events = [e async for e in (await runtime.find_execution(traced.json()["id"])).events()]
        assert {e.trace_id for e in events} == {"4bf92f3577b34da6a3ce929d0e0e4736"}
        started = next(e for e in events if e.kind == "execution.started")
        assert started.parent_span_id == "00f067aa0ba902b7", "the execution's span is a child of the caller's"
        others = [e async for e in (await runtime.find_execution(plain.json()["id"])).events()]
        assert {e.trace_id for e in others} != {"4bf92f3577b34da6a3ce929d0e0e4736"}, "an invalid header is ignored"
        assert all(e.parent_span_id is None for e in others if e.kind == "execution.started")
