"""Figure 3, model overhead: sequential structured-output requests against one instant local server.

Workload: ``n`` sequential requests (200 for the fast sides, ``n_slow`` = 40 for Agently, whose
~100 ms per request would otherwise take most of the budget) asking for the 10-field ``Report``
contract from ``bench/fake_openai.py`` on 127.0.0.1, which answers at once (non-streamed). The number
is the client-side time per request minus the server's own handling time per request (from its
``/_stats``), in ms. Every side checks its last result equals the answer.

Each side, as its docs recommend:

- keel: ``keel.Agent(output=Report)`` with the ``openai`` model plugin pointed at the server by a
  stack file (``[models.bench] provider = "openai"``), docs/models.md; ``stream = false``, so it
  makes the same single non-streamed request as the raw SDK side (streaming is the default, for
  instant events).
- openai (raw SDK baseline): ``AsyncOpenAI(base_url=...).chat.completions.create(...,
  response_format={"type": "json_schema", ...})`` then ``Report.model_validate_json`` (platform docs,
  "Structured model outputs").
- pydantic_ai: ``Agent(OpenAIChatModel(..., provider=OpenAIProvider(base_url=...)),
  output_type=Report)``, ``await agent.run(...)`` (ai.pydantic.dev "OpenAI" + "Output": the default
  tool output, so the server answers with a call of the output tool).
- openai_agents: ``Agent(output_type=Report, model=OpenAIChatCompletionsModel(...))`` and
  ``Runner.run`` (openai.github.io/openai-agents-python "Using any model" — chat-completions model for
  a non-OpenAI endpoint; tracing disabled, as that page says to do without an OpenAI key).
- langgraph: ``ChatOpenAI(base_url=...).with_structured_output(Report)`` called in a one-node
  ``StateGraph`` (langchain docs "Structured output" + LangGraph "Graph API").
- agently: ``Agently.set_settings("OpenAICompatible", {...})``, ``agent.input(...).output(schema)
  .async_get_data()`` (Agently docs "Model settings" + "Output control"). Its default is stream=True;
  kept (deviation: the others are non-streamed).

Target (issue 4): Keel's overhead at most half of the fastest peer's, and within 1.5x of the raw SDK.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import FIELDS, MODEL_SOURCE, PROMPT, fake_openai_server
from harness import Figure, Side, main_for, ratio_at_most, ratio_vs_fastest

ROUNDS = 3

TIMING = """
import asyncio, urllib.request
def _stats():
    with urllib.request.urlopen(ARGS["stats_url"], timeout=5) as r:
        return _json.loads(r.read())
async def measure(one, n):
    await one()  # warm: first request builds clients, schemas
    before = _stats()
    t0 = _time.perf_counter()
    for _ in range(n):
        last = await one()
    wall = (_time.perf_counter() - t0) * 1000.0
    after = _stats()
    server = after["handle_ms"] - before["handle_ms"]
    served = after["requests"] - before["requests"]
    data = last.model_dump() if hasattr(last, "model_dump") else dict(last)
    assert data == ARGS["answer"], data
    emit((wall - server) / n, wall_per_request=wall / n, server_per_request=server / max(served, 1), n=n, served=served)
"""

KEEL = (
    MODEL_SOURCE
    + TIMING
    + '''
try:
    import keel
    import keel_model_openai  # noqa: F401
    from keel import Agent
except ImportError as err:
    not_built(f"{err}")
import tempfile, pathlib
folder = pathlib.Path(tempfile.mkdtemp())
(folder / "keel.toml").write_text(f"""
model = "bench"
store = "memory"
[models.bench]
provider = "openai"
base_url = "{ARGS['base_url']}"
model = "fake-model"
api_key_env = "KEEL_BENCH_API_KEY"
options = {{ stream = false }}
""")
_os.environ["KEEL_BENCH_API_KEY"] = "sk-local"
agent = Agent("bench", "Summarise the report.", output=Report)
async def main():
    async with keel.Runtime.open(folder / "keel.toml") as rt:
        await measure(lambda: agent.run(ARGS["prompt"], runtime=rt), ARGS["n"])
asyncio.run(main())
'''
)

OPENAI = (
    MODEL_SOURCE
    + TIMING
    + """
from openai import AsyncOpenAI
client = AsyncOpenAI(base_url=ARGS["base_url"], api_key="sk-local")
fmt = {"type": "json_schema", "json_schema": {"name": "Report", "schema": Report.model_json_schema(), "strict": False}}
async def one():
    resp = await client.chat.completions.create(
        model="fake-model",
        messages=[{"role": "system", "content": "Summarise the report."}, {"role": "user", "content": ARGS["prompt"]}],
        response_format=fmt,
    )
    return Report.model_validate_json(resp.choices[0].message.content)
asyncio.run(measure(one, ARGS["n"]))
"""
)

PYDANTIC_AI = (
    MODEL_SOURCE
    + TIMING
    + """
