"""Figure: eval overhead. The same 200-case dataset, concurrency 8, on each framework's test model.

Workload: 200 cases, each a different prompt asking for the 10-field ``Report`` (bench/common.py),
whose test double answers the same JSON at once; each case is judged by two evaluators: the output
equals the expected ``Report``, and the run took at most 5 s. Number: wall time of one whole
evaluation divided by 200, in ms per case (after a warm-up evaluation of 8 cases). Every side checks
that all 200 cases passed.

- keel: ``keel_eval.run_dataset(dataset, agent, runtime=rt, concurrency=8)`` with the dataset built
  in code (``Case`` objects: no YAML parse timed), evaluators ``equals`` and
  ``max_duration: {max_ms: 5000}``, the agent ``keel.Agent(output=Report)`` on the kernel's
  ``ScriptedModel`` (docs/eval.md).
- pydantic_evals: ``Dataset(name=..., cases=[Case(...)], evaluators=[EqualsExpected(), MaxDuration(5)])``
  and ``await dataset.evaluate(task, max_concurrency=8, progress=False)``, the task running
  ``pydantic_ai.Agent(TestModel(custom_output_args=ANSWER), output_type=Report)`` (pydantic-evals
  docs: "Quick start", "Concurrency"; pydantic-ai "Unit testing" → TestModel).

Keel's report also keeps every run's RuntimeEvents (for the limits and ``rescore``) and publishes each
result as a ``gen_ai.evaluation.result`` event; pydantic-evals builds its report with spans off.

Target (issue 20): Keel's framework overhead per case at most half of pydantic-evals'.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ANSWER, MODEL_SOURCE, PROMPT
from harness import Figure, Side, main_for, ratio_at_most

ROUNDS = 5
N = 200
CONCURRENCY = 8

TIMING = """
import asyncio
ANSWER = ARGS["answer"]
PROMPTS = [f"{ARGS['prompt']} (case {i})" for i in range(ARGS["n"])]
async def measure(evaluate):
    await evaluate(PROMPTS[:8])  # warm-up
    t0 = _time.perf_counter()
    passed = await evaluate(PROMPTS)
    per = (_time.perf_counter() - t0) * 1000.0 / len(PROMPTS)
    assert passed == len(PROMPTS), passed
    emit(per, n=len(PROMPTS), concurrency=ARGS["concurrency"])
"""

KEEL = (
    MODEL_SOURCE
    + TIMING
    + """
try:
    import keel
    from keel.testing import ScriptedModel, make_host
    from keel_eval import plugin as eval_plugin
    from keel_eval.cases import Case, Dataset, EvaluatorRef
    from keel_eval.runner import run_dataset
except ImportError as err:
    not_built(f"{err}")
ANSWER_TEXT = _json.dumps(ANSWER)
agent = keel.Agent("bench", "Summarise the report.", output=Report)
EVALUATORS = [EvaluatorRef(name="equals"), EvaluatorRef(name="max_duration", arguments={"max_ms": 5000})]
async def main():
    async with keel.Runtime(make_host(eval_plugin), keel.Stack()) as rt:
        rt.use_model(ScriptedModel(lambda request: ANSWER_TEXT, chunks=len(ANSWER_TEXT)))
        rt.add(agent)
        async def evaluate(prompts):
            dataset = Dataset(name="bench", cases=[
                Case(name=f"case-{i}", input=p, expected=ANSWER, evaluators=EVALUATORS) for i, p in enumerate(prompts)
            ])
            report = await run_dataset(dataset, agent, runtime=rt, concurrency=ARGS["concurrency"])
            return sum(case.passed for case in report.cases)
        await measure(evaluate)
asyncio.run(main())
"""
)

PYDANTIC_EVALS = (
    MODEL_SOURCE
    + TIMING
    + """
from pydantic_ai import Agent
from pydantic_ai.models.test import TestModel
from pydantic_evals import Case, Dataset
from pydantic_evals.evaluators import EqualsExpected, MaxDuration
agent = Agent(TestModel(custom_output_args=ANSWER), output_type=Report, instructions="Summarise the report.")
EXPECTED = Report.model_validate(ANSWER)
async def task(prompt: str) -> Report:
    return (await agent.run(prompt)).output
async def evaluate(prompts):
    dataset = Dataset(
        name="bench",
        cases=[Case(name=f"case-{i}", inputs=p, expected_output=EXPECTED) for i, p in enumerate(prompts)],
        evaluators=[EqualsExpected(), MaxDuration(seconds=5)],
    )
    report = await dataset.evaluate(task, max_concurrency=ARGS["concurrency"], progress=False)
    return sum(all(r.value is True for r in case.assertions.values()) for case in report.cases)
asyncio.run(measure(evaluate))
"""
)


def figures() -> list[Figure]:
    return [
        Figure(
            figure="eval",
            group="11. eval",
            title=f"{N}-case dataset at concurrency {CONCURRENCY}, two evaluators, on a test-double model",
            unit="ms/case",
            target="Keel's framework overhead per case at most half of pydantic-evals' (issue 20)",
            rules=[ratio_at_most("pydantic_evals", 0.5)],
            rounds=ROUNDS,
            args={"n": N, "concurrency": CONCURRENCY, "prompt": PROMPT, "answer": ANSWER},
            sides=[
                Side(
                    "keel",
                    "keel",
                    code=KEEL,
                    how="keel_eval.run_dataset(Dataset of Case, agent, concurrency=8): equals + max_duration (docs/eval.md)",
                ),
                Side(
                    "pydantic_evals",
                    "pydantic_evals",
                    code=PYDANTIC_EVALS,
                    how="Dataset(cases, [EqualsExpected(), MaxDuration(5)]).evaluate(task, max_concurrency=8); task = Agent(TestModel) (docs: Quick start)",
                ),
            ],
        )
    ]


def main() -> None:
    main_for(figures)


if __name__ == "__main__":
    main()
