"""What the pages show, computed from recorded events: waterfall spans, the step tree, and two
executions aligned by step. Pure functions of event lists (no web framework here)."""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from typing import Any

from keel_devtools.replayer import compare

__all__ = ["Bar", "StepRow", "align", "step_tree", "waterfall"]


@dataclass
class Bar:
    """One span of the waterfall: a model call, an action, a flow step, a wait, the execution."""

    label: str
    kind: str  # execution | model | action | step | wait | retry
    start: float
    end: float
    step: str = ""
    status: str = "ok"
    detail: str = ""


def waterfall(rows: list[dict[str, Any]]) -> list[Bar]:
    """Spans from an execution's recorded events (``RecordingDB.events`` rows), in start order."""
    if not rows:
        return []
    first, last = rows[0]["time"], rows[-1]["time"]
    bars: list[Bar] = [Bar("execution", "execution", first, last, "execution")]
    open_spans: dict[str, Bar] = {}
    waiting: Bar | None = None
    for row in rows:
        event = row["event"]
        kind, payload, t = row["kind"], event.get("payload") or {}, row["time"]
        if kind == "model.request":
            bar = Bar(f"{row['step']} {payload.get('model', '')}", "model", t, t, row["step"])
            open_spans["span:" + str(event.get("span_id"))] = bar
            bars.append(bar)
        elif kind == "model.response":
            done = open_spans.pop("span:" + str(event.get("span_id")), None)
            if done is not None:
                done.end = t
                usage = payload.get("usage") or {}
                tokens = (usage.get("input_tokens") or 0) + (usage.get("output_tokens") or 0)
                cost = f" ${row['cost']:.6f}" if row.get("cost") else ""
                done.detail = f"{tokens} tokens{cost}, {payload.get('finish_reason', '')}"
        elif kind == "action.requested":
            bar = Bar(f"{row['step']}", "action", t, t, row["step"])
            open_spans["call:" + str(payload.get("call_id"))] = bar
            bars.append(bar)
        elif kind in ("action.completed", "action.failed", "action.denied"):
            done = open_spans.pop("call:" + str(payload.get("call_id")), None)
            if done is not None:
                done.end = t
                done.status = "ok" if kind == "action.completed" else kind.split(".")[1]
                done.detail = str(payload.get("result") or (payload.get("error") or {}).get("message", ""))[:120]
        elif kind == "flow.step.started":
            bar = Bar(f"{row['step']} {payload.get('step', '')}", "step", t, t, row["step"])
            open_spans["step:" + row["step"]] = bar
            bars.append(bar)
        elif kind in ("flow.step.completed", "flow.step.failed"):
            done = open_spans.pop("step:" + row["step"], None)
            if done is not None:
                done.end, done.status = t, "ok" if kind.endswith("completed") else "failed"
        elif kind in ("output.retry", "flow.step.retry"):
            bars.append(Bar(f"retry {row['step']}", "retry", t, t, row["step"], "retry", json.dumps(payload)[:120]))
        elif kind == "execution.waiting":
            waiting = Bar("waiting", "wait", t, t, "wait", "waiting")
            bars.append(waiting)
        elif waiting is not None and kind in ("flow.signal", "execution.completed", "execution.failed"):
            waiting.end, waiting.status = t, "ok"
            waiting = None
    for bar in open_spans.values():  # still running: up to the last event
        bar.end, bar.status = last, "running"
    bars[0].status = rows[-1]["kind"].split(".", 1)[1] if rows[-1]["kind"].startswith("execution.") else "running"
    return sorted(bars, key=lambda b: (b.start, b.kind != "execution"))


@dataclass
class StepRow:
    step: str
    depth: int
    events: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    kinds: list[str] = field(default_factory=list)


def step_tree(rows: list[dict[str, Any]]) -> list[StepRow]:
    """Steps in first-seen order (children after their parent), with tokens and cost per step."""
    found: dict[str, StepRow] = {}
    for row in rows:
        step = row["step"]
        parts = step.split("/")
        for i in range(1, len(parts) + 1):
            key = "/".join(parts[:i])
            if key not in found:
                found[key] = StepRow(key, i - 1)
        item = found[step]
        item.events += 1
        item.input_tokens += row.get("input_tokens") or 0
        item.output_tokens += row.get("output_tokens") or 0
        item.cost += row.get("cost") or 0.0
        if row["kind"] not in item.kinds:
            item.kinds.append(row["kind"])
    order = list(found)
    return sorted(found.values(), key=lambda r: (_root_order(r.step, order), r.step.count("/"), order.index(r.step)))


def _root_order(step: str, order: list[str]) -> int:
    return order.index(step.split("/")[0])


#: what of each step is shown side by side in a comparison
_SHOWN = {
    "model.request": "request",
    "model.response": "text",
    "model.tool_call": "arguments",
    "action.requested": "arguments",
    "action.completed": "content",
    "action.failed": "error",
    "output.retry": "errors",
    "execution.completed": "output",
    "execution.failed": "error",
}


def _content(rows: list[dict[str, Any]]) -> dict[str, str]:
    """Per step, the text a person compares: prompts, arguments, outputs."""
    out: dict[str, list[str]] = {}
    for row in rows:
        field_name = _SHOWN.get(row["kind"])
        if field_name is None:
            continue
        value = (row["event"].get("payload") or {}).get(field_name)
        if row["kind"] == "model.request" and isinstance(value, dict):
            value = [f"[{m.get('role')}] {m.get('content', '')}" for m in value.get("messages", [])]
            text = "\n".join(value)
        else:
            text = value if isinstance(value, str) else json.dumps(value, indent=1, ensure_ascii=False, default=str)
        out.setdefault(row["step"], []).append(f"{row['kind']}: {text}")
    return {k: "\n".join(v) for k, v in out.items()}


def align(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> dict[str, Any]:
    """Two executions side by side, step by step: each step's content in both, a diff where they
    differ, and the first divergence (as a replay would find it)."""
    left, right = _content(a), _content(b)
    steps = [*left, *(s for s in right if s not in left)]
    divergence = compare([r["event"] for r in a], [r["event"] for r in b])
    rows = []
    for step in steps:
        x, y = left.get(step, ""), right.get(step, "")
        diff = ""
        if x != y:
            diff = "\n".join(difflib.unified_diff(x.splitlines(), y.splitlines(), "A", "B", lineterm="", n=1))
        rows.append({"step": step, "a": x, "b": y, "same": x == y, "diff": diff})
    return {
        "steps": rows,
        "first_divergence": None
        if divergence is None
        else {
            "step": divergence.step_path,
            "where": divergence.where,
            "expected": divergence.expected,
            "got": divergence.got,
        },
    }
