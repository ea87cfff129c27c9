"""The runner contract, part 1: a compiled flow as a public, JSON-serializable op tree.

A runner other than the local engine (``keel-runner-temporal``) interprets :class:`FlowPlan`
itself, deterministically, and runs each step with :mod:`keel_triggerflow.steps` (``run_step``,
``decide``, ``pause_payload``), by the references the plan's nodes carry. It never imports a
private module of ``keel_triggerflow``. The nodes, the references and the step keys are
documented in docs/flows.md, "Runner contract".

    plan = flow.plan()                        # FlowPlan
    text = plan.model_dump_json()             # the frozen definition a workflow takes as input
    assert FlowPlan.model_validate_json(text) == plan
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from keel_triggerflow._ops import (
    Batch,
    Collect,
    Emit,
    End,
    ForEach,
    If,
    Match,
    Op,
    Pause,
    Predicate,
    SetState,
    Step,
    SubFlow,
    emit_thread,
    thread_hash,
)
from keel_triggerflow._values import jsonable
from keel_triggerflow.types import FlowError

if TYPE_CHECKING:
    from keel_triggerflow.flow import TriggerFlow

__all__ = [
    "PLAN_FORMAT",
    "BatchBranch",
    "BatchNode",
    "CollectNode",
    "EmitNode",
    "EndNode",
    "FlowPlan",
    "ForEachNode",
    "IfBranch",
    "IfNode",
    "MatchCase",
    "MatchNode",
    "PauseNode",
    "PlanNode",
    "SetStateNode",
    "StepNode",
    "SubFlowNode",
    "WhenPlan",
    "collect_thread",
    "emit_thread",
    "join_thread",
    "step_key",
]

PLAN_FORMAT = 1  # bumped when a node changes shape; a runner refuses a format it does not know


class _Node(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(description="the op's id in its flow: its place in the definition ('0', '2.0.1', 'w0:0')")
    ref: str = Field(
        description="the node's reference from the top flow, for run_step/decide/pause_payload: its id, "
        "behind '<sub-flow node ref>>' inside a sub-flow ('3>0')"
    )


class StepNode(_Node):
    """Call a chunk (``run_step(flow, ref, ...)``); its output is the next node's value."""

    kind: Literal["step"] = "step"
    name: str = Field(description="the step's name (events, history, UIs)")
    retries: int = Field(default=0, description="attempts after the first that a failure gets")
    function: str = Field(default="", description="module:qualname of the chunk (for people, not for loading)")


class PauseNode(_Node):
    """Wait for the signal ``signal``; its payload is the next node's value."""

    kind: Literal["pause_for"] = "pause_for"
    signal: str
    payload: Any = Field(default=None, description="the payload shown with the wait, when it is a value")
    payload_fn: bool = Field(default=False, description="the payload is fn(value): evaluate it with pause_payload()")
    timeout: float | None = None
    on_timeout: Literal["fail", "continue"] = "fail"
    default: Any = None


class SubFlowNode(_Node):
    """Run another flow inline with its own state; its result is the next node's value. Its nodes'
    references are ``<this id>>`` + their own (``"3>0"``)."""

    kind: Literal["subflow"] = "subflow"
    flow: FlowPlan


