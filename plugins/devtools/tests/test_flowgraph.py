"""The flow drawing on the execution page: which nodes the recorded events say were taken."""

from __future__ import annotations

from typing import Any

from keel_devtools.flowgraph import flow_drawing, path_taken, render_svg

# what TriggerFlow's drawing of  a -> if (big) b else c -> done  looks like (keel_triggerflow.draw.graph)
DRAWING: dict[str, Any] = {
    "nodes": [
        {"id": "start1", "label": "start", "shape": "circle", "op": None},
        {"id": "step2", "label": "a", "shape": "box", "op": "0"},
        {"id": "if3", "label": "if", "shape": "rhombus", "op": "1"},
        {"id": "step4", "label": "b", "shape": "box", "op": "1.0.0"},
        {"id": "step5", "label": "c", "shape": "box", "op": "1.e.0"},
        {"id": "merge6", "label": " ", "shape": "point", "op": None},
        {"id": "done7", "label": "done", "shape": "circle", "op": None},
    ],
    "edges": [
        {"from": "start1", "to": "step2", "label": "", "dotted": False},
        {"from": "step2", "to": "if3", "label": "", "dotted": False},
        {"from": "if3", "to": "step4", "label": "if big", "dotted": False},
        {"from": "if3", "to": "step5", "label": "else", "dotted": False},
        {"from": "step4", "to": "merge6", "label": "", "dotted": False},
        {"from": "step5", "to": "merge6", "label": "", "dotted": False},
        {"from": "merge6", "to": "done7", "label": "", "dotted": False},
    ],
}


def rows(*steps: tuple[str, str], end: str = "execution.completed") -> list[dict[str, Any]]:
    out = [{"event": {"kind": "execution.started", "payload": {"flow": "f", "drawing": DRAWING}}}]
    out += [{"event": {"kind": kind, "payload": {"path": path, "step": "x"}}} for kind, path in steps]
    return [*out, {"event": {"kind": end, "payload": {}}}]


def test_the_branch_that_ran_is_marked_and_the_other_is_not() -> None:
    recorded = rows(("flow.step.completed", "@0"), ("flow.step.completed", "@1.0.0"))
    drawing = flow_drawing(recorded)
    assert drawing is DRAWING
    state = path_taken(drawing, recorded)
    assert state == {
        "start1": "passed", "step2": "ran", "if3": "passed", "step4": "ran", "merge6": "passed", "done7": "passed",
    }  # fmt: skip
    svg = render_svg(drawing, state)
    assert "<g class='node not-taken' data-node='step5'" in svg
    assert svg.count("class='edge taken'") == 5  # start, a, if -> b, b -> merge, merge -> done


def test_a_failed_step_is_marked_and_the_end_is_not_reached() -> None:
    recorded = rows(("flow.step.completed", "@0"), ("flow.step.failed", "@1.e.0"), end="execution.failed")
    state = path_taken(DRAWING, recorded)
    assert state["step5"] == "failed" and "step4" not in state
    assert "done7" not in state and "merge6" not in state


def test_an_agent_execution_has_no_drawing() -> None:
    agent_rows = [{"event": {"kind": "execution.started", "payload": {"agent": "a"}}}]
    assert flow_drawing(agent_rows) is None
    assert flow_drawing([]) is None
