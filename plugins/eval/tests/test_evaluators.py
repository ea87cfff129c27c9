"""The built-in evaluators, one by one, on samples built by hand and on a real run's events."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import keel
from keel.testing.conformance import EvaluatorConformance
from keel_eval.errors import EvalError
from keel_eval.evaluators import BUILTINS, builtin_specs, check_arguments
from keel_eval.paths import resolve

SPECS = {s.name: s for s in builtin_specs()}


def judge(
    name: str, output: Any = None, expected: Any = None, events: list[dict[str, Any]] | None = None, **arguments: Any
) -> keel.EvalResult:
    sample = keel.EvalSample(output=output, expected=expected, arguments=arguments, events=events or [])
    result = SPECS[name].evaluate(sample)
    assert isinstance(result, keel.EvalResult)
    return result


class TestEqualsConformance(EvaluatorConformance):
    @pytest.fixture
    def evaluator_spec(self) -> keel.EvaluatorSpec:
        return SPECS["equals"]

    @pytest.fixture
    def passing_sample(self) -> keel.EvalSample:
        return keel.EvalSample(output={"a": 1}, expected={"a": 1})

    @pytest.fixture
    def failing_sample(self) -> keel.EvalSample:
        return keel.EvalSample(output={"a": 2}, expected={"a": 1})


def test_every_builtin_is_registered_as_the_evaluators_module_describes_it() -> None:
    assert list(SPECS) == list(BUILTINS)
    for name, spec in SPECS.items():
        assert (spec.description, spec.needs_model) == (BUILTINS[name].description, BUILTINS[name].needs_model)
    assert [s.name for s in SPECS.values() if s.needs_model] == ["judge"]


def test_registering_imports_no_evaluator_code() -> None:
    import subprocess
    import sys

    code = "import sys; from keel_eval import plugin; list(plugin.keel_evaluators()); print('keel_eval.evaluators' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        == "False"
    )


def test_rules() -> None:
    out = {"vendor": "Nordlys AS", "items": [{"price": 10}, {"price": 20}], "note": "Paid in full"}
    assert judge("equals", out, {"vendor": "Nordlys AS"}, path="vendor").passed
    assert not judge("equals", out, {"vendor": "nordlys as"}, path="vendor").passed
    assert judge("equals", out, {"vendor": "nordlys as"}, path="vendor", ignore_case=True).passed
    assert judge("equals", out, path="items[*].price", value=[10, 20]).passed
    assert judge("contains", out, path="note", value="full").passed
    assert judge("contains", out, value={"vendor": "Nordlys AS"}).passed
    assert not judge("contains", out, path="items[*].price", value=[30]).passed
    assert judge("regex", out, path="note", pattern="^paid", ignore_case=True).passed
    failed = judge("regex", out, path="vendor", pattern=r"\d+")
    assert not failed.passed and "does not match" in failed.reason
    rules = judge("json_path", out, path="items[0].price", min=5, max=15, type="integer")
    assert rules.passed and rules.score == 1.0
    partial = judge("json_path", out, path="items[1].price", min=5, max=15)
    assert not partial.passed and partial.score == 0.5
    assert judge("json_path", out, path="missing", exists=False).passed
    assert not judge("json_path", out, path="missing").passed


def test_numeric_tolerance_and_partial_credit() -> None:
    assert judge("numeric", {"t": 100.4}, {"t": 100}, path="t", abs=0.5).passed
    assert judge("numeric", {"t": 101}, {"t": 100}, path="t", rel=0.01).passed
    far = judge("numeric", {"t": 150}, {"t": 100}, path="t", rel=0.01)
    assert not far.passed and 0 < far.score < 1
    assert not judge("numeric", {"t": "abc"}, {"t": 100}, path="t").passed


def test_schema_checks_the_output_contract() -> None:
    contract = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    sample = keel.EvalSample(output={"n": "x"}, output_schema=contract)
    result = SPECS["schema"].evaluate(sample)
    assert (
        isinstance(result, keel.EvalResult) and not result.passed and result.reason.startswith("n: 'x' is not of type")
    )
    ok = SPECS["schema"].evaluate(keel.EvalSample(output={"n": 1}, output_schema=contract))
    assert isinstance(ok, keel.EvalResult) and ok.passed
    with pytest.raises(EvalError, match="no output contract"):
        SPECS["schema"].evaluate(keel.EvalSample(output={}))


EVENTS = [
    {"kind": "execution.started", "seq": 1, "time": 100.0, "payload": {}},
    {"kind": "model.request", "seq": 2, "time": 100.1, "payload": {}},
    {
        "kind": "model.response",
        "seq": 3,
        "time": 100.2,
        "payload": {"usage": {"input_tokens": 900, "output_tokens": 100}},
    },
    {"kind": "action.requested", "seq": 4, "payload": {"call_id": "a", "action": "search", "arguments": {"q": "x"}}},
    {"kind": "action.completed", "seq": 5, "payload": {"call_id": "a", "result": "[1, 2]"}},
    {"kind": "action.requested", "seq": 6, "payload": {"call_id": "b", "action": "fetch", "arguments": {"id": 1}}},
    {"kind": "action.failed", "seq": 7, "payload": {"call_id": "b", "error": {"type": "timeout", "message": "slow"}}},
    {"kind": "model.request", "seq": 8, "time": 100.3, "payload": {}},
    {
        "kind": "model.response",
        "seq": 9,
        "time": 100.5,
        "payload": {"usage": {"input_tokens": 1000, "output_tokens": 50}},
    },
]


def test_limits_read_the_events() -> None:
    assert judge("max_model_requests", events=EVENTS, max=2).passed
    over = judge("max_model_requests", events=EVENTS, max=1)
    assert not over.passed and over.score == 0.5
    assert judge("max_tokens", events=EVENTS, max=2050).passed
    assert not judge("max_tokens", events=EVENTS, max_output=100).passed
    cost = judge("max_cost", events=EVENTS, max=0.01, input_per_million=3, output_per_million=15)
    assert cost.passed and cost.reason.startswith("0.007950 USD")  # 1900 * 3e-6 + 150 * 15e-6
    assert not judge("max_action_calls", events=EVENTS, max=1).passed
    assert judge("max_action_calls", events=EVENTS, max=1, action="fetch").passed
    assert judge("max_duration", events=EVENTS, max_ms=600).passed
    assert not judge("max_duration", events=EVENTS, max_ms=400).passed
    timed = SPECS["max_duration"].evaluate(keel.EvalSample(duration_ms=50.0, arguments={"max_ms": 10}))
    assert isinstance(timed, keel.EvalResult) and not timed.passed and timed.score == 0.2


def test_trajectory_in_order_exact_and_as_a_set() -> None:
    assert judge("trajectory", events=EVENTS, calls=["search", "fetch"]).passed
    assert judge("trajectory", events=EVENTS, calls=["fetch"]).passed  # a subsequence
    wrong = judge("trajectory", events=EVENTS, calls=["fetch", "search"])
    assert not wrong.passed and wrong.score == 0.5
    assert judge("trajectory", events=EVENTS, calls=["search", "fetch"], mode="exact").passed
    assert not judge("trajectory", events=EVENTS, calls=["search"], mode="exact").passed
    assert judge("trajectory", events=EVENTS, calls=["fetch", "search"], mode="set").passed
    assert not judge("trajectory", events=EVENTS, calls=["fetch"], mode="set", allow_extra=False).passed
    assert judge("trajectory", events=EVENTS, calls=[{"action": "search", "arguments": {"q": "x"}}]).passed
    assert not judge("trajectory", events=EVENTS, calls=[{"action": "search", "arguments": {"q": "y"}}]).passed


def test_arguments_are_checked_with_the_fields_named() -> None:
    with pytest.raises(
        EvalError,
        match=r"here: evaluator 'numeric': abs: Input should be greater than or equal to 0.*Its arguments: path, value, abs, rel",
    ):
        check_arguments("numeric", {"abs": -1}, "here")
    assert check_arguments("someone_elses", {"anything": 1}, "here") is None
    with pytest.raises(EvalError, match="not a valid regular expression"):
        judge("regex", "x", pattern="(")
    with pytest.raises(EvalError, match="give the case an expected output"):
        judge("equals", "x")


@given(
    st.recursive(
        st.integers() | st.text(max_size=5),
        lambda c: (
            st.lists(c, max_size=3) | st.dictionaries(st.from_regex(r"[a-z]{1,4}", fullmatch=True), c, max_size=3)
        ),
        max_leaves=10,
    )
)
def test_every_leaf_is_found_at_its_own_path(data: Any) -> None:
    def leaves(value: Any, path: str) -> Any:
        if isinstance(value, dict):
            for key, item in value.items():
                yield from leaves(item, f"{path}.{key}" if path else key)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                yield from leaves(item, f"{path}[{i}]")
        else:
            yield path, value

    for path, value in leaves(data, ""):
        assert resolve(data, path) == (True, value)


def test_a_bad_path_is_an_error_that_shows_the_forms() -> None:
    with pytest.raises(EvalError, match="write keys as a.b"):
        resolve({}, "a..b[")
