"""Running datasets: runnables through the Execution protocol, evaluators, events, fixtures, repeats."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from conftest import DATA
from eval_helpers import SIDE_EFFECTS, WORSE

import keel
from keel.testing import ScriptedModel
from keel_eval import EvalError, compare, load_dataset, rescore, run_dataset
from keel_eval.cases import Case, Dataset, EvaluatorRef, Fixtures


async def test_a_dataset_runs_and_every_evaluator_judges_every_case(runtime: keel.Runtime) -> None:
    report = await run_dataset(load_dataset(DATA / "invoices.yaml"), runtime=runtime)
    report.assert_passed()
    nordlys = report.case("nordlys")
    assert [r.evaluator for r in nordlys.runs[0].results] == [
        "schema", "equals", "numeric", "max_model_requests", "equals",
    ]  # fmt: skip
    assert nordlys.runs[0].output["vendor"] == "Nordlys AS"
    assert report.summary()["passed"] == 3 and report.runnable == "invoice"
    kinds = {e["kind"] for e in nordlys.runs[0].events}
    assert "model.request" in kinds and "model.delta" not in kinds  # deltas are left out of reports


async def test_a_worse_model_fails_the_cases_it_breaks_and_says_why(runtime: keel.Runtime) -> None:
    WORSE["on"] = True
    report = await run_dataset(load_dataset(DATA / "invoices.yaml"), runtime=runtime)
    assert {c.name for c in report.failed()} == {"nordlys", "acme", "pi"}
    assert any('expected "Nordlys AS" at vendor' in why for why in report.case("nordlys").failures())
    with pytest.raises(AssertionError, match="nordlys"):
        report.assert_passed()


async def test_results_are_published_as_gen_ai_evaluation_result_events(runtime: keel.Runtime) -> None:
    seen: list[keel.RuntimeEvent] = []
    async with runtime.bus.subscribe(buffer=4096) as sub:
        report = await run_dataset(load_dataset(DATA / "invoices.yaml"), runtime=runtime)
        with anyio.move_on_after(2):
            async for event in sub:
                if event.kind == "gen_ai.evaluation.result":
                    seen.append(event)
                if len(seen) == 17:
                    break
    assert len(seen) == sum(len(r.results) for c in report.cases for r in c.runs) == 17
    one = next(
        e for e in seen if e.payload["keel.eval.case"] == "pi" and e.payload["gen_ai.evaluation.name"] == "json_path"
    )
    assert (
        one.payload["gen_ai.evaluation.score.value"] == 1.0 and one.payload["gen_ai.evaluation.score.label"] == "pass"
    )
    assert one.execution_id == report.case("pi").runs[0].execution_id


async def test_repeat_and_concurrency_run_every_case_that_often(runtime: keel.Runtime) -> None:
    report = await run_dataset(load_dataset(DATA / "invoices.yaml"), runtime=runtime, repeat=3, concurrency=2)
    assert [len(c.runs) for c in report.cases] == [3, 3, 3]
    assert [r.repeat for r in report.case("acme").runs] == [0, 1, 2]
    assert len({r.execution_id for c in report.cases for r in c.runs}) == 9
    assert report.case("acme").spread == 0.0


async def test_action_limits_and_trajectory_read_the_runs_events(runtime: keel.Runtime) -> None:
    report = await run_dataset(load_dataset(DATA / "vendor.yaml"), runtime=runtime)
    report.assert_passed()
    assert SIDE_EFFECTS == ["Nordlys AS"]  # no fixtures: the real action ran
    reasons = {r.evaluator: r.reason for r in report.cases[0].runs[0].results}
    assert reasons["max_action_calls"] == "1 action call(s), limit 1"
    assert reasons["max_model_requests"] == "2 model request(s), limit 2"


async def test_fixtures_stand_in_for_actions_so_the_case_has_no_side_effects(runtime: keel.Runtime) -> None:
    recorded = Case(
        name="recorded",
        input="Nordlys AS",
        expected={"vendor": "Nordlys AS (recorded)", "country": "SE"},
        evaluators=[EvaluatorRef(name="equals")],
        fixtures=Fixtures.model_validate(
            {"actions": [{"action": "lookup_vendor", "arguments": {"name": "Nordlys AS"},
                          "result": {"name": "Nordlys AS (recorded)", "country": "SE"}}]}
        ),
    )  # fmt: skip
    live = Case(
        name="live",
        input="Acme GmbH",
        expected={"vendor": "Acme GmbH", "country": "DE"},
        evaluators=[EvaluatorRef(name="equals")],
    )
    report = await run_dataset(Dataset(name="mixed", cases=[recorded, live]), "vendor", runtime=runtime, concurrency=2)
    report.assert_passed()
    assert SIDE_EFFECTS == ["Acme GmbH"]  # the recorded case called nothing real
    assert runtime.actions.get("lookup_vendor").handler.__name__ == "lookup_vendor"  # put back afterwards


async def test_a_call_the_fixtures_do_not_cover_fails_the_action_not_the_eval(runtime: keel.Runtime) -> None:
    case = Case(
        name="other-args", input="Acme GmbH", evaluators=[EvaluatorRef(name="max_action_calls", arguments={"max": 1})],
        fixtures=Fixtures.model_validate({"actions": [{"action": "lookup_vendor", "arguments": {"name": "Someone"}, "result": {}}]}),
    )  # fmt: skip
    report = await run_dataset(Dataset(name="d", cases=[case]), "vendor", runtime=runtime)
    failed = [e for e in report.cases[0].runs[0].events if e["kind"] == "action.failed"]
    assert failed and "no recorded result left for lookup_vendor" in failed[0]["payload"]["error"]["message"]
    assert SIDE_EFFECTS == []


async def test_a_bad_evaluator_is_an_error_before_any_model_call(runtime: keel.Runtime) -> None:
    model = ScriptedModel([])
    runtime.use_model(model)
    bad = Dataset(name="d", cases=[Case(name="c", input="x", evaluators=[EvaluatorRef(name="equalz")])])
    with pytest.raises(EvalError, match=r"no evaluator named 'equalz'; registered: .*equals"):
        await run_dataset(bad, "invoice", runtime=runtime)
    typo = Dataset(
        name="d", cases=[Case(name="c", input="x", evaluators=[EvaluatorRef(name="regex", arguments={"patern": "x"})])]
    )
    with pytest.raises(EvalError, match=r"case 'c': evaluator 'regex': pattern: Field required; patern: Extra inputs"):
        await run_dataset(typo, "invoice", runtime=runtime)
    assert model.requests == []


async def test_no_runnable_named_lists_the_registered_ones(runtime: keel.Runtime) -> None:
    with pytest.raises(EvalError, match="no runnable named 'nope' .*registered: invoice, vendor"):
        await run_dataset(load_dataset(DATA / "invoices.yaml"), "nope", runtime=runtime)


async def test_a_failed_run_is_recorded_and_judged(runtime: keel.Runtime) -> None:
    runtime.use_model(ScriptedModel(lambda request: "not json at all"))
    report = await run_dataset(load_dataset(DATA / "invoices.yaml"), runtime=runtime)
    run = report.case("acme").runs[0]
    assert run.error and "OutputValidationError" in run.error and not run.passed and run.output is None
    assert report.case("acme").failures()[0].startswith("error: OutputValidationError")


async def test_a_run_past_the_timeout_is_cancelled_and_failed(runtime: keel.Runtime) -> None:
    async def slow(request: keel.ModelRequest) -> str:
        await anyio.sleep(30)
        return "{}"

    runtime.use_model(ScriptedModel(slow))
    dataset = load_dataset(DATA / "invoices.yaml").model_copy(update={"timeout": 0.2})
    with anyio.fail_after(10):
        report = await run_dataset(dataset, runtime=runtime, concurrency=3)
    assert all("did not finish within 0.2s" in (c.runs[0].error or "") for c in report.cases)


async def test_an_evaluator_that_raises_fails_its_result_only(runtime: keel.Runtime, host: keel.PluginHost) -> None:
    def broken(sample: keel.EvalSample) -> keel.EvalResult:
        raise RuntimeError("boom")

    class Extra:
        @keel.hookimpl
        def keel_evaluators(self) -> Any:
            yield keel.EvaluatorSpec(name="broken", evaluate=broken)

    host.register(Extra(), name="extra")
    case = Case(
        name="c",
        input="Invoice 1 from A B, due 2024-01-01, total 1.00 EUR.",
        evaluators=[EvaluatorRef(name="broken"), EvaluatorRef(name="schema")],
    )
    report = await run_dataset(Dataset(name="d", cases=[case]), "invoice", runtime=runtime)
    broken_result, schema_result = report.cases[0].runs[0].results
    assert not broken_result.passed and broken_result.reason == "evaluator failed: boom"
    assert schema_result.passed


async def test_rescore_judges_again_without_running_anything(
    runtime: keel.Runtime, host: keel.PluginHost, tmp_path: Any
) -> None:
    report = await run_dataset(load_dataset(DATA / "invoices.yaml"), runtime=runtime)
    edited = tmp_path / "edited.yaml"
    text = (DATA / "invoices.yaml").read_text().replace("total_eur: 99.5}", "total_eur: 99.0}")
    edited.write_text(text)
    runtime.use_model(ScriptedModel([]))  # any model call would fail: none happens
    again = await rescore(report, host=host, dataset=load_dataset(edited))
    assert again.rescored_from == report.id and again.id != report.id
    assert {c.name for c in again.failed()} == {"acme"}
    numeric = next(r for r in again.case("acme").runs[0].results if r.evaluator == "numeric")
    assert not numeric.passed and "99.5 at total_eur is 0.5 from 99" in numeric.reason
    assert again.case("acme").runs[0].output == report.case("acme").runs[0].output
    assert json.loads(json.dumps(again.to_json()))["summary"]["failed"] == 1


async def test_compare_names_the_regressed_cases(runtime: keel.Runtime) -> None:
    dataset = load_dataset(DATA / "invoices.yaml")
    baseline = await run_dataset(dataset, runtime=runtime)
    WORSE["on"] = True
    worse = await run_dataset(dataset, runtime=runtime)
    comparison = compare(baseline, worse)
    assert [c.name for c in comparison.regressed()] == ["nordlys", "acme", "pi"]
    assert comparison.failing() and comparison.count("same") == 0
    assert any("vendor" in why for why in comparison.regressed()[0].why)
    assert not compare(baseline, baseline).failing()
    assert compare(worse, baseline).count("improved") == 3


async def test_a_case_can_expect_the_run_to_fail(runtime: keel.Runtime) -> None:
    runtime.use_model(ScriptedModel(lambda request: "not json at all"))
    cases = [
        Case(name="fails-as-said", input="x", expected_error=r"OutputValidationError: .*contract"),
        Case(name="fails-otherwise", input="x", expected_error=r"TimeoutError"),
    ]
    report = await run_dataset(Dataset(name="d", cases=cases), "invoice", runtime=runtime)
    assert report.case("fails-as-said").passed and not report.case("fails-otherwise").passed
    assert "expected /TimeoutError/" in report.case("fails-otherwise").failures()[-1]
    runtime.use_model(ScriptedModel(lambda request: '{"number": "1", "vendor": "v", "due": "d", "total_eur": 1}'))
    finished = await run_dataset(Dataset(name="d", cases=cases[:1]), "invoice", runtime=runtime)
    assert finished.failed()[0].failures() == [
        "expected_error: the run finished; expected it to fail with /OutputValidationError: .*contract/"
    ]


async def test_events_and_outputs_json_cannot_hold_are_kept_as_text(runtime: keel.Runtime) -> None:
    class Odd:
        def __str__(self) -> str:
            return "odd thing"

    class OddRunnable:
        name, kind, description = "odd", "odd", "emits an event JSON cannot hold"

        def input_schema(self) -> dict[str, Any]:
            return {}

        def output_schema(self) -> dict[str, Any]:
            return {}

        async def start(self, input: Any, *, runtime: keel.Runtime, tenant: str = "default") -> Any:
            execution = await vendor_agent().start(input, runtime=runtime, tenant=tenant)
            execution.emit("odd.event", {"thing": Odd()})
            return execution

    def vendor_agent() -> keel.Agent:
        return runtime.runnables.get("vendor")  # type: ignore[return-value]

    case = Case(name="c", input="Nordlys AS", evaluators=[EvaluatorRef(name="max_action_calls", arguments={"max": 1})])
    report = await run_dataset(Dataset(name="d", cases=[case]), OddRunnable(), runtime=runtime)  # type: ignore[arg-type]
    events = report.cases[0].runs[0].events
    assert next(e for e in events if e["kind"] == "odd.event")["payload"] == {"thing": "odd thing"}
