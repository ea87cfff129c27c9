"""A W3C traceparent on a start request puts the execution in the caller's trace: an agent and a
TriggerFlow flow started through the gateway, exported by keel-otel to the SDK's in-memory exporter,
have every span in the caller's trace, the execution's span a child of the caller's span."""

from __future__ import annotations

from typing import Any

import httpx
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import keel
from keel.testing import ScriptedModel, make_host
from keel_gateway import create_app
from keel_otel import OtelObserver
from keel_triggerflow import TriggerFlow

TRACE, PARENT = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


def _flow() -> TriggerFlow:
    async def shout(ctx: Any) -> Any:
        return str(ctx.value).upper()

    flow = TriggerFlow("shout")
    flow.to(shout)
    return flow


async def test_agent_and_flow_spans_continue_the_callers_trace() -> None:
    exporter = InMemorySpanExporter()
    observer = OtelObserver(exporter=exporter)
    try:
        async with keel.Runtime(make_host(observer), keel.Stack()) as runtime:
            runtime.use_model(ScriptedModel(['{"title": "Otters"}'] * 3))
            runtime.add(keel.Agent("brief", "Write.", output={"title": (str, "t")}))
            runtime.add(_flow())
            transport = httpx.ASGITransport(app=create_app(runtime, {}))
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
                headers = {"traceparent": f"00-{TRACE}-{PARENT}-01"}
                for name, value in (("brief", "otters"), ("shout", "hi")):
                    done = await http.post(f"/v1/runnables/{name}/executions?wait=true", json=value, headers=headers)
                    assert done.status_code == 200, done.text
                untraced = await http.post("/v1/runnables/shout/executions?wait=true", json="no header")
                assert untraced.status_code == 200
        assert observer.force_flush(10)
        spans = exporter.get_finished_spans()
        traced = [s for s in spans if s.context is not None and s.context.trace_id == int(TRACE, 16)]
        roots = [s for s in traced if s.parent is not None and s.parent.span_id == int(PARENT, 16)]
        assert len(roots) == 2, [(s.name, s.parent) for s in traced]  # the agent's and the flow's execution span
        assert len(traced) > 2, "their inner spans (model calls, steps) are in the caller's trace too"
        assert len(spans) > len(traced), "an execution started without the header has a trace of its own"
    finally:
        observer.shutdown()
