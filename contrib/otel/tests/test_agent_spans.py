"""Real agent executions on the scripted model, exported to the SDK's InMemorySpanExporter."""

from __future__ import annotations

import json
import threading
from typing import Any

import anyio
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import keel
from keel.testing import Reply, ScriptedModel, make_host
from keel_otel import OtelObserver
from keel_otel import semconv as sc


@keel.action
def add(a: int, b: int) -> int:
    "Add two numbers."
    return a + b


@keel.action
def explode(reason: str) -> str:
    "Always fails."
    raise RuntimeError(f"boom: {reason}")


@keel.action(risk="irreversible")
def wipe(target: str) -> str:
    "Irreversible: needs an approver, and there is none."
    return target


def _call(name: str, call_id: str = "call_1", **arguments: Any) -> Reply:
    return Reply(tool_calls=[keel.ToolCall(id=call_id, name=name, arguments=arguments)])


async def run_agent(
    observer: OtelObserver, agent: keel.Agent, replies: list[str | Reply] | ScriptedModel
) -> tuple[Any, list[keel.RuntimeEvent]]:
    model = replies if isinstance(replies, ScriptedModel) else ScriptedModel(replies)
    async with keel.Runtime(make_host(observer), keel.Stack()) as runtime:
        runtime.use_model(model)
        for action in (add, explode, wipe):
            runtime.actions.add(action)
        execution = await agent.start("what is 2 + 3?", runtime=runtime)
        with anyio.fail_after(10):
            try:
                await execution.get_data()
            except keel.KeelError:
                pass
    # closing the runtime drained the observers: every span has ended and sits in the batch queue
    assert observer.force_flush(10)
    return execution, [event async for event in execution.events()]


def by_name(spans: tuple[ReadableSpan, ...] | list[ReadableSpan]) -> dict[str, list[ReadableSpan]]:
    out: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        out.setdefault(span.name, []).append(span)
    return out


