"""keel.TraceParent: a W3C traceparent read strictly, and executions started under
keel.continuing_trace continue that trace."""

from __future__ import annotations

import keel
from keel.testing import ScriptedModel, make_host

TRACE, SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


def test_parse_reads_a_valid_header_and_ignores_every_invalid_one() -> None:
    assert keel.TraceParent.parse(f"00-{TRACE}-{SPAN}-01") == keel.TraceParent(TRACE, SPAN)
    assert keel.TraceParent.parse(f" 01-{TRACE}-{SPAN}-00-future ") == keel.TraceParent(TRACE, SPAN)
    for bad in (
        None, "", "garbage", f"ff-{TRACE}-{SPAN}-01", f"00-{'0' * 32}-{SPAN}-01", f"00-{TRACE}-{'0' * 16}-01",
        f"00-{TRACE.upper()}-{SPAN}-01", f"00-{TRACE}-{SPAN}-01-extra", f"00-{TRACE[:-1]}-{SPAN}-01",
    ):  # fmt: skip
        assert keel.TraceParent.parse(bad) is None, bad


async def test_an_agent_started_under_continuing_trace_is_in_that_trace() -> None:
    async with keel.Runtime(make_host(), keel.Stack()) as runtime:
        runtime.use_model(ScriptedModel(["hi", "hi"]))
        agent = keel.Agent("a", "Say hi.")
        with keel.continuing_trace(keel.TraceParent(TRACE, SPAN)):
            inside = await runtime.start(agent, "x")
        outside = await runtime.start(agent, "x")
        await inside.result()
        await outside.result()
        first = [e async for e in inside.events()]
        assert {e.trace_id for e in first} == {TRACE}
        assert next(e for e in first if e.kind == "execution.started").parent_span_id == SPAN
        assert keel.current_trace() is None
        assert {e.trace_id for e in [e async for e in outside.events()]} != {TRACE}
