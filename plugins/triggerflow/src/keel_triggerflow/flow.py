"""``TriggerFlow``: the chained builder, and the flow as a keel Runnable."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from keel import Execution, Runnable, Runtime
from keel_triggerflow._ops import (
    Batch,
    Collect,
    Compiled,
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
)
from keel_triggerflow.types import Durability, FlowDefinitionError, FlowError

if TYPE_CHECKING:
    from keel_triggerflow._engine import FlowExecution
    from keel_triggerflow.plan import FlowPlan
    from keel_triggerflow.steps import StepOutcome

__all__ = ["Chain", "Reducer", "TriggerFlow"]

Reducer = Literal["last", "list", "dict"] | Callable[[Any, Any], Any]
"""How a state key merges writes from parallel branches: ``last`` wins (default), ``list`` appends,
``dict`` merges by key, or ``fn(old, new) -> merged``."""


def _chunk_name(chunk: Any) -> str:
    return str(getattr(chunk, "name", None) or getattr(chunk, "__name__", None) or type(chunk).__name__)


class Chain:
    """A chain under construction. Every verb returns the chain, so calls read top to bottom."""

    def __init__(self, flow: TriggerFlow, ops: list[Op]):
        self._flow = flow
        self._root = ops  # the chain's own op list
        self._ops = ops  # where the next op goes
        self._frames: list[tuple[str, Op, list[Op]]] = []  # open constructs: (kind, op, outer ops)

    # ------------------------------------------------------------------------------ steps
    def to(self, chunk: Any, *, name: str | None = None, retries: int = 0) -> Chain:
        """Run a chunk (``async def chunk(ctx)``), a sub-flow (a TriggerFlow), or any keel Runnable
        (an Agent): its output is the next step's ``ctx.value``."""
        self._add(self._flow._make_op(chunk, name, retries))
        return self

    def emit(self, event: str) -> Chain:
        """Emit the current value as ``event``: every ``flow.when(event)`` chain starts with it."""
        self._add(Emit(event))
        return self

    def end(self) -> Chain:
        """The value reaching here becomes the flow's result."""
        self._add(End())
        return self

    def set_state(self, key: str) -> Chain:
        """Write the current value into ``state[key]`` (through the key's declared reducer)."""
        self._add(SetState(key))
        return self

    def pause_for(
        self,
        name: str,
        payload: Any = None,
        *,
        timeout: float | None = None,
        on_timeout: Literal["fail", "continue"] = "fail",
        default: Any = None,
    ) -> Chain:
        """Wait for the signal ``name``; its payload flows on. ``payload`` may be ``fn(value)``."""
        self._add(Pause(name, payload, timeout, on_timeout, default))
        return self

    def collect(self, name: str, key: str) -> Chain:
        """Put the value into collection ``name`` under ``key``; when every key declared for
        ``name`` (by all its ``collect`` calls) has arrived, the steps after one of them run once
        with ``{key: value}``. The other chains end here."""
        op = Collect(name, key)
        self._add(op)
        self._ops = op.then
        return self

    def batch(
        self,
        *branches: tuple[str, Any] | Any,
        concurrency: int | None = None,
        on_error: Literal["fail_fast", "collect"] = "fail_fast",
    ) -> Chain:
        """Run chunks in parallel on the same value; the next step gets ``{name: output}``.

        :param branches: ``("name", chunk)`` pairs (a bare chunk is named after its function).
        :param on_error: ``fail_fast`` cancels the other branches; ``collect`` leaves a
            :class:`BranchError` dump in the failed branch's slot.
        """
        named: list[tuple[str, list[Op]]] = []
        for branch in branches:
            bname, chunk = branch if isinstance(branch, tuple) else (_chunk_name(branch), branch)
            named.append((str(bname), [self._flow._make_op(chunk, str(bname), 0)]))
        self._add(Batch(named, concurrency, on_error))
        return self

    # ------------------------------------------------------------------------ constructs
    def if_condition(self, condition: Callable[..., Any]) -> Chain:
        """Branch on ``condition(value)`` (or ``condition(value, state)``); may be async."""
        op = If()
        self._add(op)
        op.branches.append((Predicate(condition), []))
        self._open("if", op, op.branches[-1][1])
        return self

    def elif_condition(self, condition: Callable[..., Any]) -> Chain:
        op = self._expect("if", "elif_condition")
        assert isinstance(op, If)
        op.branches.append((Predicate(condition), []))
        self._ops = op.branches[-1][1]
        return self

    def else_condition(self) -> Chain:
        op = self._expect("if", "else_condition")
        assert isinstance(op, If)
        op.else_ops = []
        self._ops = op.else_ops
        return self

    def end_condition(self) -> Chain:
        self._expect("if", "end_condition")
        self._close()
        return self

    def match(
        self, key: Callable[[Any], Any] | None = None, *, mode: Literal["hit_first", "hit_all"] = "hit_first"
    ) -> Chain:
        """Compare ``key(value)`` (or the value) against each ``case``; ``hit_all`` runs every
        matching case in order and yields the list of their outputs."""
        op = Match(key, mode)
        self._add(op)
        self._open("match", op, [])
        return self

    def case(self, expected: Any) -> Chain:
        """A case: equal to ``expected``, or ``expected(subject)`` is true when it is callable."""
        op = self._expect("match", "case")
        assert isinstance(op, Match)
        op.cases.append((Predicate(expected) if callable(expected) else expected, []))
        self._ops = op.cases[-1][1]
        return self

    def case_else(self) -> Chain:
        op = self._expect("match", "case_else")
        assert isinstance(op, Match)
        op.else_ops = []
        self._ops = op.else_ops
        return self

    def end_match(self) -> Chain:
        self._expect("match", "end_match")
        self._close()
        return self

    def for_each(
        self, *, concurrency: int | None = None, on_error: Literal["fail_fast", "collect"] = "fail_fast"
    ) -> Chain:
        """Run the steps up to ``end_for_each()`` for every item of the value (a dict gives
        ``(key, value)`` items); the next step gets the list of outputs, in item order."""
        op = ForEach(concurrency, on_error)
        self._add(op)
        self._open("for_each", op, op.ops)
        return self

    def end_for_each(self) -> Chain:
        self._expect("for_each", "end_for_each")
        self._close()
        return self

    # ---------------------------------------------------------------------------- helpers
    def _add(self, op: Op) -> None:
        self._flow._compiled = None
        self._ops.append(op)

    def _open(self, kind: str, op: Op, inner: list[Op]) -> None:
        self._frames.append((kind, op, self._ops))
        self._ops = inner

    def _expect(self, kind: str, verb: str) -> Op:
        if not self._frames or self._frames[-1][0] != kind:
            opened = self._frames[-1][0] if self._frames else "nothing"
            raise FlowDefinitionError(self._flow.name, [f"{verb}() without an open {kind} (open: {opened})"])
        return self._frames[-1][1]

    def _close(self) -> None:
        _kind, _op, outer = self._frames.pop()
        self._flow._compiled = None
        self._ops = outer

    def __getattr__(self, name: str) -> Any:  # flow-level verbs reachable from a chain (when, run, ...)
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._flow, name)