from pydantic_ai import Agent
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider
model = OpenAIChatModel("fake-model", provider=OpenAIProvider(base_url=ARGS["base_url"], api_key="sk-local"))
agent = Agent(model, output_type=Report, instructions="Summarise the report.")
async def one():
    return (await agent.run(ARGS["prompt"])).output
asyncio.run(measure(one, ARGS["n"]))
"""
)

OPENAI_AGENTS = (
    MODEL_SOURCE
    + TIMING
    + """
from openai import AsyncOpenAI
from agents import Agent, Runner, OpenAIChatCompletionsModel, set_tracing_disabled
set_tracing_disabled(True)
model = OpenAIChatCompletionsModel(model="fake-model", openai_client=AsyncOpenAI(base_url=ARGS["base_url"], api_key="sk-local"))
agent = Agent(name="bench", instructions="Summarise the report.", model=model, output_type=Report)
async def one():
    return (await Runner.run(agent, ARGS["prompt"])).final_output
asyncio.run(measure(one, ARGS["n"]))
"""
)

LANGGRAPH = (
    MODEL_SOURCE
    + TIMING
    + """
from typing import Any, TypedDict
from langchain_openai import ChatOpenAI
from langgraph.graph import StateGraph, START, END
llm = ChatOpenAI(model="fake-model", base_url=ARGS["base_url"], api_key="sk-local").with_structured_output(Report)
class State(TypedDict):
    question: str
    report: Any
async def answer(state: State):
    return {"report": await llm.ainvoke([("system", "Summarise the report."), ("user", state["question"])])}
graph = StateGraph(State).add_node("answer", answer).add_edge(START, "answer").add_edge("answer", END).compile()
async def one():
    return (await graph.ainvoke({"question": ARGS["prompt"]}))["report"]
asyncio.run(measure(one, ARGS["n"]))
"""
)

AGENTLY_SCHEMA = (
    "{"
    + ", ".join(
        f'"{k}": ' + (f'[(str, "{d}")]' if t == "list[str]" else f'({t}, "{d}")') for k, (t, d) in FIELDS.items()
    )
    + "}"
)

AGENTLY = (
    TIMING
    + f"""
from agently import Agently
Agently.set_settings("OpenAICompatible", {{"base_url": ARGS["base_url"], "model": "fake-model", "api_key": "sk-local"}})
agent = Agently.create_agent()
SCHEMA = {AGENTLY_SCHEMA}
async def one():
    return await agent.input(ARGS["prompt"]).output(SCHEMA).async_get_data()
asyncio.run(measure(one, ARGS["n_slow"]))
"""
)


def figures() -> list[Figure]:
    return [
        Figure(
            figure="model_overhead",
            group="3. model overhead",
            title="per-request overhead, structured output, instant local OpenAI-compatible server",
            unit="ms/request",
            target="Keel's overhead at most half of the fastest peer's, and within 1.5x of the raw SDK call (issue 4)",
            rules=[
                ratio_vs_fastest(["pydantic_ai", "openai_agents", "langgraph", "agently"], 0.5),
                ratio_at_most("openai", 1.5),
            ],
            rounds=ROUNDS,
            args={"n": 200, "n_slow": 40, "prompt": PROMPT},
            sides=[
                Side(
                    "keel",
                    "keel",
                    code=KEEL,
                    how="keel.Agent(output=Report) on the `openai` model plugin (docs/models.md)",
                ),
                Side(
                    "openai",
                    "openai",
                    code=OPENAI,
                    how="raw AsyncOpenAI chat.completions.create + json_schema, then model_validate_json",
                ),
                Side(
                    "pydantic_ai",
                    "pydantic_ai",
                    code=PYDANTIC_AI,
                    how="Agent(OpenAIChatModel, output_type=Report).run (docs: Models/OpenAI, Output)",
                ),
                Side(
                    "openai_agents",
                    "openai_agents",
                    code=OPENAI_AGENTS,
                    how="Runner.run(Agent(output_type=Report, model=OpenAIChatCompletionsModel)); tracing off (docs: Using any model)",
                ),
                Side(
                    "langgraph",
                    "langgraph",
                    code=LANGGRAPH,
                    how="one-node StateGraph calling ChatOpenAI.with_structured_output(Report) (docs: Structured output)",
                ),
                Side(
                    "agently",
                    "agently",
                    code=AGENTLY,
                    how="agent.input().output(schema).async_get_data(), default stream=True; 40 requests/round (docs: Output control)",
                ),
            ],
            notes=[
                "overhead = client wall time per request minus the server's handling time per request",
                "agently runs 40 requests per round (about 100 ms each), the others 200",
            ],
        )
    ]


def main() -> None:
    main_for(figures, context=fake_openai_server)


if __name__ == "__main__":
    main()
