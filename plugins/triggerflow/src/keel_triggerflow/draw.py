"""A flow as a Mermaid flowchart, drawn from the compiled definition: the structure that runs.

``flow.to_mermaid()`` (or ``keel flow graph FILE``) renders every chain: the main one from
``start``, each ``when(...)`` chain from its event, conditions as decisions with labelled edges,
``batch`` and ``for_each`` as a fork and its join, sub-flows, waits, emits (a dotted edge to the
chains they start), collects and ``end``. Paste it into any Mermaid viewer (GitHub renders it).
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from keel_triggerflow._ops import (
    Batch,
    Collect,
    Emit,
    End,
    ForEach,
    If,
    Match,
    Op,
    Predicate,
    SetState,
    Step,
    SubFlow,
)

if TYPE_CHECKING:
    from keel_triggerflow.flow import TriggerFlow

__all__ = ["graph", "to_mermaid"]


def to_mermaid(flow: TriggerFlow) -> str:
    """The flow's definition as Mermaid ``flowchart TD`` text (the definition is checked first)."""
    return _Drawing(flow).render()


def graph(flow: TriggerFlow) -> dict[str, Any]:
    """The same drawing as data, for a viewer that lays it out itself (DevTools' execution page):
    ``nodes`` (``id``, ``label``, ``shape``, and ``op``: the op id a step's events carry after the
    ``@`` of their ``path``), ``edges`` (``from``, ``to``, ``label``, ``dotted``) and ``mermaid``."""
    drawing = _Drawing(flow)
    text = drawing.render()
    return {"nodes": drawing.nodes, "edges": drawing.edges, "mermaid": text}


