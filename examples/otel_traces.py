"""OpenTelemetry traces of an agent run: the spans keel-otel exports, printed as a tree.

Runs offline on the scripted model: the agent calls a tool, its first answer fails the output
contract and is retried, and the spans land in an in-memory exporter that this script prints.
Point it at a real backend and the same spans go there too, e.g. Arize Phoenix:

    python -m phoenix.server.main serve            # in Phoenix's own venv; OTLP/HTTP on :6006
    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:6006 python examples/otel_traces.py
"""

from __future__ import annotations

import os

import anyio
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import BaseModel

import keel
from keel.testing import Reply, ScriptedModel, make_host
from keel_otel import OtelObserver


class Sum(BaseModel):
    total: int


@keel.action
def add(a: int, b: int) -> int:
    "Add two integers."
    return a + b


agent = keel.Agent("calculator", "Add the numbers with the add tool.", actions=["add"], output=Sum)

SCRIPT = [
    Reply(
        tool_calls=[keel.ToolCall(id="call_1", name="add", arguments={"a": 2, "b": 3})],
        usage=keel.Usage(input_tokens=31, output_tokens=9),
    ),
    Reply(text="The total is five.", usage=keel.Usage(input_tokens=52, output_tokens=5)),  # not JSON: retried
    Reply(text='{"total": 5}', usage=keel.Usage(input_tokens=80, output_tokens=4)),
]


def tree(spans: tuple[ReadableSpan, ...]) -> list[str]:
    """The spans as an indented tree, children in start order."""
    children: dict[int | None, list[ReadableSpan]] = {}
    for span in spans:
        children.setdefault(span.parent.span_id if span.parent else None, []).append(span)
    lines: list[str] = []

    def show(span: ReadableSpan, depth: int) -> None:
        attributes = dict(span.attributes or {})
        ms = ((span.end_time or 0) - (span.start_time or 0)) / 1e6
        detail = []
        if "gen_ai.usage.input_tokens" in attributes:
            detail.append(
                f"tokens in={attributes['gen_ai.usage.input_tokens']} out={attributes['gen_ai.usage.output_tokens']}"
            )
        if "gen_ai.tool.call.id" in attributes:
            detail.append(f"call={attributes['gen_ai.tool.call.id']}")
        if "keel.usage.input_tokens" in attributes:
            detail.append(
                f"total in={attributes['keel.usage.input_tokens']} out={attributes['keel.usage.output_tokens']}"
            )
        if span.events:
            detail.append("events=" + ",".join(e.name for e in span.events))
        kind = span.kind.name
        lines.append(f"{'  ' * depth}{span.name:<{32 - 2 * depth}} {kind:<8} {ms:8.2f} ms  {'  '.join(detail)}")
        for child in sorted(children.get(span.context.span_id, []), key=lambda s: s.start_time or 0):
            show(child, depth + 1)

    for root in children.get(None, []):
        show(root, 0)
    return lines


async def main() -> None:
    memory = InMemorySpanExporter()
    # with OTEL_EXPORTER_OTLP_ENDPOINT set, spans also go to that collector; else only to memory
    wanted = bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
    observer = OtelObserver({"service_name": "otel-example", "exporter": "otlp" if wanted else "none"})
    observer.provider.add_span_processor(SimpleSpanProcessor(memory))
    async with keel.Runtime(make_host(observer), keel.Stack()) as runtime:
        runtime.use_model(ScriptedModel(SCRIPT))
        runtime.actions.add(add)
        execution = await agent.start("What is 2 + 3?", runtime=runtime)
        print("answer:", await execution.get_data())
    observer.shutdown()  # exports what is still queued
    print(f"trace {execution.trace_id} (the execution's own trace id)")
    for line in tree(memory.get_finished_spans()):
        print(line)


if __name__ == "__main__":
    anyio.run(main)
