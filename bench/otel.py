"""Figure 11a, tracing cost: what turning OpenTelemetry on adds to one agent execution.

Workload: blocks of ``n`` = 200 sequential executions of an agent that calls one tool (``add``) and then
answers, on each framework's test model, once without tracing and once with OpenTelemetry spans
exported through the SDK's ``BatchSpanProcessor`` to an exporter that drops them (no network: the
number is the framework's own cost, not a collector's). Content capture is off on both sides (both
defaults). Each variant runs three blocks, interleaved, and keeps its best (the machine is shared). Number:
traced minus untraced wall time per execution, in ms; the extras keep both
times and the spans each execution produced; Keel's extras also hold the time with a no-op observer
(any observer starts the event bus's dispatcher, whose cost is not keel-otel's).

- keel: ``keel_otel.OtelObserver(exporter=...)`` registered as a plugin (docs/observability.md);
  the agent runs on ``ScriptedModel`` via ``runtime.use_model``. Spans are made on the event bus's
  dispatcher, so the timed block includes closing the runtime, which drains the dispatcher: every
  span is made and ended inside the measured time.
- pydantic_ai: ``agent.instrument = InstrumentationSettings(tracer_provider=..., include_content=False)``
  on an ``Agent(FunctionModel(...))`` (ai.pydantic.dev "Debugging and Monitoring" → "Using
  OpenTelemetry without Logfire"; in 2.x ``instrument`` is a property, no longer a constructor
  argument), tool by ``@agent.tool_plain``; untraced: ``instrument = False``.

No target in an issue; the rule recorded is "Keel's tracing cost at most PydanticAI's".
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Figure, Side, main_for, ratio_at_most

ROUNDS = 3

TIMING = """
import asyncio
async def measure(block, n):
    await block(5)                       # warm-up: imports, first spans, caches
    t0 = _time.perf_counter()
    await block(n)
    return (_time.perf_counter() - t0) * 1000.0 / n
async def best(blocks, n, repeats=3):
    # the variants interleaved, best of `repeats` each: a load spike on a shared machine hits one
    # block of one variant, not the comparison
    times = {name: [] for name in blocks}
    for _ in range(repeats):
        for name, block in blocks.items():
            times[name].append(await measure(block, n))
    return {name: min(values) for name, values in times.items()}
"""

EXPORTER = """
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
class Dropping(SpanExporter):
    def __init__(self):
        self.spans = 0
    def export(self, spans):
        self.spans += len(spans)
        return SpanExportResult.SUCCESS
    def shutdown(self):
        pass
"""

KEEL = (
    TIMING
    + """
try:
    import keel
    from keel.testing import Reply, ScriptedModel, make_host
    from keel_otel import OtelObserver
except ImportError as err:
    not_built(f"{err}")
"""
    + EXPORTER
    + """
@keel.action
def add(a: int, b: int) -> int:
    "Add two integers."
    return a + b

CALL = Reply(tool_calls=[keel.ToolCall(id="call_1", name="add", arguments={"a": 1, "b": 2})])
def script(request):
    return CALL if len(request.messages) < 3 else "three"
agent = keel.Agent("bench", "Add with the tool.", actions=["add"])

def block_for(plugins):
    async def block(n):
        async with keel.Runtime(make_host(*plugins), keel.Stack()) as rt:
            rt.use_model(ScriptedModel(script))
            rt.actions.add(add)
            for _ in range(n):
                last = await agent.run("1 + 2?", runtime=rt)
        assert last == "three", last
    return block

class Noop:  # any observer at all starts the bus's dispatcher: this separates that cost from keel-otel's
    @keel.hookimpl
    def keel_on_runtime_event(self, event):
        pass

async def main():
    exporter = Dropping()
    observer = OtelObserver(exporter=exporter)
    t = await best(
        {"plain": block_for([]), "noop": block_for([Noop()]), "traced": block_for([observer])}, ARGS["n"]
    )
    observer.shutdown()
    emit(
        t["traced"] - t["plain"], plain_ms=t["plain"], noop_observer_ms=t["noop"], traced_ms=t["traced"],
        spans_per_execution=exporter.spans / (3 * (ARGS["n"] + 5)),
    )
asyncio.run(main())
"""
)

PYDANTIC_AI = (
    TIMING
    + EXPORTER
    + """
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from pydantic_ai import Agent
from pydantic_ai.messages import ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.models.instrumented import InstrumentationSettings

def answer(messages, info: AgentInfo) -> ModelResponse:
    if len(messages) == 1:
        return ModelResponse(parts=[ToolCallPart("add", {"a": 1, "b": 2})])
    return ModelResponse(parts=[TextPart("three")])

def make(instrument):
    agent = Agent(FunctionModel(answer), instructions="Add with the tool.")
    agent.instrument = instrument  # 2.x: a property (the constructor argument is gone)
    @agent.tool_plain
    def add(a: int, b: int) -> int:
        "Add two integers."
        return a + b
    async def block(n):
        for _ in range(n):
            last = (await agent.run("1 + 2?")).output
        assert last == "three", last
    return block

async def main():
    exporter = Dropping()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    settings = InstrumentationSettings(tracer_provider=provider, include_content=False)
    t = await best({"plain": make(False), "traced": make(settings)}, ARGS["n"])
    provider.shutdown()
    emit(
        t["traced"] - t["plain"], plain_ms=t["plain"], traced_ms=t["traced"],
        spans_per_execution=exporter.spans / (3 * (ARGS["n"] + 5)),
    )
asyncio.run(main())
"""
)


def figures() -> list[Figure]:
    return [
        Figure(
            figure="otel",
            group="11a. tracing cost",
            title="OpenTelemetry on vs off: one tool call and an answer, spans batched to a dropping exporter",
            unit="ms/execution added",
            target="no issue target; recorded: Keel's tracing cost at most PydanticAI's own OpenTelemetry instrumentation's",
            rules=[ratio_at_most("pydantic_ai", 1.0)],
            rounds=ROUNDS,
            args={"n": 200},
            sides=[
                Side(
                    "keel",
                    "keel",
                    code=KEEL,
                    how="keel_otel.OtelObserver(exporter=...) as a plugin; ScriptedModel (docs/observability.md)",
                ),
                Side(
                    "pydantic_ai",
                    "pydantic_ai_otel",
                    code=PYDANTIC_AI,
                    how="agent.instrument = InstrumentationSettings(tracer_provider=...) on Agent(FunctionModel) (docs: Debugging and Monitoring)",
                ),
            ],
        )
    ]


def main() -> None:
    main_for(figures)


if __name__ == "__main__":
    main()