async def test_an_agent_with_a_tool_call_is_one_trace_with_the_kernels_ids(
    observer: OtelObserver, exporter: InMemorySpanExporter
) -> None:
    agent = keel.Agent("calc", "Use the tools.", actions=["add"])
    execution, events = await run_agent(observer, agent, [_call("add", a=2, b=3), "5"])
    spans = exporter.get_finished_spans()
    named = by_name(spans)
    assert sorted(named) == ["chat scripted", "execute_tool add", "invoke_agent calc"]

    (root,) = named["invoke_agent calc"]
    assert root.kind is SpanKind.INTERNAL
    assert root.parent is None
    assert format(root.context.trace_id, "032x") == execution.trace_id
    assert format(root.context.span_id, "016x") == execution.span_id
    assert root.attributes is not None
    assert root.attributes[sc.GEN_AI_OPERATION_NAME] == "invoke_agent"
    assert root.attributes[sc.GEN_AI_AGENT_NAME] == "calc"
    assert root.attributes[sc.GEN_AI_PROVIDER_NAME] == "scripted"
    assert root.attributes[sc.KEEL_EXECUTION_ID] == execution.id
    assert root.attributes[sc.KEEL_STATUS] == "completed"
    # totals are keel.*, not gen_ai.usage.*: a backend summing the trace must not count twice
    assert sc.GEN_AI_USAGE_INPUT_TOKENS not in root.attributes
    assert root.attributes[sc.KEEL_USAGE_INPUT_TOKENS] == execution.usage.input_tokens
    assert root.status.status_code is StatusCode.UNSET

    chats = sorted(named["chat scripted"], key=lambda s: s.start_time or 0)
    assert len(chats) == 2
    request_spans = [e.span_id for e in events if e.kind == "model.request"]
    assert [format(c.context.span_id, "016x") for c in chats] == request_spans
    responses = [e.payload for e in events if e.kind == "model.response"]
    for chat, response in zip(chats, responses, strict=True):
        assert chat.kind is SpanKind.CLIENT
        assert chat.parent is not None and chat.parent.span_id == root.context.span_id
        assert chat.context.trace_id == root.context.trace_id
        assert chat.attributes is not None
        assert chat.attributes[sc.GEN_AI_OPERATION_NAME] == "chat"
        assert chat.attributes[sc.GEN_AI_REQUEST_MODEL] == "scripted"
        assert chat.attributes[sc.GEN_AI_USAGE_INPUT_TOKENS] == response["usage"]["input_tokens"]
        assert chat.attributes[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == response["usage"]["output_tokens"]
        for content in (sc.GEN_AI_OUTPUT_MESSAGES, sc.GEN_AI_INPUT_MESSAGES, sc.GEN_AI_TOOL_DEFINITIONS):
            assert content not in chat.attributes  # content is opt-in
    assert chats[0].attributes is not None and chats[0].attributes[sc.GEN_AI_RESPONSE_FINISH_REASONS] == ("tool_calls",)
    assert [e.name for e in chats[0].events] == ["tool_call"]
    assert sum(c.attributes[sc.GEN_AI_USAGE_INPUT_TOKENS] for c in chats) == execution.usage.input_tokens  # type: ignore[index,misc]

    (tool,) = named["execute_tool add"]
    assert tool.kind is SpanKind.INTERNAL
    assert tool.parent is not None and tool.parent.span_id == root.context.span_id
    assert tool.attributes is not None
    assert tool.attributes[sc.GEN_AI_OPERATION_NAME] == "execute_tool"
    assert tool.attributes[sc.GEN_AI_TOOL_NAME] == "add"
    assert tool.attributes[sc.GEN_AI_TOOL_CALL_ID] == "call_1"
    assert tool.attributes[sc.GEN_AI_TOOL_TYPE] == "function"
    assert sc.GEN_AI_TOOL_CALL_ARGUMENTS not in tool.attributes
    assert sc.GEN_AI_TOOL_CALL_RESULT not in tool.attributes
    assert sc.GEN_AI_INPUT_MESSAGES not in root.attributes and sc.GEN_AI_OUTPUT_MESSAGES not in root.attributes
    assert tool.events == ()  # allowed by policy: no approval to show
    # the tool ran between the two model requests, inside the agent's span
    assert chats[0].end_time <= tool.start_time <= tool.end_time <= chats[1].start_time  # type: ignore[operator]
    assert root.start_time <= chats[0].start_time and chats[1].end_time <= root.end_time  # type: ignore[operator]
    # times are the events' own
    started = next(e for e in events if e.kind == "execution.started")
    assert root.start_time == int(started.time * 1e9)


async def test_content_is_captured_only_when_the_standard_variable_asks(
    exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(sc.CAPTURE_CONTENT_ENV, "true")
    observer = OtelObserver(exporter=exporter)
    agent = keel.Agent("calc", "Use the tools.", actions=["add"])
    await run_agent(observer, agent, [_call("add", a=2, b=3), "the answer is 5"])
    named = by_name(exporter.get_finished_spans())
    chats = sorted(named["chat scripted"], key=lambda s: s.start_time or 0)
    first = json.loads(chats[0].attributes[sc.GEN_AI_OUTPUT_MESSAGES])  # type: ignore[index,arg-type]
    assert first == [
        {
            "role": "assistant",
            "parts": [{"type": "tool_call", "id": "call_1", "name": "add", "arguments": {"a": 2, "b": 3}}],
            "finish_reason": "tool_call",
        }
    ]
    last = json.loads(chats[1].attributes[sc.GEN_AI_OUTPUT_MESSAGES])  # type: ignore[index,arg-type]
    assert last[0]["parts"] == [{"type": "text", "content": "the answer is 5"}]
    assert last[0]["finish_reason"] == "stop"
    # what the second request sent: the conversation so far, tool round included, in the GenAI schema
    sent = json.loads(chats[1].attributes[sc.GEN_AI_INPUT_MESSAGES])  # type: ignore[index,arg-type]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool"]
    assert sent[1]["parts"] == [{"type": "text", "content": "what is 2 + 3?"}]
    assert sent[2]["parts"] == [{"type": "tool_call", "id": "call_1", "name": "add", "arguments": {"a": 2, "b": 3}}]
    assert sent[3]["parts"] == [{"type": "tool_call_response", "id": "call_1", "result": "5"}]
    tools = json.loads(chats[0].attributes[sc.GEN_AI_TOOL_DEFINITIONS])  # type: ignore[index,arg-type]
    assert [(t["type"], t["name"]) for t in tools] == [("function", "add")]
    (tool,) = named["execute_tool add"]
    assert json.loads(tool.attributes[sc.GEN_AI_TOOL_CALL_ARGUMENTS]) == {"a": 2, "b": 3}  # type: ignore[index,arg-type]
    assert tool.attributes[sc.GEN_AI_TOOL_CALL_RESULT] == "5"  # type: ignore[index]
    (root,) = named["invoke_agent calc"]
    assert json.loads(root.attributes[sc.GEN_AI_INPUT_MESSAGES])[0]["parts"][0]["content"] == "what is 2 + 3?"  # type: ignore[index,arg-type]
    assert json.loads(root.attributes[sc.GEN_AI_OUTPUT_MESSAGES])[0]["parts"][0]["content"] == "the answer is 5"  # type: ignore[index,arg-type]
    observer.shutdown()


async def test_the_setting_wins_over_the_variable(exporter: InMemorySpanExporter, monkeypatch) -> None:
    monkeypatch.setenv(sc.CAPTURE_CONTENT_ENV, "true")
    observer = OtelObserver({"capture_content": False}, exporter=exporter)
    await run_agent(observer, keel.Agent("plain", "Answer."), ["hello"])
    (chat,) = by_name(exporter.get_finished_spans())["chat scripted"]
    assert sc.GEN_AI_OUTPUT_MESSAGES not in (chat.attributes or {})
    observer.shutdown()


async def test_a_rejected_answer_is_a_retry_event_on_its_chat_span(
    observer: OtelObserver, exporter: InMemorySpanExporter
) -> None:
    agent = keel.Agent(
        "invoice", "Extract.", output={"total": (int, "the total")}, options={"temperature": 0.2, "max_tokens": 64}
    )
    await run_agent(observer, agent, ["not json at all", '{"total": 12}'])
    named = by_name(exporter.get_finished_spans())
    chats = sorted(named["chat scripted"], key=lambda s: s.start_time or 0)
    assert len(chats) == 2
    (retry,) = chats[0].events
    assert retry.name == "retry"
    assert retry.attributes is not None and retry.attributes[sc.KEEL_ATTEMPT] == 0
    assert retry.attributes["keel.retry.errors"]
    assert chats[1].events == ()
    assert chats[1].attributes is not None and chats[1].attributes[sc.KEEL_ATTEMPT] == 1
    assert chats[1].attributes[sc.KEEL_OUTPUT_REPAIRED] is False
    for chat in chats:  # sampling options are not content: always there
        assert chat.attributes is not None
        assert chat.attributes[sc.GEN_AI_REQUEST_TEMPERATURE] == 0.2
        assert chat.attributes[sc.GEN_AI_REQUEST_MAX_TOKENS] == 64
        assert chat.attributes[sc.GEN_AI_OUTPUT_TYPE] == "json"
    (root,) = named["invoke_agent invoice"]
    assert root.attributes is not None and root.attributes["keel.attempts"] == 2


async def test_a_failed_model_call_fails_its_chat_span_and_the_agent_span(
    observer: OtelObserver, exporter: InMemorySpanExporter
) -> None:
    def refuse(request: keel.ModelRequest) -> str:
        raise keel.KeelError("the model endpoint is down")

    await run_agent(observer, keel.Agent("fragile", "Answer."), ScriptedModel(refuse))
    named = by_name(exporter.get_finished_spans())
    (chat,) = named["chat scripted"]
    (root,) = named["invoke_agent fragile"]
    for span in (chat, root):
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes is not None and span.attributes[sc.ERROR_TYPE] == "KeelError"
        assert "the model endpoint is down" in (span.status.description or "")
    assert root.attributes is not None and root.attributes[sc.KEEL_STATUS] == "failed"


async def test_a_failing_and_a_denied_action_are_error_spans_with_their_error_type(
    observer: OtelObserver, exporter: InMemorySpanExporter
) -> None:
    agent = keel.Agent("risky", "Use the tools.", actions=["explode", "wipe"])
    replies: list[str | Reply] = [
        Reply(
            tool_calls=[
                keel.ToolCall(id="c1", name="explode", arguments={"reason": "test"}),
                keel.ToolCall(id="c2", name="wipe", arguments={"target": "prod"}),
                keel.ToolCall(id="c3", name="nonexistent", arguments={}),
            ]
        ),
        "done",
    ]
    await run_agent(observer, agent, replies)
    named = by_name(exporter.get_finished_spans())
    (boom,) = named["execute_tool explode"]
    assert boom.status.status_code is StatusCode.ERROR
    assert boom.attributes is not None and boom.attributes[sc.ERROR_TYPE] == "RuntimeError"
    assert "boom: test" in (boom.status.description or "")
    (denied,) = named["execute_tool wipe"]
    assert denied.attributes is not None and denied.attributes[sc.ERROR_TYPE] == "denied"
    assert denied.attributes[sc.KEEL_ACTION_VERDICT] == "deny"
    assert denied.attributes[sc.KEEL_ACTION_RISK] == "irreversible"
    (unknown,) = named["execute_tool nonexistent"]
    assert unknown.attributes is not None and unknown.attributes[sc.ERROR_TYPE] == "unknown_action"
    (root,) = named["invoke_agent risky"]
    assert root.status.status_code is StatusCode.UNSET  # the agent recovered: the tools' errors went back to the model


async def test_an_agent_started_inside_a_callers_trace_is_its_child(
    observer: OtelObserver, exporter: InMemorySpanExporter
) -> None:
    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"  # a traceparent from outside
    async with keel.Runtime(make_host(observer), keel.Stack()) as runtime:
        runtime.use_model(ScriptedModel(["hi"]))
        execution = await keel.Agent("child", "Answer.").start(
            "x", runtime=runtime, trace_id=trace_id, parent_span_id=parent
        )
        await execution.get_data()
    observer.force_flush()
    named = by_name(exporter.get_finished_spans())
    (root,) = named["invoke_agent child"]
    assert format(root.context.trace_id, "032x") == trace_id
    assert root.parent is not None and format(root.parent.span_id, "016x") == parent
    (chat,) = named["chat scripted"]
    assert format(chat.context.trace_id, "032x") == trace_id


class _StuckExporter(SpanExporter):
    """A collector that never answers."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def export(self, spans: Any) -> SpanExportResult:
        self.calls += 1
        self.release.wait(30)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.release.set()


async def test_a_collector_that_never_answers_never_slows_an_execution() -> None:
    stuck = _StuckExporter()
    observer = OtelObserver({"max_queue_size": 64, "schedule_delay": 0.01}, exporter=stuck)
    try:
        async with keel.Runtime(make_host(observer), keel.Stack()) as runtime:
            runtime.use_model(ScriptedModel(lambda request: "ok"))
            agent = keel.Agent("many", "Answer.")
            with anyio.fail_after(20):  # generous bound on a shared machine; the export thread blocks ~forever
                executions = [await agent.start(str(i), runtime=runtime) for i in range(200)]
                results = [await e.get_data() for e in executions]
        assert results == ["ok"] * 200
        assert stuck.calls >= 1  # the exporter was called, and is still stuck
    finally:
        stuck.release.set()
        observer.shutdown()


async def test_a_persons_approval_is_an_event_on_the_tool_span(exporter: InMemorySpanExporter) -> None:
    observer = OtelObserver(exporter=exporter)
    agent = keel.Agent("careful", "Use the tools.", actions=["wipe"])
    approver = keel.CallbackApprover(lambda request: True)
    async with keel.Runtime(make_host(observer), keel.Stack(), approver=approver) as runtime:
        runtime.use_model(ScriptedModel([_call("wipe", target="tmp"), "wiped"]))
        runtime.actions.add(wipe)
        await agent.run("clean up", runtime=runtime)
    observer.force_flush()
    (tool,) = by_name(exporter.get_finished_spans())["execute_tool wipe"]
    assert [e.name for e in tool.events] == ["approved"]
    assert tool.events[0].attributes is not None and tool.events[0].attributes["keel.approved_by"] == "callback"
    assert tool.status.status_code is StatusCode.UNSET
    observer.shutdown()