class _Drawing:
    def __init__(self, flow: TriggerFlow):
        self.flow = flow
        self.compiled = flow.compile()
        self.lines: list[str] = ["flowchart TD"]
        self.count = 0
        self.emits: list[tuple[str, str]] = []  # (node, event)
        self.collects: dict[str, str] = {}  # collect name -> its node
        self.nodes: list[dict[str, Any]] = []
        self.edges: list[dict[str, Any]] = []
        self.current: Op | None = None  # the op being drawn: its nodes carry its id

    def render(self) -> str:
        start = self.node("start", "start", "circle")
        exits = self.chain(self.compiled.main, [(start, "")])
        self.finish(exits)
        handlers: dict[int, tuple[list[Op], list[str], bool]] = {}
        for event, entries in self.compiled.handlers.items():
            for ops, join in entries:
                handlers.setdefault(id(ops), (ops, [], join is not None))[1].append(event)
        starts: dict[str, str] = {}
        for ops, events, all_of in handlers.values():
            label = "when " + (" and " if all_of else " or ").join(events)
            self.current = None
            head = self.node("when", label, "stadium")
            for event in events:
                starts.setdefault(event, head)
            self.finish(self.chain(ops, [(head, "")]))
        for node, event in self.emits:
            target = starts.get(event)
            if target is not None:
                self.lines.append(f"  {node} -.->|{_quote(event)}| {target}")
                self.edges.append({"from": node, "to": target, "label": event, "dotted": True})
        return "\n".join(self.lines) + "\n"

    # ------------------------------------------------------------------------------- pieces
    def node(self, kind: str, label: str, shape: str = "box") -> str:
        self.count += 1
        name = f"{kind}{self.count}"
        text = _quote(label)
        left, right = _SHAPES[shape]
        self.lines.append(f"  {name}{left}{text}{right}")
        op = getattr(self.current, "sid", None) if kind not in ("merge", "join", "done") else None
        self.nodes.append({"id": name, "label": label, "shape": shape, "op": op})
        return name

    def edge(self, sources: list[tuple[str, str]], target: str) -> None:
        for source, label in sources:
            self.lines.append(f"  {source} -->|{_quote(label)}| {target}" if label else f"  {source} --> {target}")
            self.edges.append({"from": source, "to": target, "label": label, "dotted": False})

    def finish(self, exits: list[tuple[str, str]]) -> None:
        """A chain's loose ends go to a shared ``done`` node, so every path visibly ends."""
        if exits:
            self.edge(exits, self.node("done", "done", "circle"))

    def chain(self, ops: list[Op], entry: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Draw ``ops`` after ``entry`` (nodes with an edge label each); return the loose ends."""
        for op in ops:
            entry = self.op(op, entry)
            if not entry:
                break
        return entry

    def op(self, op: Op, entry: list[tuple[str, str]]) -> list[tuple[str, str]]:
        self.current = op
        if isinstance(op, Step):
            if op.name.startswith("pause_for:"):
                node = self.node("wait", "wait for " + op.name.partition(":")[2], "hexagon")
            else:
                retries = f" (retries {op.retries})" if op.retries else ""
                function = getattr(op.fn, "__name__", "")
                named = f"{op.name}: {function}" if function not in ("", "<lambda>", op.name) else op.name
                node = self.node("step", named + retries)
            self.edge(entry, node)
            return [(node, "")]
        if isinstance(op, SubFlow):
            node = self.node("sub", f"sub-flow {op.flow.name}", "subroutine")
            self.edge(entry, node)
            return [(node, "")]
        if isinstance(op, If):
            decision = self.node("if", "if", "rhombus")
            self.edge(entry, decision)
            exits: list[tuple[str, str]] = []
            for i, (pred, ops) in enumerate(op.branches):
                exits += self.branch(ops, decision, ("if " if i == 0 else "elif ") + _predicate(pred))
            exits += self.branch(op.else_ops or [], decision, "else")
            return self.merge(exits)
        if isinstance(op, Match):
            decision = self.node("match", "match" + (" all" if op.mode != "hit_first" else ""), "rhombus")
            self.edge(entry, decision)
            exits = []
            for case, ops in op.cases:
                exits += self.branch(ops, decision, _predicate(case) if isinstance(case, Predicate) else repr(case))
            exits += self.branch(op.else_ops or [], decision, "else")
            return self.merge(exits)
        if isinstance(op, Batch):
            fork = self.node("batch", "batch" + _limits(op), "fork")
            self.edge(entry, fork)
            ends: list[tuple[str, str]] = []
            for name, ops in op.branches:
                ends += self.branch(ops, fork, name)
            join = self.node("join", "join {" + ", ".join(name for name, _ in op.branches) + "}", "fork")
            self.edge(ends, join)
            return [(join, "")]
        if isinstance(op, ForEach):
            fork = self.node("each", "for each" + _limits(op), "fork")
            self.edge(entry, fork)
            join = self.node("join", "end for each: list", "fork")
            self.edge(self.branch(op.ops, fork, "item"), join)
            return [(join, "")]
        if isinstance(op, Emit):
            node = self.node("emit", f"emit {op.event}", "flag")
            self.edge(entry, node)
            self.emits.append((node, op.event))
            return [(node, "")]
        if isinstance(op, Collect):
            if op.name not in self.collects:
                keys = ", ".join(self.compiled.collect_keys.get(op.name, []))
                self.collects[op.name] = self.node("collect", f"collect {op.name}: {keys}", "fork")
            node = self.collects[op.name]
            self.edge([(source, label or op.key) for source, label in entry], node)
            if op.then:
                return self.chain(op.then, [(node, "")])
            return []
        if isinstance(op, End):
            node = self.node("end", "end: result", "circle")
            self.edge(entry, node)
            return []
        if isinstance(op, SetState):
            node = self.node("state", f"state[{op.key}]", "cylinder")
            self.edge(entry, node)
            return [(node, "")]
        node = self.node("op", type(op).__name__)  # an op this drawing does not know yet
        self.edge(entry, node)
        return [(node, "")]

    def branch(self, ops: list[Op], start: str, label: str) -> list[tuple[str, str]]:
        if not ops:
            return [(start, label)]  # nothing on this branch: the value passes on
        return self.chain(ops, [(start, label)])

    def merge(self, exits: list[tuple[str, str]]) -> list[tuple[str, str]]:
        if len(exits) <= 1:
            return exits
        point = self.node("merge", " ", "point")
        self.edge(exits, point)
        return [(point, "")]


_SHAPES = {
    "box": ("[", "]"),
    "circle": ("((", "))"),
    "stadium": ("([", "])"),
    "rhombus": ("{", "}"),
    "hexagon": ("{{", "}}"),
    "subroutine": ("[[", "]]"),
    "fork": ("[/", "\\]"),
    "flag": (">", "]"),
    "cylinder": ("[(", ")]"),
    "point": ("((", "))"),
}


def _quote(text: str) -> str:
    return '"' + str(text).replace('"', "#quot;").replace("\n", " ") + '"'


def _predicate(pred: Predicate) -> str:
    fn: Any = pred.fn
    name = getattr(fn, "__name__", "") or type(fn).__name__
    if name == "<lambda>":
        try:
            source = inspect.getsource(fn).strip()
        except (OSError, TypeError):
            return "condition"
        body = source.partition("lambda")[2].partition(":")[2].strip()
        depth, end = 0, len(body)
        for i, ch in enumerate(body):  # cut at the call's closing parenthesis or the next argument
            depth += ch in "([{"
            depth -= ch in ")]}"
            if depth < 0 or (depth == 0 and ch == ","):
                end = i
                break
        return body[:end].strip() or "condition"
    return name


def _limits(op: Batch | ForEach) -> str:
    parts = []
    if op.concurrency:
        parts.append(f"concurrency {op.concurrency}")
    if op.on_error != "fail_fast":
        parts.append(op.on_error)
    return f" ({', '.join(parts)})" if parts else ""
