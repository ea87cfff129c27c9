"""Every example ships an eval dataset (examples/evals/<example>.yaml), run here on the scripted model.

The scripted answers are each example's own where it has them; hello's fallback answers one canned
text, so its labelled cases get theirs from a table, as recorded answers.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import pytest
import yaml
from conftest import BIN, ROOT, clean_env

import keel
from keel.testing import ScriptedModel, make_host
from keel_eval import load_dataset, run_dataset
from keel_eval import plugin as eval_plugin
from keel_eval.recorded import case_from_recording, read_recording

EVALS = ROOT / "examples" / "evals"


#: examples that are a folder (a service): the module that holds their runnables
SERVICES = {"desk": "desk_service.py"}


def example(name: str) -> ModuleType:
    path = ROOT / "examples" / name / SERVICES[name] if name in SERVICES else ROOT / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_example_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_every_example_has_a_dataset() -> None:
    examples = {p.stem for p in (ROOT / "examples").glob("*.py")}
    examples |= {p.parent.name for p in (ROOT / "examples").glob("*/__main__.py")}  # services: a folder each
    datasets = {p.stem for p in EVALS.glob("*.yaml")}
    missing = sorted(examples - datasets)
    assert not missing, (
        f"examples without an eval dataset: {missing}; add examples/evals/<name>.yaml (docs/eval.md) "
        "and the example's scripted set-up in setup() here"
    )
    assert examples and datasets <= examples, f"datasets of no example: {sorted(datasets - examples)}"


HELLO_ANSWERS = {
    "Invoice 2024-117": {"number": "2024-117", "vendor": "Nordlys AS", "due": "2024-12-01", "total_eur": 360.0},
    "Invoice INV-0042": {"number": "INV-0042", "vendor": "Acme GmbH", "due": "2025-01-15", "total_eur": 99.5},
    "Bill 7781": {"number": "7781", "vendor": "Blue Fjord Consulting", "due": "2024-11-30", "total_eur": 1250.0},
}


def hello_answer(request: keel.ModelRequest) -> str:
    text = request.messages[-1].content
    return json.dumps(next(v for k, v in HELLO_ANSWERS.items() if text.startswith(k)))


def deliver(runtime_box: list[keel.Runtime], folder: Path) -> Any:
    """proactive.py's task runs only inside a worker: enqueue one trigger, drain a worker, report the job."""
    from keel_scheduler import Queue, Worker, task

    async def run(input: dict[str, str]) -> dict[str, Any]:
        async with Queue(str(folder / f"{input['invoice']}.db")) as queue:
            await queue.enqueue(
                "send_invoice", input, dedup_key=f"invoice:{input['invoice']}", max_attempts=2, backoff=0.01
            )
            # drain stops when nothing is due: a retry still in its backoff is not, so drain again
            with anyio.fail_after(60):
                while True:
                    await Worker(queue, runtime_box[0], poll_interval=0.01).run(drain=True)
                    [job] = await queue.list()
                    if job.status.value in ("completed", "failed"):
                        break
                    await anyio.sleep(0.01)
        return {"status": job.status.value, "attempts": job.attempts, "result": job.result, "errors": len(job.errors)}

    return task(run, name="deliver")


def setup(name: str, folder: Path, runtime_box: list[keel.Runtime]) -> tuple[list[Any], Any, list[Any]]:
    module = example(name)
    if name == "hello":
        return [], ScriptedModel(hello_answer, chunks=7), [module.agent]
    if name == "research_team":
        from keel_triggerflow import plugin as triggerflow_plugin

        return [triggerflow_plugin], ScriptedModel(module.answer), [module.team]
    if name == "gateway_app":
        return [], module.scripted(0.0), [module.brief, module.Review()]
    if name == "devtools_record":
        return [], module.script(), [module.agent]
    if name == "otel_traces":
        return [], ScriptedModel(list(module.SCRIPT)), [module.agent, module.add]
    if name == "hostile_answers":
        return [], ScriptedModel(module.respond), [module.agent]
    if name == "proactive":
        return [], ScriptedModel([]), [module.send_invoice, deliver(runtime_box, folder)]
    if name == "doctor":
        triage = keel.Agent("triage", "triage the ticket", output=module.Reply)
        return [], ScriptedModel(lambda request: json.dumps({"answer": "Reset it from the login page."})), [triage]
    if name == "budgets":
        return [], ScriptedModel(module.answer), [module.triage, module.lookup_order]
    if name == "fail_closed":
        return [], ScriptedModel([]), [module.Crashy()]
    if name == "scale_out_temporal":
        from keel_triggerflow import plugin as triggerflow_plugin

        return [triggerflow_plugin], ScriptedModel([]), [module.flow]
    if name == "desk":
        from keel_triggerflow import plugin as triggerflow_plugin

        return [triggerflow_plugin], ScriptedModel(module.scripted_answer), [module.desk]
    raise AssertionError(f"no eval set-up for examples/{name}.py: add one here")


@pytest.mark.parametrize("name", sorted(p.stem for p in EVALS.glob("*.yaml")))
def test_the_examples_dataset_passes_on_the_scripted_model(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    box: list[keel.Runtime] = []
    plugins, model, runnables = setup(name, tmp_path, box)  # outside an event loop: an example may run one

    async def main() -> Any:
        async with keel.Runtime(make_host(eval_plugin, *plugins), keel.Stack()) as runtime:
            box.append(runtime)
            runtime.use_model(model)
            for runnable in runnables:
                if isinstance(runnable, keel.ActionSpec):
                    runtime.actions.add(runnable)
                else:
                    runtime.add(runnable)
            return await run_dataset(load_dataset(EVALS / f"{name}.yaml"), runtime=runtime, concurrency=4)

    report = anyio.run(main)
    report.save(tmp_path / "report.json")
    report.assert_passed()
    assert all(run.results for case in report.cases for run in case.runs)


def test_the_devtools_examples_case_is_what_from_execution_makes_of_its_export(tmp_path: Path) -> None:
    # the example records two executions and exports the first to first-invoice.jsonl
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "devtools_record.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=clean_env(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    made = case_from_recording(read_recording(tmp_path / "first-invoice.jsonl"))
    shipped = yaml.safe_load((EVALS / "devtools_record.yaml").read_text())["cases"][0]
    for key in ("input", "expected", "fixtures"):
        assert made[key] == shipped[key], key

    # by id, with no exported file: `keel eval from-execution` asks DevTools' recording for it
    first, second = [line.split()[0] for line in done.stdout.splitlines() if line.startswith("exe_")][:2]
    (tmp_path / "first-invoice.jsonl").unlink()
    for execution_id in (first, second):
        case = subprocess.run(
            [str(BIN / "keel"), "eval", "from-execution", execution_id],
            cwd=tmp_path, capture_output=True, text=True, timeout=120, env=clean_env(),
        )  # fmt: skip
        assert case.returncode == 0, case.stderr
        data = yaml.safe_load(case.stdout)
        assert (
            data["metadata"]["from_execution"] == execution_id
            and data["fixtures"]["actions"][0]["action"] == "exchange_rate"
        )
    missing = subprocess.run(
        [str(BIN / "keel"), "eval", "from-execution", "exe_nope"], cwd=tmp_path, capture_output=True, text=True,
        timeout=120, env=clean_env(),
    )  # fmt: skip
    assert missing.returncode == 1 and "DevTools' recording has no execution 'exe_nope'" in missing.stderr
