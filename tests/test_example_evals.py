"""Every example ships an eval dataset (examples/evals/<example>.yaml), run here on the scripted model.

The scripted answers are each example's own where it has them (research_team.answer,
gateway_app.scripted); hello's fallback answers one canned text, so its labelled cases get theirs
from a table, as recorded answers.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import ROOT

import keel
from keel.testing import ScriptedModel, make_host
from keel_eval import load_dataset, run_dataset
from keel_eval import plugin as eval_plugin

EVALS = ROOT / "examples" / "evals"


def example(name: str) -> ModuleType:
    path = ROOT / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_example_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_every_example_has_a_dataset() -> None:
    examples = {p.stem for p in (ROOT / "examples").glob("*.py")}
    assert examples and examples == {p.stem for p in EVALS.glob("*.yaml")}


HELLO_ANSWERS = {
    "Invoice 2024-117": {"number": "2024-117", "vendor": "Nordlys AS", "due": "2024-12-01", "total_eur": 360.0},
    "Invoice INV-0042": {"number": "INV-0042", "vendor": "Acme GmbH", "due": "2025-01-15", "total_eur": 99.5},
    "Bill 7781": {"number": "7781", "vendor": "Blue Fjord Consulting", "due": "2024-11-30", "total_eur": 1250.0},
}


def hello_answer(request: keel.ModelRequest) -> str:
    text = request.messages[-1].content
    return json.dumps(next(v for k, v in HELLO_ANSWERS.items() if text.startswith(k)))


def setup(name: str) -> tuple[list[Any], Any, list[keel.Runnable]]:
    module = example(name)
    if name == "hello":
        return [], ScriptedModel(hello_answer, chunks=7), [module.agent]
    if name == "research_team":
        from keel_triggerflow import plugin as triggerflow_plugin

        return [triggerflow_plugin], ScriptedModel(module.answer), [module.team]
    if name == "gateway_app":
        return [], module.scripted(0.0), [module.brief, module.Review()]
    raise AssertionError(f"no eval set-up for examples/{name}.py: add one here")


@pytest.mark.parametrize("name", sorted(p.stem for p in EVALS.glob("*.yaml")))
async def test_the_examples_dataset_passes_on_the_scripted_model(name: str, tmp_path: Path) -> None:
    plugins, model, runnables = setup(name)
    async with keel.Runtime(make_host(eval_plugin, *plugins), keel.Stack()) as runtime:
        runtime.use_model(model)
        for runnable in runnables:
            runtime.add(runnable)
        report = await run_dataset(load_dataset(EVALS / f"{name}.yaml"), runtime=runtime, concurrency=4)
    report.save(tmp_path / "report.json")
    report.assert_passed()
    assert all(run.results for case in report.cases for run in case.runs)
