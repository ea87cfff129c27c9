"""Flows as data: validated whole before anything runs, and the same behaviour as their code twins."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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


@pytest.mark.parametrize(
    ("source", "cause", "fix"),
    [
        ([DATA], "got a list (1 item(s))", "its own Registry.load() call"),
        (None, "cannot read a definition from NoneType", "give JSON or YAML text"),
        (42, "cannot read a definition from int", "a dict, a pathlib.Path"),
        (b'{"name": "x\xff"}', "not UTF-8 text (byte 11 is b'\\xff')", "encode it as UTF-8"),
        ("[" * 100_000, "nested too deeply to parse", "flatten the definition"),
        ('{"n": ' + "1" * 5000 + "}", "a value cannot be read", "4300 digits"),
    ],
)
def test_unreadable_sources_name_the_cause_and_the_fix(source: Any, cause: str, fix: str) -> None:
    with pytest.raises(FlowDefinitionError) as caught:
        registry.load(source)
    assert caught.value.flow == "<unparsed>"
    assert cause in str(caught.value) and fix in str(caught.value)


def test_unreadable_files_name_the_path(tmp_path: Path) -> None:
    (tmp_path / "latin1.json").write_bytes('{"name": "café"}'.encode("latin-1"))
    for path, cause in [
        (tmp_path / "missing.json", "No such file"),
        (tmp_path, "Is a directory"),
        (tmp_path / "latin1.json", "not UTF-8 text"),
    ]:
        with pytest.raises(FlowDefinitionError, match=cause) as caught:
            registry.load(path)
        assert str(path) in str(caught.value)


def test_a_definition_nested_past_the_recursion_limit_is_refused_with_a_reason() -> None:
    node: dict[str, Any] = {"to": "ghost"}
    for _ in range(3000):
        node = {"for_each": [node], "concurrency": 0}
    with pytest.raises(FlowDefinitionError) as caught:
        registry.load({"name": "deep", "steps": [node]})
    assert caught.value.flow == "deep" and caught.value.problems


# Words a definition uses, so that the generator reaches past the shape check into names and wiring.
_WORDS = st.sampled_from(["to", "inc", "double", "label", "items", "big", "if", "then", "else", "condition", "op"])
_KEYS = _WORDS | st.sampled_from(
    [
        "name",
        "steps",
        "on",
        "when",
        "batch",
        "match",
        "case",
        "for_each",
        "pause_for",
        "emit",
        "end",
        "key",
        "path",
        "value",
        "timeout",
        "concurrency",
        "retries",
        "flow",
        "collect",
        "set_state",
        "mode",
        "description",
    ]
)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6) | _WORDS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS | st.text(max_size=3), inner, max_size=5),
    max_leaves=30,
)
_STEP = st.one_of(
    st.builds(lambda to: {"to": to}, _WORDS),
    st.builds(lambda e: {"emit": e}, _WORDS),
    st.builds(lambda c, t: {"if": [{"condition": c, "then": [{"to": t}]}]}, _WORDS | _JSON, _WORDS),
    st.builds(lambda b: {"batch": b}, st.dictionaries(st.text(max_size=3), _WORDS, max_size=3)),
    st.builds(lambda s: {"for_each": s}, st.lists(st.builds(lambda to: {"to": to}, _WORDS), max_size=3)),
    _JSON,
)
_DEFINITIONS = st.builds(
    lambda name, steps, extra: {"name": name, "steps": steps, **extra},
    st.text(max_size=8) | st.integers(),
    st.lists(_STEP, max_size=5),
    st.dictionaries(_KEYS, _JSON, max_size=2),
)
_ANYTHING = st.one_of(
    _JSON,
    _DEFINITIONS,
    _DEFINITIONS.map(json.dumps),
    _DEFINITIONS.map(lambda d: json.dumps(d).encode()),
    _JSON.map(json.dumps),
    st.text(max_size=60),
    st.binary(max_size=60),
    st.lists(_DEFINITIONS, max_size=2).map(tuple),
    st.builds(object),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_ANYTHING)
def test_any_input_loads_or_is_a_definition_error(source: Any) -> None:
    """Whatever arrives (a model's output, an HTTP body, a file), load() gives a flow or one
    FlowDefinitionError with at least one problem, never another exception."""
    try:
        flow = registry.load(source)
    except FlowDefinitionError as err:
        assert err.problems and all(isinstance(p, str) and p for p in err.problems)
    else:
        assert isinstance(flow, TriggerFlow) and flow.definition is not None


def test_the_schema_is_there_for_a_model_to_read() -> None:
    schema = FlowDefinition.model_json_schema()
    assert "steps" in schema["properties"]