class TriggerFlow:
    """A flow definition; also a keel :class:`~keel.Runnable` (``runtime.add(flow)``).

    :param name: the runnable's name.
    :param input_model: validates the input (a sub-flow's declared input).
    :param output_model: validates the result (a sub-flow's declared output).
    :param reducers: how each state key merges parallel writes (see :data:`Reducer`).
    :param resources: names of live resources every execution must be given (clients, agents).
    :param durability: default history mode of its executions (see :data:`Durability`).
    :param ref: ``"module:attribute"`` or ``"path.py:attribute"`` to re-import it in another
        process (``keel flow resume``); the CLI sets it for flows it loads.
    """

    kind = "flow"

    def __init__(
        self,
        name: str,
        *,
        description: str = "",
        input_model: type[BaseModel] | None = None,
        output_model: type[BaseModel] | None = None,
        reducers: Mapping[str, Reducer] | None = None,
        resources: Sequence[str] = (),
        durability: Durability = "sync",
        ref: str | None = None,
        lease_ttl: float = 30.0,
    ):
        if not lease_ttl > 0:
            raise FlowDefinitionError(name, [f"lease_ttl={lease_ttl!r}: give a number of seconds above 0 (default 30)"])
        self.name = name
        self.description = description or f"TriggerFlow {name}"
        self.input_model = input_model
        self.output_model = output_model
        self.reducers: dict[str, Reducer] = dict(reducers or {})
        self.resources = tuple(resources)
        self.durability: Durability = durability
        self.ref = ref
        #: how long an owner's lease lasts without a heartbeat (renewed every third of it): the
        #: longest that a killed process's executions wait before another process takes them over
        self.lease_ttl = lease_ttl
        self.definition: dict[str, Any] | None = None  # set for flows built from data
        self.registry: Any = None  # the Registry that built it (flows built from data)
        self._main = Chain(self, [])
        self._whens: list[tuple[list[str], str, Chain]] = []
        self._compiled: Compiled | None = None

    # ---------------------------------------------------------------------------- building
    @property
    def chain(self) -> Chain:
        """The main chain (what ``start`` runs first)."""
        return self._main

    def to(self, chunk: Any, *, name: str | None = None, retries: int = 0) -> Chain:
        """Append to the main chain (every ``flow.to`` call continues the same main chain)."""
        return self._main.to(chunk, name=name, retries=retries)

    def when(self, event: str | Iterable[str], *, mode: Literal["or", "and"] = "or") -> Chain:
        """A chain started by an event (``ctx.emit``, ``.emit()`` or ``execution.emit``).

        With several events, ``or`` starts it on each, ``and`` once all have arrived (with
        ``{event: value}``)."""
        events = [event] if isinstance(event, str) else list(event)
        chain = Chain(self, [])
        self._whens.append((events, mode, chain))
        self._compiled = None
        return chain

    def __getattr__(self, name: str) -> Any:  # if_condition, batch, for_each... on the main chain
        if name.startswith("_") or name not in _CHAIN_VERBS:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(self._main, name)

    def _make_op(self, chunk: Any, name: str | None, retries: int) -> Op:
        if isinstance(chunk, Chain):  # TriggerFlow("sub").to(a).to(b) is the chain: it means the flow
            chunk = chunk._flow
        if isinstance(chunk, TriggerFlow):
            if chunk is self:
                raise FlowDefinitionError(self.name, ["a flow cannot contain itself as a sub-flow"])
            return SubFlow(chunk)
        if inspect.isroutine(chunk):
            return Step(chunk, name or _chunk_name(chunk), retries)
        if isinstance(chunk, Runnable):
            return Step(_runnable_chunk(chunk), name or chunk.name, retries)
        if callable(chunk):
            return Step(chunk, name or _chunk_name(chunk), retries)
        raise FlowDefinitionError(
            self.name, [f"{chunk!r} is not a chunk: pass an async function (ctx), a TriggerFlow or a keel Runnable"]
        )

    def plan(self) -> FlowPlan:
        """The compiled flow as a public, JSON-serializable op tree: what a runner other than the
        local engine interprets (:mod:`keel_triggerflow.plan`; docs/flows.md, "Runner contract")."""
        from keel_triggerflow.plan import plan_of

        return plan_of(self)

    # the runner contract's calls, on the flow itself: a runner plugin reaches them through the flow
    # it was given (plugins never import each other), as :mod:`keel_triggerflow.steps` defines them
    async def run_step(self, ref: str, value: Any, **options: Any) -> StepOutcome:
        """:func:`keel_triggerflow.steps.run_step` for this flow's step ``ref``."""
        from keel_triggerflow.steps import run_step

        return await run_step(self, ref, value, **options)

    async def decide(self, ref: str, value: Any, state: Mapping[str, Any]) -> int | list[int]:
        """:func:`keel_triggerflow.steps.decide` for this flow's if or match node ``ref``."""
        from keel_triggerflow.steps import decide

        return await decide(self, ref, value, state)

    def pause_payload(self, ref: str, value: Any) -> Any:
        """:func:`keel_triggerflow.steps.pause_payload` for this flow's wait ``ref``."""
        from keel_triggerflow.steps import pause_payload

        return pause_payload(self, ref, value)

    def reduce_state(self, ref: str, key: str, current: Any, value: Any) -> Any:
        """:func:`keel_triggerflow.steps.reduce_state`: ``state[key]`` after writing ``value`` at node ``ref``."""
        from keel_triggerflow.steps import reduce_state

        return reduce_state(self, ref, key, current, value)

    def to_mermaid(self) -> str:
        """The definition as a Mermaid flowchart (see :mod:`keel_triggerflow.draw`)."""
        from keel_triggerflow.draw import to_mermaid

        return to_mermaid(self)

    def drawing(self) -> dict[str, Any] | None:
        """The definition's drawing as data (:func:`keel_triggerflow.draw.graph`), drawn once per
        compiled definition; ``None`` if it cannot be drawn. Each execution's ``execution.started``
        event carries it, so that a viewer (DevTools) can show the path an execution took."""
        compiled = self.compile()
        cached = self.__dict__.get("_drawing")
        if cached is None or cached[0] is not compiled:
            from keel_triggerflow.draw import graph

            try:
                drawn: dict[str, Any] | None = graph(self)
            except Exception:  # a drawing is for people: an op it cannot draw must not stop a run
                drawn = None
            cached = self.__dict__["_drawing"] = (compiled, drawn)
        return cached[1]  # type: ignore[no-any-return]

    def compile(self) -> Compiled:
        """Check the whole definition (every problem listed) and build the runnable form."""
        if self._compiled is None:
            problems: list[str] = []
            chains = [("main chain", self._main)] + [(f"when({e})", c) for e, _, c in self._whens]
            for where, chain in chains:
                for kind, _, _ in chain._frames:
                    problems.append(f"{where}: {kind} is not closed (end_{'condition' if kind == 'if' else kind}())")
            if not self._main._root and not self._whens:
                problems.append("the flow has no steps")
            if problems:
                raise FlowDefinitionError(self.name, problems)
            self._compiled = Compiled(self._main._root, [(e, m, c._root) for e, m, c in self._whens], self.name)
        return self._compiled

    # ----------------------------------------------------------------------- running
    def input_schema(self) -> dict[str, Any]:
        return self.input_model.model_json_schema() if self.input_model else {}

    def output_schema(self) -> dict[str, Any]:
        return self.output_model.model_json_schema() if self.output_model else {}

    def create_execution(
        self,
        runtime: Runtime | None = None,
        *,
        tenant: str = "default",
        execution_id: str | None = None,
        durability: Durability | None = None,
        resources: Mapping[str, Any] | None = None,
        step_events: bool = True,
        lease_ttl: float | None = None,
    ) -> FlowExecution:
        """A new execution (status ``pending``); ``start(input)`` runs it, ``run(input)`` runs it
        to the end or to a wait. Without a runtime, a private one is used and nothing is kept
        (``durability="none"`` unless you ask for another mode)."""
        from keel_triggerflow._engine import FlowExecution

        return FlowExecution(
            self,
            runtime,
            tenant=tenant,
            execution_id=execution_id,
            # a private runtime's memory store dies with the execution: keeping a history there is waste
            durability=durability or (self.durability if runtime is not None else "none"),
            resources=resources,
            step_events=step_events,
            lease_ttl=self.lease_ttl if lease_ttl is None else lease_ttl,
        )

    async def start(self, input: Any = None, *, runtime: Runtime, tenant: str = "default") -> Execution:
        """keel's Runnable entry (``runtime.start(flow)``): start on the runner the stack's ``runner``
        slot names and return the execution; in the runtime's task group for ``local``."""
        if _runner_name(runtime) != "local":
            from keel_triggerflow.runners import get_runner

            return await get_runner(runtime).start(self, input, tenant=tenant)
        execution = self.create_execution(runtime, tenant=tenant)
        await execution.start(input)
        return execution

    async def run(self, input: Any = None, *, runtime: Runtime | None = None, **options: Any) -> Any:
        """Run to the end and return the RESULT. No idle timer: it returns when the work is done.
        In process only: with a runtime whose ``runner`` is another one, start it there instead."""
        if runtime is not None and _runner_name(runtime) != "local":
            raise FlowError(
                f"flow.run() runs in process, but this runtime's stack says runner = {_runner_name(runtime)!r}: "
                "use execution = await runtime.start(flow, input) and await execution.result(), which honour "
                "the runner line"
            )
        execution = self.create_execution(runtime, **options)
        snapshot = await execution.run(input, through_timed_waits=True)
        if not execution.status.finished:
            names = ", ".join(repr(i.name) for i in snapshot.pending_interrupts) or "a signal"
            raise FlowError(
                f"flow {self.name!r} waits for {names} with no timeout, so run() cannot return a result; "
                "use execution = flow.create_execution(runtime), await execution.start(input), answer it with "
                "execution.signal(...), then await execution.result()"
            )
        return await execution.result()

    def run_sync(self, input: Any = None, **options: Any) -> Any:
        """The sync facade, for scripts only (never inside a running event loop)."""
        import anyio

        return anyio.run(lambda: self.run(input, **options))

    async def load(
        self,
        execution_id: str,
        runtime: Runtime,
        *,
        tenant: str = "default",
        resources: Mapping[str, Any] | None = None,
        step_events: bool = True,
        lease_ttl: float | None = None,
    ) -> FlowExecution:
        """Load an execution from its history in the runtime's store (another process may have
        started it). Completed steps will not run again; call ``resume()`` or ``run()``."""
        from keel_triggerflow._engine import FlowExecution

        execution = FlowExecution(
            self,
            runtime,
            tenant=tenant,
            execution_id=execution_id,
            durability=self.durability,
            resources=resources,
            step_events=step_events,
            lease_ttl=self.lease_ttl if lease_ttl is None else lease_ttl,
        )
        await execution._load()
        return execution

    def __repr__(self) -> str:
        return f"TriggerFlow({self.name!r})"


