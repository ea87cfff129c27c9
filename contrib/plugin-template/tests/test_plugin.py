"""The template's own tests: Keel's conformance kit, plus the behaviour a user would notice."""

from __future__ import annotations

from typing import Any

import pytest

import keel
from keel.testing import make_host
from keel.testing.conformance import ActionConformance, EvaluatorConformance
from keel_plugin_template import plugin


class TestWordCount(ActionConformance):
    @pytest.fixture
    def action_spec(self) -> keel.ActionSpec:
        return plugin.word_count

    @pytest.fixture
    def valid_arguments(self) -> dict[str, Any]:
        return {"text": "three small words"}


class TestMaxWords(EvaluatorConformance):
    @pytest.fixture
    def evaluator_spec(self) -> keel.EvaluatorSpec:
        return make_host(plugin).evaluators()["max_words"].spec

    @pytest.fixture
    def passing_sample(self) -> keel.EvalSample:
        return keel.EvalSample(output="short answer", metadata={"max_words": 5})

    @pytest.fixture
    def failing_sample(self) -> keel.EvalSample:
        return keel.EvalSample(output="one two three four five six", metadata={"max_words": 5})


def test_registers_through_the_hooks() -> None:
    host = make_host(plugin)
    assert host.actions()["word_count"].plugin == plugin.__name__
    assert "max_words" in host.evaluators()


async def test_word_count_counts() -> None:
    assert await keel.invoke_action(plugin.word_count, {"text": "a b  c"}) == 3


def test_entry_point_is_installed() -> None:
    from importlib.metadata import entry_points

    # found by the module it names, so the test still holds after you rename the entry point
    (ep,) = [ep for ep in entry_points(group="keel") if ep.value == plugin.__name__]
    assert ep.load() is plugin
