"""keel-eval on real local models: the labelled invoice eval of keel-model-local (llama.cpp in process),
and a model judge served by llama.cpp's own OpenAI-compatible server, whose label is stable on a fixed seed.

The invoice eval runs three of its ten cases here (all ten take minutes on a busy machine; the
README in plugins/model-local/eval runs them all).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

from conftest import ROOT
from test_models_openai_server import server_url  # noqa: F401  (the llama.cpp server fixture)

import keel
from keel.testing import ScriptedModel, make_host
from keel_eval import load_dataset, run_dataset
from keel_eval import plugin as eval_plugin
from keel_eval.cases import Case, Dataset, EvaluatorRef
from keel_model_local import plugin as local_plugin
from keel_model_openai import plugin as openai_plugin

EVAL = ROOT / "plugins" / "model-local" / "eval"


def agents() -> Any:
    spec = importlib.util.spec_from_file_location("_invoice_agents", EVAL / "invoice_agents.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def test_the_labelled_invoice_eval_runs_on_the_local_model(tmp_path: Path) -> None:
    stack = keel.load_stack(EVAL / "keel.toml")
    dataset = load_dataset(EVAL / "invoices.yaml")
    chosen = [dataset.case(name) for name in ("acme", "oslo-print", "nordlys")]
    async with keel.Runtime(make_host(eval_plugin, local_plugin), stack) as runtime:
        report = await run_dataset(
            dataset.model_copy(update={"cases": chosen}), agents().demo, runtime=runtime, concurrency=1
        )
    report.save(tmp_path / "report.json")
    runs = [run for case in report.cases for run in case.runs]
    assert all(run.error is None for run in runs), [run.error for run in runs]  # grammar-constrained: valid JSON
    assert all(r.passed for run in runs for r in run.results if r.evaluator == "schema")
    assert report.score >= 0.6, report.summary()  # 135M parameters: it copies fields, it does not compute
    assert all(run.events and run.duration_ms > 0 for run in runs)


JUDGED = {"number": "2024-117", "vendor": "Nordlys AS", "due": "2024-12-01", "total_eur": 360.0}


async def test_a_judge_on_the_llama_cpp_server_gives_a_stable_label(server_url: str, tmp_path: Path) -> None:  # noqa: F811
    stack_file = tmp_path / "keel.toml"
    stack_file.write_text(
        f'store = "memory"\n[models.judge]\nprovider = "openai"\nbase_url = "{server_url}"\nmodel = "smollm2"\n'
    )
    answer = keel.Agent("answer", "Extract the invoice.", output={k: (type(v), k) for k, v in JUDGED.items()})
    judge = EvaluatorRef(
        name="judge",
        arguments={
            "rubric": "The output copies the vendor, the invoice number and the due date from the input.",
            "labels": ["good", "bad"],
            "model": "judge",
            "options": {"temperature": 0.0, "seed": 42, "max_tokens": 60},
        },
    )
    case = Case(
        name="nordlys", input="Invoice 2024-117 from Nordlys AS, due 2024-12-01: 360.00 EUR.", evaluators=[judge]
    )
    async with keel.Runtime(make_host(eval_plugin, openai_plugin), keel.load_stack(stack_file)) as runtime:
        runtime.use_model(ScriptedModel(lambda request: json.dumps(JUDGED)))
        report = await run_dataset(
            Dataset(name="judged", cases=[case]), answer, runtime=runtime, repeat=3, concurrency=1
        )
    verdicts = [run.results[0] for run in report.cases[0].runs]
    assert all(v.reason != "" and not v.reason.startswith("evaluator failed") for v in verdicts), verdicts
    labels = {v.label for v in verdicts}
    assert len(labels) == 1 and labels <= {"good", "bad"}, verdicts  # the same label three times
    assert len({v.score for v in verdicts}) == 1
    requests = [e for run in report.cases[0].runs for e in run.events if e["kind"] == "model.request"]
    assert len(requests) == 3  # one answer per run from the scripted model: the judge's calls are its own