def _runner_name(runtime: Runtime) -> str:
    """The runner the runtime's stack names (``local`` by default)."""
    return runtime.stack.choice("runner").name


_CHAIN_VERBS = {name for name in vars(Chain) if not name.startswith("_") and name not in {"to"}}


def _runnable_chunk(runnable: Any) -> Callable[[Any], Any]:
    # a runnable that takes a trace (keel.Agent does) runs inside the step's span: one trace per run
    try:
        traced = "parent_span_id" in inspect.signature(runnable.start).parameters
    except (TypeError, ValueError):  # a start() with no signature to read
        traced = False

    async def run_runnable(ctx: Any) -> Any:
        value = ctx.value if isinstance(ctx.value, (str, BaseModel)) else to_jsonable_python(ctx.value)
        if traced:
            execution = await runnable.start(
                value, runtime=ctx.runtime, tenant=ctx.tenant, trace_id=ctx.trace_id, parent_span_id=ctx.span_id
            )
        else:
            execution = await runnable.start(value, runtime=ctx.runtime, tenant=ctx.tenant)
        return await execution.result()

    run_runnable.__name__ = str(getattr(runnable, "name", "runnable"))
    run_runnable.runnable = runnable  # type: ignore[attr-defined]  # what `keel doctor` reads (multi-role)
    return run_runnable
