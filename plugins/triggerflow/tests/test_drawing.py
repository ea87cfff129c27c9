"""A definition drawn as a Mermaid flowchart (``TriggerFlow.to_mermaid``): what runs, as it runs.

Split from ``test_builder.py`` (issue 17: no file under plugins/ over 600 lines).
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from keel_triggerflow import FlowDefinitionError, TriggerFlow


def test_mermaid_draws_what_runs_nested_conditions_joins_waits_and_events() -> None:
    async def fetch(ctx: Any) -> Any:
        return ctx.value

    def is_big(value: int) -> bool:
        return value > 10

    research = TriggerFlow("research").to(fetch)
    flow = TriggerFlow("demo")
    (
        flow.to(fetch)
        .if_condition(is_big)
        .if_condition(lambda v: v > 100)
        .to(fetch, name="huge")
        .end_condition()
        .elif_condition(lambda v: v < 0)
        .to(fetch, name="negative")
        .else_condition()
        .end_condition()
        .batch(("a", fetch), ("b", research), concurrency=2)
        .for_each(concurrency=4)
        .to(fetch, name="each")
        .end_for_each()
        .pause_for("approval")
        .emit("Done")
    )
    flow.when("Done").to(fetch, name="after").end()
    text = flow.to_mermaid()
    lines = text.splitlines()
    assert lines[0] == "flowchart TD" and text.endswith("\n")
    declared = [re.match(r'^  (\w+)\W+"(.*)"', line) for line in lines if "--" not in line]
    node = {m.group(2): m.group(1) for m in declared if m}  # label -> node id (last one wins)

    def edge(a: str, b: str, label: str | None = None) -> bool:
        arrow = f' -->|"{label}"| ' if label else " --> "
        return f"  {node[a]}{arrow}{node[b]}" in lines

    # the nested if sits on the outer if's first branch; the elif and the empty else are siblings
    inner = [m.group(1) for m in declared if m and m.group(2) == "if"]
    assert len(inner) == 2
    assert f'  {inner[0]} -->|"if is_big"| {inner[1]}' in lines
    assert f'  {inner[1]} -->|"if v > 100"| {node["huge: fetch"]}' in lines
    assert f'  {inner[0]} -->|"elif v < 0"| {node["negative: fetch"]}' in lines
    assert any(line.startswith(f'  {inner[0]} -->|"else"| merge') for line in lines)  # else: passes on
    assert edge("batch (concurrency 2)", "a: fetch", "a") and edge("batch (concurrency 2)", "sub-flow research", "b")
    assert edge("a: fetch", "join {a, b}") and edge("sub-flow research", "join {a, b}")
    assert edge("for each (concurrency 4)", "each: fetch", "item") and edge("each: fetch", "end for each: list")
    assert edge("end for each: list", "wait for approval") and edge("wait for approval", "emit Done")
    assert f'  {node["emit Done"]} -.->|"Done"| {node["when Done"]}' in lines  # the event starts that chain
    assert edge("when Done", "after: fetch") and edge("after: fetch", "end: result")


def test_mermaid_quotes_labels_and_refuses_an_unfinished_definition() -> None:
    flow = TriggerFlow("q")
    flow.to(lambda ctx: ctx.value, name='say "hi"')
    assert '["say #quot;hi#quot;"]' in flow.to_mermaid()
    broken = TriggerFlow("broken")
    broken.to(lambda ctx: 1).if_condition(lambda v: v)
    with pytest.raises(FlowDefinitionError, match="not closed"):
        broken.to_mermaid()