class IfBranch(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ops: list[PlanNode]


class IfNode(_Node):
    """The first branch whose condition holds runs (``decide(flow, id, value, state)`` gives its
    index; ``len(branches)`` means the ``else_ops``, or nothing)."""

    kind: Literal["if"] = "if"
    branches: list[IfBranch]
    else_ops: list[PlanNode] | None = None


class MatchCase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    value: Any = Field(default=None, description="the case's value when it is compared with ==")
    predicate: bool = Field(default=False, description="the case is a function of the subject")
    ops: list[PlanNode]


class MatchNode(_Node):
    """``decide(flow, id, value, state)`` gives the list of matching cases (one with hit_first);
    none runs the ``else_ops`` (or passes the value on). With ``hit_all`` the next value is the
    list of every matching case's output."""

    kind: Literal["match"] = "match"
    mode: Literal["hit_first", "hit_all"]
    keyed: bool = Field(default=False, description="compares key(value), not the value")
    cases: list[MatchCase]
    else_ops: list[PlanNode] | None = None


class BatchBranch(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    ops: list[PlanNode]


class BatchNode(_Node):
    """Every branch on the same value, concurrently; the next value is ``{name: output}``."""

    kind: Literal["batch"] = "batch"
    branches: list[BatchBranch]
    concurrency: int | None = None
    on_error: Literal["fail_fast", "collect"] = "fail_fast"


class ForEachNode(_Node):
    """``ops`` for every item of the value (a dict gives ``[key, value]`` items), concurrently; the
    next value is the list of outputs in item order."""

    kind: Literal["for_each"] = "for_each"
    ops: list[PlanNode]
    concurrency: int | None = None
    on_error: Literal["fail_fast", "collect"] = "fail_fast"


class EmitNode(_Node):
    """Start every ``when(event)`` chain with the value; the value flows on unchanged."""

    kind: Literal["emit"] = "emit"
    event: str


class CollectNode(_Node):
    """Put the value into collection ``name`` under ``key``; once every key of ``name`` (see
    :attr:`FlowPlan.collects`) arrived, ``then`` runs once with ``{key: value}``."""

    kind: Literal["collect"] = "collect"
    name: str
    key: str
    then: list[PlanNode] = Field(default_factory=list)


class EndNode(_Node):
    """The value becomes the flow's result."""

    kind: Literal["end"] = "end"


class SetStateNode(_Node):
    """Write the value into ``state[key]`` through the key's reducer."""

    kind: Literal["set_state"] = "set_state"
    key: str


PlanNode = Annotated[
    StepNode
    | PauseNode
    | SubFlowNode
    | IfNode
    | MatchNode
    | BatchNode
    | ForEachNode
    | EmitNode
    | CollectNode
    | EndNode
    | SetStateNode,
    Field(discriminator="kind"),
]


class WhenPlan(BaseModel):
    """A chain started by events: ``or`` starts it on each; ``and`` once all arrived, with
    ``{event: value}`` (its collection is ``join``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    events: list[str]
    mode: Literal["or", "and"]
    join: str | None = None
    ops: list[PlanNode]


class FlowPlan(BaseModel):
    """A compiled flow as data: what a runner interprets. ``digest()`` names this exact shape."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: int = PLAN_FORMAT
    name: str
    main: list[PlanNode]
    whens: list[WhenPlan] = Field(default_factory=list)
    collects: dict[str, list[str]] = Field(default_factory=dict, description="collection -> its keys")
    reducers: dict[str, str] = Field(default_factory=dict, description="state key -> last|list|dict|custom")
    resources: list[str] = Field(default_factory=list)
    input_schema: dict[str, Any] = Field(default_factory=dict)
    output_schema: dict[str, Any] = Field(default_factory=dict)

    def digest(self) -> str:
        """sha256 of the plan's JSON: equal for equal flows, different once a node changes."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()


# ------------------------------------------------------------------------------ building a plan
def _function(fn: Any) -> str:
    return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', type(fn).__name__)}"


def _nodes(ops: list[Op] | None, prefix: str) -> list[Any]:
    return [_node(op, prefix) for op in ops or []]


def _node(op: Op, prefix: str) -> Any:
    ref = prefix + op.sid
    if isinstance(op, Pause):
        static = not callable(op.payload)
        return PauseNode(
            id=op.sid, ref=ref, signal=op.signal, payload=jsonable(op.payload) if static else None,
            payload_fn=not static, timeout=op.timeout, on_timeout=op.on_timeout,  # type: ignore[arg-type]
            default=jsonable(op.default),
        )  # fmt: skip
    if isinstance(op, Step):
        return StepNode(id=op.sid, ref=ref, name=op.name, retries=op.retries, function=_function(op.fn))
    if isinstance(op, SubFlow):
        return SubFlowNode(id=op.sid, ref=ref, flow=_plan(op.flow, ref + ">"))
    if isinstance(op, If):
        branches = [IfBranch(ops=_nodes(ops, prefix)) for _, ops in op.branches]
        return IfNode(id=op.sid, ref=ref, branches=branches, else_ops=_maybe(op.else_ops, prefix))
    if isinstance(op, Match):
        cases = [
            MatchCase(
                value=None if isinstance(case, Predicate) else jsonable(case),
                predicate=isinstance(case, Predicate),
                ops=_nodes(ops, prefix),
            )
            for case, ops in op.cases
        ]
        return MatchNode(
            id=op.sid,
            ref=ref,
            mode=op.mode,  # type: ignore[arg-type]
            keyed=op.key is not None,
            cases=cases,
            else_ops=_maybe(op.else_ops, prefix),
        )
    if isinstance(op, Batch):
        named = [BatchBranch(name=name, ops=_nodes(ops, prefix)) for name, ops in op.branches]
        return BatchNode(id=op.sid, ref=ref, branches=named, concurrency=op.concurrency, on_error=op.on_error)  # type: ignore[arg-type]
    if isinstance(op, ForEach):
        ops = _nodes(op.ops, prefix)
        return ForEachNode(id=op.sid, ref=ref, ops=ops, concurrency=op.concurrency, on_error=op.on_error)  # type: ignore[arg-type]
    return _simple(op, prefix)


def _simple(op: Op, prefix: str) -> Any:
    ref = prefix + op.sid
    if isinstance(op, Emit):
        return EmitNode(id=op.sid, ref=ref, event=op.event)
    if isinstance(op, Collect):
        return CollectNode(id=op.sid, ref=ref, name=op.name, key=op.key, then=_nodes(op.then, prefix))
    if isinstance(op, End):
        return EndNode(id=op.sid, ref=ref)
    if isinstance(op, SetState):
        return SetStateNode(id=op.sid, ref=ref, key=op.key)
    raise FlowError(f"op {type(op).__name__} at {prefix}{op.sid} has no plan node: the runner contract lags the engine")


def _maybe(ops: list[Op] | None, prefix: str) -> list[Any] | None:
    return None if ops is None else _nodes(ops, prefix)


def _plan(flow: TriggerFlow, prefix: str) -> FlowPlan:
    compiled = flow.compile()
    whens = []
    for j, (events, mode, chain) in enumerate(flow._whens):
        join = f"when:{j}" if mode == "and" and len(events) > 1 else None
        whens.append(WhenPlan(events=list(events), mode=mode, join=join, ops=_nodes(chain._root, prefix)))  # type: ignore[arg-type]
    return FlowPlan(
        name=flow.name,
        main=_nodes(compiled.main, prefix),
        whens=whens,
        collects={name: list(keys) for name, keys in compiled.collect_keys.items()},
        reducers={k: v if isinstance(v, str) else "custom" for k, v in flow.reducers.items()},
        resources=list(flow.resources),
        input_schema=flow.input_schema(),
        output_schema=flow.output_schema(),
    )


def plan_of(flow: TriggerFlow) -> FlowPlan:
    """``flow.plan()``: the compiled flow as a :class:`FlowPlan` (checks the definition first)."""
    return _plan(flow, "")


# ------------------------------------------------------------------------------ step keys
def step_key(thread: str, node_id: str) -> str:
    """A step's durable identity, as the local engine names it: ``thread + "@" + node id`` (the
    main chain's thread is ``""``, a for-each item's ``<for_each key>[<i>]``, a sub-flow's nodes
    run in ``<its step key>>``)."""
    return f"{thread}@{node_id}"


def join_thread(prefix: str, join: str, round: int) -> str:
    """The thread of a ``when(..., mode="and")`` chain (its ``join``), the ``round``-th time all
    its events arrived; ``prefix`` is the sub-flow's (``""`` at the top)."""
    return thread_hash(prefix, join, round)


def collect_thread(prefix: str, name: str, round: int) -> str:
    """The thread of the chain after a ``collect`` named ``name``, the ``round``-th time it filled."""
    return thread_hash(prefix, "collect", name, round)


_RECURSIVE: tuple[type[BaseModel], ...] = (
    SubFlowNode, IfBranch, IfNode, MatchCase, MatchNode, BatchBranch, BatchNode, ForEachNode, CollectNode, WhenPlan,
    FlowPlan,
)  # fmt: skip
for _model in _RECURSIVE:
    _model.model_rebuild()
