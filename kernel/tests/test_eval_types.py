"""The evaluator contract's types: what an evaluator is handed and what it answers."""

from __future__ import annotations

import pydantic
import pytest

import keel


def test_a_plain_sample_still_needs_only_output_and_expected() -> None:
    sample = keel.EvalSample(output="a", expected="a")
    assert sample.arguments == {} and sample.events == [] and sample.runtime is None and sample.error is None


def test_the_runtime_never_reaches_a_serialised_sample() -> None:
    sample = keel.EvalSample(output={"x": 1}, runtime=object(), events=[{"kind": "model.request"}], duration_ms=3.5)
    dumped = sample.model_dump(mode="json")
    assert "runtime" not in dumped
    assert dumped["events"] == [{"kind": "model.request"}] and dumped["duration_ms"] == 3.5


def test_a_result_may_carry_a_label_and_keeps_its_score_in_range() -> None:
    result = keel.EvalResult(evaluator="judge", passed=True, score=0.8, label="good", reason="clear")
    assert result.label == "good"
    with pytest.raises(pydantic.ValidationError):
        keel.EvalResult(evaluator="judge", passed=True, score=1.5)


def test_a_spec_says_whether_it_calls_a_model() -> None:
    def judge(sample: keel.EvalSample) -> keel.EvalResult:
        return keel.EvalResult(evaluator="j", passed=True, score=1.0)

    assert not keel.EvaluatorSpec(name="exact", evaluate=judge).needs_model
    assert keel.EvaluatorSpec(name="j", evaluate=judge, needs_model=True).needs_model
    with pytest.raises(pydantic.ValidationError):
        keel.EvalSample(output="a", unknown=1)  # type: ignore[call-arg]
