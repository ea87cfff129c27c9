"""The model judge: label, score and reason through the agent core's structured output."""

from __future__ import annotations

from pathlib import Path

from conftest import DATA
from eval_helpers import WORSE

import keel
from keel.testing import ScriptedModel
from keel_eval import load_dataset, rescore, run_dataset

JUDGED = """
name: judged
runnable: invoice
cases:
  - name: nordlys
    input: "Invoice 2024-117 from Nordlys AS, due 2024-12-01: 3 licences at 120.00 EUR each."
    evaluators:
      - judge:
          rubric: The output names the vendor that issued the invoice.
          labels: [pass, fail]
"""


async def test_a_judge_labels_scores_and_explains(runtime: keel.Runtime, tmp_path: Path) -> None:
    (tmp_path / "judged.yaml").write_text(JUDGED)
    dataset = load_dataset(tmp_path / "judged.yaml")
    good = await run_dataset(dataset, runtime=runtime)
    verdict = good.cases[0].runs[0].results[0]
    assert (verdict.evaluator, verdict.label, verdict.passed, verdict.reason) == ("judge", "pass", True, "vendor named")
    WORSE["on"] = True
    bad = await run_dataset(dataset, runtime=runtime)
    verdict = bad.cases[0].runs[0].results[0]
    assert (verdict.label, verdict.passed, verdict.score) == ("fail", False, 0.0)


async def test_the_judge_sees_the_rubric_and_the_labels_as_a_contract(runtime: keel.Runtime, tmp_path: Path) -> None:
    model = ScriptedModel(['{"number": "1", "vendor": "V", "due": "2024-01-01", "total_eur": 1}',
                           '{"label": "maybe", "score": 0.5, "reason": "x"}',
                           '{"label": "fail", "score": 0.2, "reason": "unsure"}'])  # fmt: skip
    runtime.use_model(model)
    (tmp_path / "judged.yaml").write_text(JUDGED)
    report = await run_dataset(load_dataset(tmp_path / "judged.yaml"), runtime=runtime)
    system = model.requests[1].messages[0].content
    assert "Rubric: The output names the vendor" in system and "Labels: pass, fail" in system
    assert model.requests[1].output_schema["properties"]["label"]["enum"] == ["pass", "fail"]
    # "maybe" is no label: the contract sent it back once, then the judge answered within it
    assert report.cases[0].runs[0].results[0].label == "fail" and len(model.requests) == 3


async def test_rescore_keeps_a_judges_result_and_calls_no_model(runtime: keel.Runtime, host: keel.PluginHost) -> None:
    dataset = load_dataset(DATA / "invoices.yaml")
    dataset.cases[0].evaluators.append(
        dataset.cases[0].evaluators[0].model_copy(update={"name": "judge", "arguments": {"rubric": "names the vendor"}})
    )
    report = await run_dataset(dataset, runtime=runtime)
    before = report.cases[0].runs[0].results[-1]
    again = await rescore(report, host=host)
    assert again.cases[0].runs[0].results[-1] == before and before.label == "pass"
