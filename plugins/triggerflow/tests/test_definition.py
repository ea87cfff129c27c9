"""Flows as data: validated whole before anything runs, and the same behaviour as their code twins."""

from __future__ import annotations

import json
from typing import Any

import pytest

from keel_triggerflow import FlowDefinitionError, TriggerFlow
from keel_triggerflow.definition import FlowDefinition, Registry

registry = Registry()


@registry.chunk(input=int, output=int)
async def inc(ctx: Any) -> int:
    return ctx.value + 1


@registry.chunk(input=int, output=int)
async def double(ctx: Any) -> int:
    return ctx.value * 2


@registry.chunk(output=str)
async def label(ctx: Any) -> str:
    return f"n={ctx.value}"


@registry.chunk()
async def items(ctx: Any) -> list[int]:
    return list(range(ctx.value))


registry.add_condition("big", lambda v: v > 5)

DATA = {
    "name": "twin",
    "steps": [
        {"to": "inc"},
        {
            "if": [
                {"condition": "big", "then": [{"to": "double"}]},
                {"condition": {"op": ">", "value": 2}, "then": [{"to": "inc"}]},
            ],
            "else": [{"to": "inc"}, {"to": "inc"}],
        },
        {"match": [{"case": 4, "then": [{"to": "double"}]}], "else": [{"to": "inc"}]},
        {"batch": {"a": "inc", "b": "double"}, "concurrency": 2},
        {"emit": "joined"},
    ],
    "on": [{"when": "joined", "steps": [{"end": True}]}],
}


def code_twin() -> TriggerFlow:
    flow = TriggerFlow("twin")
    (
        flow.to(inc)
        .if_condition(lambda v: v > 5)
        .to(double)
        .elif_condition(lambda v: v > 2)
        .to(inc)
        .else_condition()
        .to(inc)
        .to(inc)
        .end_condition()
        .match()
        .case(4)
        .to(double)
        .case_else()
        .to(inc)
        .end_match()
        .batch(("a", inc), ("b", double), concurrency=2)
        .emit("joined")
    )
    flow.when("joined").end()
    return flow


@pytest.mark.parametrize("value", [0, 2, 3, 10])
async def test_data_flow_runs_like_its_code_twin(value: int) -> None:
    from_data = registry.load(DATA)
    assert await from_data.run(value) == await code_twin().run(value)


async def test_json_text_and_for_each() -> None:
    text = json.dumps({"name": "each", "steps": [{"to": "items"}, {"for_each": [{"to": "double"}], "concurrency": 3}]})
    assert await registry.load(text).run(4) == [0, 2, 4, 6]


async def test_yaml_definition() -> None:
    pytest.importorskip("yaml")
    text = "name: y\nsteps:\n  - to: inc\n  - to: label\n"
    assert await registry.load(text).run(1) == "n=2"


def test_invalid_definitions_are_refused_whole() -> None:
    bad = {
        "name": "bad",
        "steps": [
            {"to": "nope"},
            {"to": "label"},
            {"to": "double"},
            {"emit": "nobody-listens"},
            {"if": [{"condition": "unknown-condition", "then": [{"flow": "missing-flow"}]}]},
            {"batch": {"x": "ghost"}},
        ],
    }
    with pytest.raises(FlowDefinitionError) as caught:
        registry.load(bad)
    problems = "\n".join(caught.value.problems)
    assert len(caught.value.problems) == 6
    for needle in ("'nope'", "takes int", "'unknown-condition'", "'missing-flow'", "'ghost'", "'nobody-listens'"):
        assert needle in problems


def test_shape_errors_are_listed_with_their_place() -> None:
    with pytest.raises(FlowDefinitionError) as caught:
        registry.load({"name": "shape", "steps": [{"for_each": [], "concurrency": "many"}, {"bogus": 1}]})
    assert [p.split(":")[0] for p in caught.value.problems] == [
        "steps.0.for_each.for_each",
        "steps.0.for_each.concurrency",
        "steps.1",
    ]


def test_shape_and_name_problems_are_listed_in_one_round() -> None:
    with pytest.raises(FlowDefinitionError) as caught:
        registry.load({"name": "both", "steps": [{"to": "ghost"}, {"for_each": [{"to": "phantom"}], "concurrency": 0}]})
    problems = "\n".join(caught.value.problems)
    assert "concurrency" in problems and "'ghost'" in problems and "'phantom'" in problems


def test_the_schema_is_there_for_a_model_to_read() -> None:
    schema = FlowDefinition.model_json_schema()
    assert "steps" in schema["properties"]
