"""Figure 2, agent overhead: sequential structured-output executions on each framework's test model.

Workload: ``n`` = 1,000 sequential executions (``n_slow`` = 40 for Agently, which needs a server) of
an agent whose output contract is the 10-field ``Report``; the test double answers the same JSON at
once, in one piece. Number: wall time per execution, in ms (after one warm-up execution). Every side
checks its last result equals the answer.

- keel: ``keel.Agent("bench", ..., output=Report)`` + ``await agent.run(..., runtime=rt)`` with the
  kernel's ``ScriptedModel`` put in place by ``runtime.use_model`` (docs/output.md), one chunk per
  answer, in-memory store.
- pydantic_ai: ``Agent(FunctionModel(fn), output_type=Report)``, the function answering with a call
  of the output tool (ai.pydantic.dev "Unit testing" → FunctionModel).
- langgraph: a one-node ``StateGraph`` whose node calls LangChain's ``GenericFakeChatModel``
  (langchain "Testing" → fake chat models) and validates its JSON with ``Report.model_validate_json``.
  Deviation: a fake chat model has no ``with_structured_output``, so the node parses by hand.
- agently: ``agent.input().output(schema).async_get_data()`` against ``bench/fake_openai.py`` (Agently
  has no in-process test model; issue 10 names the local server for it). Its numbers include one
  local HTTP round trip (~1 ms) that the others do not pay.

Target (issue 3): Keel's per-execution overhead under 0.5 ms and at most a fifth of PydanticAI's.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import MODEL_SOURCE, PROMPT, fake_openai_server
from harness import Figure, Side, keel_below, main_for, ratio_at_most
from model_overhead import AGENTLY_SCHEMA

ROUNDS = 5

TIMING = """
import asyncio
ANSWER_TEXT = _json.dumps(ARGS["answer"])
async def measure(one, n):
    await one()
    t0 = _time.perf_counter()
    for _ in range(n):
        last = await one()
    per = (_time.perf_counter() - t0) * 1000.0 / n
    data = last.model_dump() if hasattr(last, "model_dump") else dict(last)
    assert data == ARGS["answer"], data
    emit(per, n=n)
"""

KEEL = (
    MODEL_SOURCE
    + TIMING
    + """
try:
    import keel
    from keel import Agent
    from keel.testing import ScriptedModel
except ImportError as err:
    not_built(f"{err}")
import tempfile, pathlib
folder = pathlib.Path(tempfile.mkdtemp())
(folder / "keel.toml").write_text('store = "memory"\\n')
agent = Agent("bench", "Summarise the report.", output=Report)
async def main():
    async with keel.Runtime.open(folder / "keel.toml") as rt:
        rt.use_model(ScriptedModel(lambda request: ANSWER_TEXT, chunks=len(ANSWER_TEXT)))
        await measure(lambda: agent.run(ARGS["prompt"], runtime=rt), ARGS["n"])
asyncio.run(main())
"""
)

PYDANTIC_AI = (
    MODEL_SOURCE
    + TIMING
    + """
from pydantic_ai import Agent
from pydantic_ai.messages import ModelResponse, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
def answer(messages, info: AgentInfo) -> ModelResponse:
    return ModelResponse(parts=[ToolCallPart(info.output_tools[0].name, ANSWER_TEXT)])
agent = Agent(FunctionModel(answer), output_type=Report, instructions="Summarise the report.")
async def one():
    return (await agent.run(ARGS["prompt"])).output
asyncio.run(measure(one, ARGS["n"]))
"""
)

LANGGRAPH = (
    MODEL_SOURCE
    + TIMING
    + """
import itertools
from typing import Any, TypedDict
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langgraph.graph import StateGraph, START, END
llm = GenericFakeChatModel(messages=itertools.repeat(AIMessage(content=ANSWER_TEXT)))
class State(TypedDict):
    question: str
    report: Any
async def answer(state: State):
    msg = await llm.ainvoke([("system", "Summarise the report."), ("user", state["question"])])
    return {"report": Report.model_validate_json(msg.content)}
graph = StateGraph(State).add_node("answer", answer).add_edge(START, "answer").add_edge("answer", END).compile()
async def one():
    return (await graph.ainvoke({"question": ARGS["prompt"]}))["report"]
asyncio.run(measure(one, ARGS["n"]))
"""
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
            figure="agent_overhead",
            group="2. agent overhead",
            title="sequential structured-output executions on a test-double model",
            unit="ms/execution",
            target="Keel's per-execution overhead under 0.5 ms and at most a fifth of PydanticAI's (issue 3)",
            rules=[keel_below(0.5), ratio_at_most("pydantic_ai", 0.2)],
            rounds=ROUNDS,
            args={"n": 1000, "n_slow": 40, "prompt": PROMPT},
            sides=[
                Side(
                    "keel",
                    "keel",
                    code=KEEL,
                    how="Agent(output=Report).run on ScriptedModel via runtime.use_model (docs/output.md)",
                ),
                Side(
                    "pydantic_ai",
                    "pydantic_ai",
                    code=PYDANTIC_AI,
                    how="Agent(FunctionModel, output_type=Report).run (docs: Unit testing)",
                ),
                Side(
                    "langgraph",
                    "langgraph",
                    code=LANGGRAPH,
                    how="one-node StateGraph + GenericFakeChatModel, JSON validated in the node (deviation: no structured output on fake models)",
                ),
                Side(
                    "agently",
                    "agently",
                    code=AGENTLY,
                    how="agent.input().output(schema).async_get_data() against the local fake server; 40 per round (deviation: needs HTTP)",
                ),
            ],
        )
    ]


def main() -> None:
    main_for(figures, context=fake_openai_server)


if __name__ == "__main__":
    main()
