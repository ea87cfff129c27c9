"""A flow's drawing with the path an execution took, as inline SVG (no script, no external asset).

TriggerFlow puts its definition's drawing on each execution's ``execution.started`` event
(``payload["drawing"]``: nodes with the op id a step's events carry after the ``@`` of their
``path``, and edges). This module lays it out in layers (each node one row below its deepest
predecessor) and marks what the recorded events say: the steps that ran, the ones that failed,
and the decisions, forks and joins on the way between them.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["flow_drawing", "path_taken", "render_svg"]

_W, _H, _GAP_X, _GAP_Y = 168, 34, 24, 30
_STEP_KINDS = ("flow.step.started", "flow.step.completed", "flow.step.failed", "flow.step.retry")


def flow_drawing(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The drawing a flow execution's recorded ``execution.started`` carries, if any."""
    for row in rows[:3]:
        event = row.get("event") or {}
        if event.get("kind") == "execution.started":
            drawing = (event.get("payload") or {}).get("drawing")
            if isinstance(drawing, dict) and isinstance(drawing.get("nodes"), list):
                return drawing
    return None


def path_taken(drawing: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Node id -> ``ran``, ``failed`` or ``passed`` (a decision, fork or join between nodes that
    ran) for the nodes the recorded events reached; nodes not in it were not taken."""
    by_op: dict[str, list[str]] = {}
    for node in drawing["nodes"]:
        if node.get("op") is not None:
            by_op.setdefault(str(node["op"]), []).append(node["id"])
    state: dict[str, str] = {}
    status = None
    for row in rows:
        event = row.get("event") or {}
        kind = event.get("kind", "")
        payload = event.get("payload") or {}
        if kind in _STEP_KINDS or kind.startswith("flow.wait"):
            op = str(payload.get("path", "")).rpartition("@")[2]
            for node in by_op.get(op, ()):
                if kind == "flow.step.failed":
                    state[node] = "failed"
                else:
                    state.setdefault(node, "ran")
        elif kind == "execution.waiting":  # a wait reached (on Temporal a pause has no step events)
            for interrupt in payload.get("interrupts") or ():
                op = str(interrupt.get("path", "")).rpartition("@")[2] if isinstance(interrupt, dict) else ""
                for node in by_op.get(op, ()):
                    state.setdefault(node, "ran")
            status = kind
        elif kind.startswith("execution.") and kind != "execution.started":
            status = kind
    nodes = {n["id"]: n for n in drawing["nodes"]}
    succ: dict[str, list[str]] = {}
    pred: dict[str, list[str]] = {}
    for edge in drawing.get("edges", ()):
        if not edge.get("dotted"):
            succ.setdefault(edge["from"], []).append(edge["to"])
            pred.setdefault(edge["to"], []).append(edge["from"])
    completed = status == "execution.completed"

    def structural(node_id: str) -> bool:  # a decision, fork, join or end: no event of its own
        return nodes[node_id]["shape"] not in ("box", "subroutine", "hexagon")

    def leads(node_id: str, seen: set[str]) -> bool:
        """Whether a path through structural nodes only goes on to something taken."""
        for after in succ.get(node_id, ()):
            if after in state and state[after] != "passed":
                return True
            if after not in seen and structural(after):
                seen.add(after)
                if (nodes[after]["label"] == "done" and completed) or leads(after, seen):
                    return True
        return False

    for node_id in sorted(nodes, key=_layers(drawing).__getitem__):  # predecessors first
        if node_id in state or not structural(node_id):
            continue
        label = nodes[node_id]["label"]
        start = not pred.get(node_id) and label == "start"
        reached = any(p in state for p in pred.get(node_id, ()))
        if start or (reached and (leads(node_id, {node_id}) or (label == "done" and completed))):
            state[node_id] = "passed"
    return state


def _layers(drawing: Mapping[str, Any]) -> dict[str, int]:
    """Each node's row: one below its deepest predecessor (dotted edges ignored; bounded passes)."""
    ids = [n["id"] for n in drawing["nodes"]]
    depth = dict.fromkeys(ids, 0)
    edges = [(e["from"], e["to"]) for e in drawing.get("edges", ()) if not e.get("dotted")]
    for _ in range(len(ids)):
        changed = False
        for a, b in edges:
            if a in depth and b in depth and depth[b] < depth[a] + 1 <= len(ids):
                depth[b] = depth[a] + 1
                changed = True
        if not changed:
            break
    return depth


def render_svg(drawing: Mapping[str, Any], state: Mapping[str, str]) -> str:
    """The drawing as one ``<svg>`` element; each node a ``<g class='node ran|failed|passed|not-taken'>``
    with ``data-node`` (its id) and a ``<title>`` with its whole label."""
    depth = _layers(drawing)
    rows: dict[int, list[str]] = {}
    for node in drawing["nodes"]:
        rows.setdefault(depth[node["id"]], []).append(node["id"])
    widest = max((len(r) for r in rows.values()), default=1)
    width = widest * (_W + _GAP_X) + _GAP_X
    where: dict[str, tuple[float, float]] = {}
    for level, ids in rows.items():
        offset = (width - len(ids) * (_W + _GAP_X) + _GAP_X) / 2
        for i, node_id in enumerate(ids):
            where[node_id] = (offset + i * (_W + _GAP_X), _GAP_Y / 2 + level * (_H + _GAP_Y))
    height = (max(rows, default=0) + 1) * (_H + _GAP_Y)
    parts = [
        f"<svg id=flow-drawing xmlns='http://www.w3.org/2000/svg' width='{width:.0f}' height='{height:.0f}' "
        f"viewBox='0 0 {width:.0f} {height:.0f}' role=img aria-label='the flow, with the path taken'>"
    ]
    points = {n["id"] for n in drawing["nodes"] if n["shape"] == "point"}
    for edge in drawing.get("edges", ()):
        if edge["from"] not in where or edge["to"] not in where:
            continue
        (x1, y1), (x2, y2) = where[edge["from"]], where[edge["to"]]
        taken = edge["from"] in state and edge["to"] in state and not edge.get("dotted")
        cls = "edge taken" if taken else ("edge dotted" if edge.get("dotted") else "edge")
        ax, ay, bx, by = x1 + _W / 2, y1 + _H, x2 + _W / 2, y2
        if edge["from"] in points:
            ay = y1 + _H / 2
        if edge["to"] in points:
            by = y2 + _H / 2
        parts.append(f"<line class='{cls}' x1='{ax:.1f}' y1='{ay:.1f}' x2='{bx:.1f}' y2='{by:.1f}'/>")
        if edge.get("label"):
            label = html.escape(str(edge["label"])[:28])
            parts.append(f"<text class=edge-label x='{(ax + bx) / 2 + 4:.1f}' y='{(ay + by) / 2:.1f}'>{label}</text>")
    for node in drawing["nodes"]:
        x, y = where[node["id"]]
        label = str(node["label"])
        short = label if len(label) <= 24 else label[:23] + "…"
        cls = state.get(node["id"], "not-taken")
        rx = _H / 2 if node["shape"] in ("circle", "stadium") else 4
        if node["shape"] == "point":  # where branches meet: a dot, not a box
            parts.append(
                f"<g class='node {cls}' data-node='{html.escape(node['id'])}' data-op=''><title>join ({cls})</title>"
                f"<circle cx='{x + _W / 2:.1f}' cy='{y + _H / 2:.1f}' r='6'/></g>"
            )
            continue
        parts.append(
            f"<g class='node {cls}' data-node='{html.escape(node['id'])}' data-op='{html.escape(str(node.get('op') or ''))}'>"
            f"<title>{html.escape(label)} ({cls})</title>"
            f"<rect x='{x:.1f}' y='{y:.1f}' width='{_W}' height='{_H}' rx='{rx:.0f}'/>"
            f"<text x='{x + _W / 2:.1f}' y='{y + _H / 2 + 4:.1f}' text-anchor=middle>{html.escape(short)}</text></g>"
        )
    parts.append("</svg>")
    return "".join(parts)


CSS = (
    "#flow-drawing .node rect,#flow-drawing .node circle{fill:#fff;stroke:#bbb;stroke-width:1}"
    "#flow-drawing .node.passed circle{fill:#1a7f37;stroke:#1a7f37}#flow-drawing .node text{font-size:12px;fill:#999}"
    "#flow-drawing .node.ran rect{fill:#e8f5e9;stroke:#1a7f37;stroke-width:2}#flow-drawing .node.ran text,"
    "#flow-drawing .node.passed text{fill:#111}#flow-drawing .node.passed rect{stroke:#1a7f37;stroke-width:1.5}"
    "#flow-drawing .node.failed rect{fill:#ffebee;stroke:#c62828;stroke-width:2}#flow-drawing .node.failed text{fill:#111}"
    "#flow-drawing .edge{stroke:#ccc;stroke-width:1}#flow-drawing .edge.taken{stroke:#1a7f37;stroke-width:2.5}"
    "#flow-drawing .edge.dotted{stroke-dasharray:4 3}#flow-drawing .edge-label{font-size:10px;fill:#777}"
    ".flow-box{overflow-x:auto;border:1px solid #eee;padding:4px}"
)
