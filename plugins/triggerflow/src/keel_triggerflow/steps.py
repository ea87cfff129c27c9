"""The runner contract, part 2: run one step of a flow by the reference its plan node carries.

A runner that interprets :class:`~keel_triggerflow.plan.FlowPlan` itself runs each step's chunk
where it likes (a Temporal activity) with :func:`run_step`, which gives back what the step did as
data (:class:`StepOutcome`: output, state writes, emits, stream items, result); it takes the
decisions of if/match nodes with :func:`decide` and a wait's payload with :func:`pause_payload`.
A chunk sees a :class:`ChunkContext`: the local engine's ``Context`` and :class:`StepContext` both
are one. See docs/flows.md, "Runner contract".

    outcome = await run_step(flow, node.ref, value, execution_id=eid, path=key, state=state)
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from keel import current_trace
from keel_triggerflow._context import WORKSPACE_RESOURCE, scope_name, set_state
from keel_triggerflow._ops import If, Match, Op, Pause, Step, SubFlow
from keel_triggerflow._values import jsonable, model_ref
from keel_triggerflow.plan import step_key
from keel_triggerflow.types import FlowError, MissingResourceError, WaitTimeout

if TYPE_CHECKING:
    from keel import Runtime
    from keel_triggerflow.flow import TriggerFlow

__all__ = [
    "ChunkContext", "Pauser", "StepContext", "StepOutcome", "call_chunk", "decide", "pause_payload", "reduce_state",
    "run_step",
]  # fmt: skip


@runtime_checkable
class ChunkContext(Protocol):
    """What a chunk may use of its ``ctx``: the local engine's :class:`~keel_triggerflow.Context`
    and :class:`StepContext` both give it."""

    value: Any
    path: str
    attempt: int

    @property
    def input(self) -> Any: ...

    @property
    def execution_id(self) -> str: ...

    @property
    def tenant(self) -> str: ...

    @property
    def idempotency_key(self) -> str: ...

    @property
    def state(self) -> Any: ...

    def emit(self, event: str, value: Any = None) -> None: ...

    def put_into_stream(self, item: Any) -> None: ...

    def set_result(self, value: Any) -> None: ...

    def resource(self, name: str) -> Any: ...


class StepOutcome(BaseModel):
    """What one step did, as data (what the local engine records in its history): its output,
    its state writes (``[key, value]``, or ``[key]`` for a deletion), its emits, its stream items,
    and ``result`` when it called ``ctx.set_result``."""

    model_config = ConfigDict(extra="forbid")

    output: Any = None
    model: str | None = Field(default=None, description="module:qualname of a pydantic output (output is its data)")
    state_writes: list[list[Any]] = Field(default_factory=list)
    emits: list[list[Any]] = Field(
        default_factory=list,
        description="[event, value], and a third item, module:qualname, when the value is a pydantic model",
    )
    stream: list[Any] = Field(default_factory=list)
    result: dict[str, Any] | None = Field(default=None, description='{"result": value} when the step set the result')


class _StepState:
    __slots__ = ("_ctx",)

    def __init__(self, ctx: StepContext):
        self._ctx = ctx

    def get(self, key: str, default: Any = None) -> Any:
        return self._ctx.state_now.get(key, default)

    def set(self, key: str, value: Any) -> None:
        ctx = self._ctx
        set_state(ctx.state_now, ctx.reducers, key, value)
        ctx.outcome.state_writes.append([key, jsonable(value)])

    def __getitem__(self, key: str) -> Any:
        return self._ctx.state_now[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.set(key, value)

    def __delitem__(self, key: str) -> None:
        del self._ctx.state_now[key]
        self._ctx.outcome.state_writes.append([key])

    def __contains__(self, key: object) -> bool:
        return key in self._ctx.state_now

    def to_dict(self) -> dict[str, Any]:
        return dict(self._ctx.state_now)


Pauser = Callable[[str, Any, float | None, str, Any], Awaitable[Any]]


class StepContext:
    """A chunk's ``ctx`` outside the local engine: it reads a copy of the state and keeps what the
    chunk does (state writes, emits, stream items, the result) in :attr:`outcome`, for the runner
    to apply in its own interpreter. ``ctx.pause_for`` inside a chunk needs ``on_pause`` (which
    raises ``TimeoutError`` for a wait that timed out with ``on_timeout="fail"``: the chunk gets
    :class:`WaitTimeout`, as on the local engine); ``on_stream`` sees each stream item as it is put
    (so a runner can show the items of an attempt that fails, as the local engine does)."""

    def __init__(
        self,
        value: Any,
        *,
        path: str,
        execution_id: str,
        state: Mapping[str, Any] | None = None,
        reducers: Mapping[str, Any] | None = None,
        attempt: int = 1,
        tenant: str = "default",
        resources: Mapping[str, Any] | None = None,
        runtime: Runtime | None = None,
        trace_id: str = "",
        on_pause: Pauser | None = None,
        on_stream: Callable[[Any], None] | None = None,
    ):
        self.value = value
        self.path = path
        self.attempt = attempt
        self._execution_id = execution_id
        self._tenant = tenant
        self.state_now: dict[str, Any] = dict(state or {})
        self.reducers = dict(reducers or {})
        self.resources = dict(resources or {})
        self._runtime = runtime
        # a runner that runs the step inside a span of the execution's trace makes it the current
        # trace (keel.continuing_trace): an agent the step starts joins it, under this step's span
        caller = None if trace_id else current_trace()
        self.trace_id = trace_id or (caller.trace_id if caller is not None else "")
        self.span_id = caller.span_id if caller is not None else os.urandom(8).hex()
        self._on_pause = on_pause
        self._on_stream = on_stream
        self.outcome = StepOutcome()

    @property
    def input(self) -> Any:
        return self.value

    @property
    def execution_id(self) -> str:
        return self._execution_id

    @property
    def tenant(self) -> str:
        return self._tenant

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            raise FlowError(f"step {self.path} asks for ctx.runtime, which this runner did not give its StepContext")
        return self._runtime

    @property
    def idempotency_key(self) -> str:
        return f"{self._execution_id}:{self.path}:{self.attempt}"

    @property
    def state(self) -> _StepState:
        return _StepState(self)

    def emit(self, event: str, value: Any = None) -> None:
        emit = [event, jsonable(value)]
        if isinstance(value, BaseModel):  # the chain gets the model back, as on the local engine
            emit.append(model_ref(value))
        self.outcome.emits.append(emit)

    async def async_emit(self, event: str, value: Any = None) -> None:
        self.emit(event, value)

    def put_into_stream(self, item: Any) -> None:
        item = jsonable(item)
        self.outcome.stream.append(item)
        if self._on_stream is not None:
            self._on_stream(item)

    async def async_put_into_stream(self, item: Any) -> None:
        self.put_into_stream(item)

    def set_result(self, value: Any) -> None:
        self.outcome.result = {"result": jsonable(value)}

    def resource(self, name: str) -> Any:
        try:
            value = self.resources[name]
        except KeyError:
            raise MissingResourceError(
                f"step {self.path} needs the resource {name!r}, which this runner's worker was not given"
            ) from None
        prefix = self.path.rpartition(">")[0]
        if name == WORKSPACE_RESOURCE and prefix and callable(getattr(value, "child", None)):
            return value.child(scope_name(prefix + ">"))
        return value

    require_resource = resource

    async def pause_for(
        self,
        name: str,
        payload: Any = None,
        *,
        timeout: float | None = None,
        on_timeout: str = "fail",
        default: Any = None,
    ) -> Any:
        if self._on_pause is None:
            raise FlowError(
                f"step {self.path} calls ctx.pause_for({name!r}) inside its chunk, which this runner does not "
                "support; put the wait in the chain with .pause_for(name) instead"
            )
        try:
            return await self._on_pause(name, jsonable(payload), timeout, on_timeout, default)
        except TimeoutError as err:  # the runner's wait timed out (on_timeout="fail"): as on the local engine
            raise WaitTimeout(str(err) or f"wait {name!r} at {self.path} timed out") from None


def _resolve(flow: TriggerFlow, ref: str) -> tuple[Op, TriggerFlow]:
    """The op a reference names and the flow it belongs to: ``"2.0.1"``, or ``"3>0"`` inside the
    sub-flow at ``"3"``."""
    head, sep, rest = ref.partition(">")
    op = flow.compile().by_id.get(head)
    if op is None:
        raise FlowError(
            f"flow {flow.name!r} has no node {head!r} (reference {ref!r}); take references from flow.plan()"
        )
    if sep:
        if not isinstance(op, SubFlow):
            raise FlowError(f"node {head!r} of flow {flow.name!r} is a {type(op).__name__}, not a sub-flow ({ref!r})")
        return _resolve(op.flow, rest)
    return op, flow


def _step(flow: TriggerFlow, ref: str) -> tuple[Step, TriggerFlow]:
    op, owner = _resolve(flow, ref)
    if not isinstance(op, Step):
        raise FlowError(f"node {ref!r} of flow {flow.name!r} is a {type(op).__name__}, not a step")
    return op, owner


async def call_chunk(flow: TriggerFlow, ref: str, ctx: ChunkContext) -> Any:
    """Call the chunk of the step ``ref`` with ``ctx`` once (no retries, nothing recorded) and
    return its output: awaited when it is async, called in this thread when it is plain."""
    out = _step(flow, ref)[0].fn(ctx)
    if inspect.isawaitable(out):
        out = await out
    return out


async def run_step(
    flow: TriggerFlow,
    ref: str,
    value: Any,
    *,
    execution_id: str,
    path: str | None = None,
    state: Mapping[str, Any] | None = None,
    attempt: int = 1,
    tenant: str = "default",
    resources: Mapping[str, Any] | None = None,
    runtime: Runtime | None = None,
    on_pause: Pauser | None = None,
    on_stream: Callable[[Any], None] | None = None,
) -> StepOutcome:
    """Run one attempt of the step ``ref`` on ``value`` with a :class:`StepContext` over a copy of
    ``state``, and return what it did as data (JSON-compatible; a pydantic output is its data plus
    ``model``). ``path`` is the step key (default ``"@" + ref``, the main chain's). A failure raises
    (``on_stream`` has seen the attempt's stream items by then)."""
    owner = _step(flow, ref)[1]
    ctx = StepContext(
        value, path=path or step_key("", ref), execution_id=execution_id, state=state,
        reducers=owner.reducers, attempt=attempt, tenant=tenant, resources=resources,
        runtime=runtime, on_pause=on_pause, on_stream=on_stream,
    )  # fmt: skip
    out = await call_chunk(flow, ref, ctx)
    outcome = ctx.outcome
    outcome.output = jsonable(out)
    if isinstance(out, BaseModel):
        outcome.model = model_ref(out)
    return outcome


async def decide(flow: TriggerFlow, ref: str, value: Any, state: Mapping[str, Any]) -> int | list[int]:
    """The decision of the if or match node ``ref`` for ``value`` (what the local engine records):
    an if gives the index of its branch (``len(branches)`` = else), a match the list of its cases."""
    op = _resolve(flow, ref)[0]
    if isinstance(op, If):
        return await op.choose(value, dict(state))
    if isinstance(op, Match):
        return await op.hits(value, dict(state))
    raise FlowError(f"node {ref!r} of flow {flow.name!r} is a {type(op).__name__}: only if and match decide")


def pause_payload(flow: TriggerFlow, ref: str, value: Any) -> Any:
    """The payload the wait ``ref`` shows for ``value`` (its ``payload``, or ``payload(value)``)."""
    op = _resolve(flow, ref)[0]
    if not isinstance(op, Pause):
        raise FlowError(f"node {ref!r} of flow {flow.name!r} is a {type(op).__name__}, not a pause_for")
    return jsonable(op.payload_for(value))


def reduce_state(flow: TriggerFlow, ref: str, key: str, current: Any, value: Any) -> Any:
    """``state[key]`` after ``value`` is written into it through its reducer, when it was ``current``
    (``None``: not set), in the flow that owns the node ``ref`` (a step or a ``set_state``; inside a
    sub-flow, the sub-flow's reducers). What a runner calls for a reducer function, which only the
    Python definition has (``custom`` in ``plan.reducers``); the answer is JSON-compatible data."""
    owner = _resolve(flow, ref)[1]
    state: dict[str, Any] = {} if current is None else {key: current}
    set_state(state, owner.reducers, key, value)
    return jsonable(state[key])
