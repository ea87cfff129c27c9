"""The worker's side: what a chunk sees (``ChunkContext``), the activities a worker registers, and
the check of a flow definition before anything starts (``frozen``).

Values over ``[runner] inline_limit`` bytes go by reference: the worker puts them in the stack's
store (``put_blob``) and only ``{"$keel_ref": sha256, "size": n}`` enters Temporal's history (its
payload limit is 2 MB, and an oversized result would otherwise fail every retry the same way).
The next chunk gets the value back from the store, as does ``execution.result()``. Workers and
the processes that read results must share the store (SQLite on one machine, PostgreSQL across).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import anyio
from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from keel import Runtime, TraceParent, continuing_trace
from keel_runner_temporal.stepevents import StepReporter, wait_reached

if TYPE_CHECKING:
    from keel_runner_temporal.runner import TemporalRunner

__all__ = ["ChunkContext", "frozen", "is_flow"]

_DOCS = "docs/scale-out.md"
#: Temporal refuses a payload over 2 MB (the server's blob limit); a value over it never goes inline
PAYLOAD_LIMIT = 2 * 1024 * 1024


class WaitRequested(BaseException):
    """``ctx.pause_for`` in a chunk with no answer yet: the attempt stops here and the workflow
    waits (a BaseException, so that a chunk's ``except Exception`` does not take it for an error)."""

    def __init__(self, spec: dict[str, Any]):
        super().__init__(spec["pause_for"])
        self.spec = spec


class WaitTimeout(TimeoutError):
    """A chunk's ``ctx.pause_for`` timed out with ``on_timeout="fail"``: raised inside the chunk, as
    on the local runner (a flow built in Python gets TriggerFlow's ``WaitTimeout``: its
    ``StepContext`` turns this ``TimeoutError`` into it; a flow built from data gets this one, with
    the same name and message)."""


def pauser(call: Mapping[str, Any]) -> Callable[..., Any]:
    """``ctx.pause_for`` on Temporal: the answers the workflow already has, in order; past them the
    attempt stops and the workflow waits, then runs the chunk again with one answer more (the code
    before a wait runs again, as on the local runner after a restart: key its effects). A wait
    that timed out answers ``{TIMED_OUT: name}``: the call raises :class:`WaitTimeout` there."""
    from keel_runner_temporal._workflow import TIMED_OUT

    answers = list(call.get("answers") or ())
    asked = [0]

    async def on_pause(name: str, payload: Any, timeout: float | None, on_timeout: str, default: Any) -> Any:
        k = asked[0]
        asked[0] += 1
        if k < len(answers):
            answer = answers[k]
            if isinstance(answer, dict) and set(answer) == {TIMED_OUT}:
                raise WaitTimeout(f"wait {name!r} at {call['path']} timed out")
            return answer
        raise WaitRequested(
            {"pause_for": name, "payload": payload, "timeout": timeout, "on_timeout": on_timeout, "default": default}
        )

    on_pause.replaying = lambda: asked[0] < len(answers)  # type: ignore[attr-defined]  # see StepEvents.streamer
    return on_pause


class ChunkState:
    """``ctx.state`` in a Temporal activity: the flow's state when the step started; writes go back
    to the workflow with the step's output and merge through the flow's reducers there."""

    def __init__(self, state: dict[str, Any], sets: list[list[Any]]):
        self._state = state
        self._sets = sets

    def get(self, key: str, default: Any = None) -> Any:
        return self._state.get(key, default)

    def set(self, key: str, value: Any) -> None:
        value = to_jsonable_python(value)
        self._state[key] = value  # what this chunk reads back (the workflow applies the reducer)
        self._sets.append([key, value])

    def __getitem__(self, key: str) -> Any:
        return self._state[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.set(key, value)

    def __delitem__(self, key: str) -> None:
        del self._state[key]  # a KeyError for a key that is not there, as a dict gives
        self._sets.append([key])

    def __contains__(self, key: object) -> bool:
        return key in self._state

    def to_dict(self) -> dict[str, Any]:
        return dict(self._state)


class ChunkContext:
    """What a chunk receives as ``ctx`` in a Temporal activity: the local runner's surface
    (``value``, ``input``, ``execution_id``, ``tenant``, ``runtime``, ``path``, ``attempt``,
    ``idempotency_key``, ``state``, ``resource(name)``, ``put_into_stream``, ``emit``,
    ``set_result``, ``pause_for``, ``trace_id``, ``span_id``); anything else is refused by name."""

    def __init__(
        self, runtime: Runtime, call: Mapping[str, Any], value: Any, sets: list[list[Any]],
        trace: TraceParent | None = None,
    ):  # fmt: skip
        self.value = value
        self.input = value  # as on the local runner: the step's input is its value
        self.execution_id = str(call["execution_id"])
        self.tenant = str(call["tenant"])
        self.runtime = runtime
        self.path = str(call["path"])
        self.attempt = int(call["attempt"])  # 1, 2, ...: a failure of the chunk counts, a lost worker does not
        self.state = ChunkState(dict(call.get("state") or {}), sets)
        self.on_stream: Callable[[Any], None] | None = None  # each item as it is put (StepEvents.streamer)
        self.result: dict[str, Any] | None = None
        self._on_pause = pauser(call)
        self.trace_id = trace.trace_id if trace is not None else ""  # the execution's trace
        self.span_id = trace.span_id if trace is not None else ""  # this attempt's span in it

    async def pause_for(
        self,
        name: str,
        payload: Any = None,
        *,
        timeout: float | None = None,
        on_timeout: str = "fail",
        default: Any = None,
    ) -> Any:
        """Wait for the signal ``name`` and return its payload (see :func:`pauser`)."""
        return await self._on_pause(name, to_jsonable_python(payload), timeout, on_timeout, default)

    def emit(self, event: str, value: Any = None) -> None:
        """Starts nothing, as on the local runner for an event no chain handles: a flow with ``on``
        chains runs as its plan, where events run; this one (and its sub-flows) has none."""

    async def async_emit(self, event: str, value: Any = None) -> None:
        self.emit(event, value)

    def set_result(self, value: Any) -> None:
        """Make ``value`` the flow's result (as ``end`` does), applied by the workflow with the output."""
        self.result = {"result": to_jsonable_python(value)}

    def put_into_stream(self, item: Any) -> None:
        """An item for the execution's stream (``execution.stream()``), written as it is put."""
        if self.on_stream is not None:
            self.on_stream(to_jsonable_python(item))

    async def async_put_into_stream(self, item: Any) -> None:
        self.put_into_stream(item)

    @property
    def idempotency_key(self) -> str:
        return f"{self.execution_id}:{self.path}:{self.attempt}"

    def resource(self, name: str) -> Any:
        """A live resource of the worker's runtime (``Runtime(resources=...)``), never serialized."""
        from keel_runner_temporal.runner import TemporalRunnerError

        try:
            return self.runtime.resources[name]
        except KeyError:
            given = ", ".join(sorted(self.runtime.resources)) or "none"
            raise TemporalRunnerError(
                f"step {self.path} needs the resource {name!r}, which this worker's runtime was not given "
                f"(it has: {given}); give it to every worker: Runtime(host, stack, resources={{{name!r}: ...}})"
            ) from None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        from keel_runner_temporal.runner import TemporalRunnerError

        raise TemporalRunnerError(
            f"ctx.{name} is not available to a chunk on the temporal runner (it has value, input, execution_id, "
            f"tenant, runtime, path, attempt, idempotency_key, state, resource, put_into_stream, emit, set_result, "
            "pause_for, trace_id, span_id); "
            f"see {_DOCS}, or "
            "run this flow "
            'with runner = "local"'
        )


# ------------------------------------------------------------------------ checking a flow
_KINDS = ("to", "end", "pause_for", "set_state", "if", "match", "batch", "for_each", "flow")


def frozen(flow: Any) -> dict[str, Any]:
    """What the workflow takes as the flow, checked for what this runner runs (every problem in one
    error): ``{"definition", "flows"}`` for a flow built from data (its ``FlowDefinition`` and those
    of the sub-flows it names), ``{"plan"}`` for one built in Python (TriggerFlow's runner contract:
    ``flow.plan()``)."""
    from keel_runner_temporal.runner import TemporalRunnerError

    definition = getattr(flow, "definition", None)
    registry = getattr(flow, "registry", None)
    name = getattr(flow, "name", repr(flow))
    problems: list[str] = []
    evented = isinstance(definition, dict) and any(
        _has_events(getattr(f, "definition", None)) for f in [flow, *subflows(flow)]
    )
    if (
        isinstance(definition, dict)
        and registry is not None
        and not (evented and callable(getattr(flow, "plan", None)))
    ):
        flows: dict[str, dict[str, Any]] = {}
        _check_flow(flow, definition, registry, problems, flows, "")
        frozen_form: dict[str, Any] = {"definition": dict(definition), "flows": flows}
    elif callable(getattr(flow, "plan", None)):
        plan = flow.plan().model_dump(mode="json")
        _check_plan(plan, problems, "")
        frozen_form = {"plan": plan}
        if isinstance(definition, dict):  # a data flow with events runs as its plan; find() rebuilds it from this
            frozen_form["definition"] = dict(definition)
    else:
        raise TemporalRunnerError(
            f"flow {name!r} is neither a flow built from data (Registry.load) nor one that offers TriggerFlow's "
            f"runner contract (flow.plan()); the temporal runner runs TriggerFlow flows ({_DOCS})"
        )
    if problems:
        raise TemporalRunnerError(f"flow {name!r} cannot run on Temporal: " + "; ".join(problems) + f" (see {_DOCS})")
    return frozen_form


def _check_plan(plan: dict[str, Any], problems: list[str], at: str) -> None:
    from keel_runner_temporal._plan import PLAN_KINDS

    if plan.get("format") != 1:
        problems.append(f"{at}plan format {plan.get('format')!r} is not one this runner knows (1): upgrade it")

    def walk(nodes: list[dict[str, Any]]) -> None:
        # a plan node kind added to TriggerFlow after this runner (PLAN_KINDS is what it interprets)
        for node in nodes or ():
            if node["kind"] not in PLAN_KINDS:
                problems.append(
                    f"{at}node {node['ref']}: a {node['kind']!r} node does not run on the temporal runner yet"
                )
            for key in ("ops", "else_ops", "then"):
                walk(node.get(key) or [])
            for part in [*(node.get("branches") or []), *(node.get("cases") or [])]:
                walk(part["ops"])
            if node["kind"] == "subflow":
                _check_plan(node["flow"], problems, f"{at}sub-flow {node['flow']['name']!r}: ")

    walk(plan.get("main") or [])
    for when in plan.get("whens") or ():
        walk(when["ops"])


def _has_events(definition: Any) -> bool:
    """Whether a data flow's definition has ``on`` chains, ``emit`` or ``collect`` steps: such a
    flow runs as its plan (the interpreter of data nodes has no events)."""
    if isinstance(definition, dict):
        return any(k in ("on", "emit", "collect") for k in definition) or any(map(_has_events, definition.values()))
    if isinstance(definition, list):
        return any(map(_has_events, definition))
    return False


def is_flow(runnable: Any) -> bool:
    """A runnable this runner can run: a TriggerFlow (the runner contract) or a flow built from data."""
    return isinstance(getattr(runnable, "definition", None), dict) or callable(getattr(runnable, "plan", None))


def subflows(flow: Any) -> list[Any]:
    """The flows a flow's registry names (a worker serves their chunks too), recursively."""
    found: dict[str, Any] = {}
    todo = [flow]
    while todo:
        for sub in getattr(getattr(todo.pop(), "registry", None), "flows", {}).values():
            if sub.name not in found:
                found[sub.name] = sub
                todo.append(sub)
    return list(found.values())


def _check_flow(
    flow: Any, definition: dict[str, Any], registry: Any, problems: list[str], flows: dict[str, Any], at: str
) -> None:
    if definition.get("on"):
        problems.append(f"{at}'on' chains (events) do not run on the temporal runner yet")
    if not definition.get("steps"):
        problems.append(f"{at}the flow has no steps")
    _check(definition.get("steps", []), f"{at}steps", registry, problems, flows)


def _check(nodes: list[Any], where: str, registry: Any, problems: list[str], flows: dict[str, Any]) -> None:
    chunks = getattr(registry, "chunks", {})
    for i, node in enumerate(nodes):
        at = f"{where}.{i}"
        kind = next((k for k in _KINDS if isinstance(node, dict) and k in node), None)
        if kind is None:
            shown = next(iter(node), "?") if isinstance(node, dict) else type(node).__name__
            problems.append(f"{at}: a {shown!r} node does not run on the temporal runner yet")
        elif kind == "to" and node["to"] not in chunks:
            problems.append(f"{at}: unknown chunk {node['to']!r} (registered: {', '.join(sorted(chunks)) or 'none'})")
        elif kind == "flow":
            _check_sub(node["flow"], at, registry, problems, flows)
        elif kind == "batch":
            for branch, target in node["batch"].items():
                if target in getattr(registry, "flows", {}):
                    _check_sub(target, f"{at}.batch.{branch}", registry, problems, flows)
                elif target not in chunks:
                    problems.append(f"{at}.batch.{branch}: unknown chunk or flow {target!r}")
        elif kind == "if":
            for b, branch in enumerate(node["if"]):
                _check(branch["then"], f"{at}.if.{b}.then", registry, problems, flows)
        elif kind == "match":
            for c, case in enumerate(node["match"]):
                _check(case["then"], f"{at}.match.{c}.then", registry, problems, flows)
        elif kind == "for_each":
            _check(node["for_each"], f"{at}.for_each", registry, problems, flows)
        for tail in ("else",) if kind in ("if", "match") and node.get("else") else ():
            _check(node[tail], f"{at}.{tail}", registry, problems, flows)


def _check_sub(name: str, at: str, registry: Any, problems: list[str], flows: dict[str, Any]) -> None:
    if name in flows:
        return
    sub = getattr(registry, "flows", {}).get(name)
    definition = getattr(sub, "definition", None)
    if not isinstance(definition, dict):
        problems.append(f"{at}: sub-flow {name!r} was not loaded from data (register a flow from Registry.load)")
        return
    flows[name] = dict(definition)
    _check_flow(sub, definition, getattr(sub, "registry", registry), problems, flows, f"{at} > {name}: ")


# -------------------------------------------------------------------------- the activities
async def _heartbeat(every: float) -> None:
    """Tell Temporal this chunk's worker is alive (and let a cancel reach the chunk) until cancelled."""
    from temporalio import activity

    while True:  # not at once: a chunk that ends within one interval costs no heartbeat round trip
        await asyncio.sleep(every)
        activity.heartbeat()


def _beating(every: float) -> asyncio.Future[None]:
    """The heartbeat of a running chunk; a local activity has none (its worker runs the workflow)."""
    from temporalio import activity

    if activity.info().is_local:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done
    return asyncio.ensure_future(_heartbeat(every))


def stream_name(execution_id: str) -> str:
    """The store stream of an execution's ``ctx.put_into_stream`` items (``{"path", "item"}``)."""
    return f"temporal-stream/{execution_id}"


def is_ref(value: Any) -> bool:
    from keel_runner_temporal._workflow import REF

    return isinstance(value, dict) and REF in value and set(value) <= {REF, "size"}


async def resolve(runtime: Runtime, tenant: str, value: Any, *, models: bool = True) -> Any:
    """A value passed by reference, read back from the stack's store, with its pydantic outputs
    revived (other values as they are); ``models=False``: as their data (an execution's result is
    data on the local runner too)."""
    from keel_runner_temporal._workflow import REF

    if is_ref(value):
        value = json.loads(await runtime.store().get_blob(tenant, str(value[REF])))
    return revived(value, models)


def wrapped(model: str | None, data: Any) -> Any:
    """A step's output as the workflow carries it: a pydantic model's data with its class's name
    (``module:qualname``), so that the next step and the result get the model back, as on the
    local runner; any other output as it is."""
    from keel_runner_temporal._plan import MODEL

    return data if model is None else {MODEL: model, "v": data}


def revived(value: Any, models: bool = True) -> Any:
    """``value`` with every pydantic output in it rebuilt from its data (``models=False``: left as
    its data); a class this process has not imported leaves the data (no module is imported for a
    name found in a value)."""
    from keel_runner_temporal._plan import MODEL

    if isinstance(value, list):
        return [revived(v, models) for v in value]
    if not isinstance(value, dict):
        return value
    if MODEL in value and set(value) == {MODEL, "v"}:
        data = revived(value["v"], models)
        module, _, qualname = str(value[MODEL]).partition(":")
        target: Any = sys.modules.get(module) if models else None
        for part in qualname.split(".") if models else ():
            target = getattr(target, part, None)
        return target.model_validate(data) if isinstance(target, type) and issubclass(target, BaseModel) else data
    return {k: revived(v, models) for k, v in value.items()}


async def spill(runtime: Runtime, tenant: str, value: Any, limit: int, where: str) -> Any:
    """``value`` inline when its JSON is at most ``limit`` bytes; otherwise put in the stack's store
    and replaced by its reference. A failure to store a value over Temporal's limit is not retried."""
    from temporalio.exceptions import ApplicationError

    from keel_runner_temporal._workflow import REF

    data = json.dumps(value, separators=(",", ":")).encode()
    if len(data) <= limit:
        return value
    try:
        ref = await runtime.store().put_blob(tenant, data, "application/json")
    except Exception as err:
        if len(data) <= PAYLOAD_LIMIT:
            return value  # over the threshold, under Temporal's limit: inline after all
        raise ApplicationError(
            f"{where}: its output is {len(data)} bytes, over Temporal's payload limit ({PAYLOAD_LIMIT} bytes), "
            f"and the stack's store did not take it ({type(err).__name__}: {err}). Give the workers a store they "
            'share (store = "sqlite" on one machine, "postgres" across), or return a smaller value',
            type="PayloadTooLarge",
            non_retryable=True,
        ) from None
    return {REF: ref.sha256, "size": ref.size}


def activities(runner: TemporalRunner) -> list[Callable[..., Any]]:
    """The activities a worker of ``runner`` registers: chunks, conditions, the wait notice."""
    from temporalio import activity
    from temporalio.exceptions import ApplicationError

    from keel_runner_temporal._plan import DECIDE_ACTIVITY, PAYLOAD_ACTIVITY, REDUCE_ACTIVITY
    from keel_runner_temporal._workflow import (
        CHUNK_ACTIVITY,
        CHUNK_FAILED,
        CONDITION_ACTIVITY,
        WAIT_REQUESTED,
        WAITING_ACTIVITY,
    )
    from keel_runner_temporal.runner import TemporalRunnerError

    runtime = runner.runtime

    def waits(wait: WaitRequested) -> ApplicationError:
        """The attempt stopped at ``ctx.pause_for``: the workflow waits, then runs it again (not retried)."""
        from temporalio.exceptions import ApplicationErrorCategory

        return ApplicationError(  # benign: temporalio does not log it as a failure
            f"waits for {wait.spec['pause_for']!r}", wait.spec, type=WAIT_REQUESTED, non_retryable=True,
            category=ApplicationErrorCategory.BENIGN,
        )  # fmt: skip

    def failed(err: Exception) -> ApplicationError:
        """The chunk raised: an attempt the workflow counts (not retried by Temporal)."""
        info = {"type": type(err).__name__, "message": str(err)}
        return ApplicationError(f"{info['type']}: {err}", info, type=CHUNK_FAILED, non_retryable=True)

    def served(name: str) -> Any:
        flow = runner.flows.get(name)
        if flow is None:  # retryable: another worker on this queue may serve it
            raise ApplicationError(
                f"this worker does not serve flow {name!r} (serving: {', '.join(sorted(runner.flows))}); "
                "load it in every worker of the task queue (the stack's runnables)",
                type="FlowNotServed",
            )
        return flow

    reporter = StepReporter(runner)  # each attempt's flow.step.* events, into the stack's store

    @activity.defn(name=CHUNK_ACTIVITY)
    async def run_chunk(call: dict[str, Any]) -> Any:
        if "ref" in call:
            return await run_planned(call)
        flow = served(call["flow"])
        fn = flow.registry.chunks[call["chunk"]][0]
        tenant = str(call["tenant"])
        sets: list[list[Any]] = []
        value = await resolve(runtime, tenant, call["value"])
        events = await reporter.start(call, flow, redelivered=activity.info().attempt > 1)
        ctx = ChunkContext(runtime, call, value, sets, events.trace)
        ctx.on_stream = events.streamer(ctx._on_pause.replaying)  # type: ignore[attr-defined]
        beating = _beating(runner.options.heartbeat_timeout / 3)
        try:
            with continuing_trace(events.trace):  # an agent the chunk starts joins the flow's trace
                if inspect.iscoroutinefunction(fn):
                    out = await fn(ctx)
                else:  # a plain chunk may block: in a thread, so that the heartbeat goes on
                    out = await anyio.to_thread.run_sync(fn, ctx)
                    if inspect.isawaitable(out):
                        out = await out
        except WaitRequested as wait:  # the run that gets the answer leaves out the items written so far
            await events.paused()
            raise waits(wait) from None
        except TemporalRunnerError as err:  # an unsupported ctx feature, a missing resource: retrying cannot help
            await events.failed({"type": type(err).__name__, "message": str(err)}, final=True)
            raise ApplicationError(str(err), type=type(err).__name__, non_retryable=True) from None
        except Exception as err:  # the chunk failed: the workflow counts it as an attempt
            await events.failed({"type": type(err).__name__, "message": str(err)})  # its items are written
            raise failed(err) from None
        finally:
            beating.cancel()
        await events.completed()
        where = f"step {call['path']} ({call['chunk']})"
        model = f"{type(out).__module__}:{type(out).__qualname__}" if isinstance(out, BaseModel) else None
        data = wrapped(model, to_jsonable_python(out))
        value = await spill(runtime, tenant, data, runner.options.inline_limit, where)
        if "state" not in call:
            return value  # a history from before chunks had state (see _STATE_IN_CHUNKS)
        return {"o": value, "s": sets, "r": ctx.result}

    async def run_planned(call: dict[str, Any]) -> Any:
        """A step of a flow built in Python: ``flow.run_step`` (TriggerFlow's runner contract)."""
        flow, tenant = served(call["flow"]), str(call["tenant"])
        value = await resolve(runtime, tenant, call["value"])
        events = await reporter.start(call, flow, redelivered=activity.info().attempt > 1)
        beating = _beating(runner.options.heartbeat_timeout / 3)
        on_pause = pauser(call)
        put = events.streamer(on_pause.replaying)  # type: ignore[attr-defined]
        try:
            with continuing_trace(events.trace):  # an agent step joins the flow's trace, under this step
                outcome = await flow.run_step(
                    call["ref"], value, execution_id=call["execution_id"], path=call["path"],
                    attempt=int(call["attempt"]), state=call.get("state") or {}, tenant=tenant,
                    resources=runtime.resources, runtime=runtime, on_pause=on_pause, on_stream=put,
                )  # fmt: skip
        except WaitRequested as wait:  # the workflow waits, then runs the chunk again with the answer
            await events.paused()
            raise waits(wait) from None
        except Exception as err:  # the chunk failed: counted as an attempt
            await events.failed({"type": type(err).__name__, "message": str(err)})
            raise failed(err) from None
        finally:
            beating.cancel()
        await events.completed()
        where = f"step {call['path']} ({call['chunk']})"
        output = await spill(
            runtime, tenant, wrapped(outcome.model, outcome.output), runner.options.inline_limit, where
        )
        # a pydantic value of ctx.emit ([event, data, model]) reaches its chains as the model
        emits = [[e[0], wrapped(e[2] if len(e) > 2 else None, e[1])] for e in outcome.emits]
        return {"o": output, "s": outcome.state_writes, "r": outcome.result, "e": emits}

    @activity.defn(name=DECIDE_ACTIVITY)
    async def decide(call: dict[str, Any]) -> Any:
        flow = served(call["flow"])
        value = await resolve(runtime, str(call.get("tenant", "default")), call["value"])  # by reference: its tenant's
        return await flow.decide(call["ref"], value, call["state"])

    @activity.defn(name=PAYLOAD_ACTIVITY)
    async def pause_payload(call: dict[str, Any]) -> Any:
        value = await resolve(runtime, str(call.get("tenant", "default")), call["value"])
        return to_jsonable_python(served(call["flow"]).pause_payload(call["ref"], value))

    @activity.defn(name=REDUCE_ACTIVITY)
    async def reduce_state(call: dict[str, Any]) -> Any:
        """A reducer function (only the Python definition has it), for a write the workflow applies."""
        flow = served(call["flow"])
        return flow.reduce_state(call["ref"], call["key"], call["current"], call["value"])

    @activity.defn(name=CONDITION_ACTIVITY)
    async def condition(call: dict[str, Any]) -> bool:
        fn = served(call["flow"]).registry.conditions[call["name"]]
        two = len([p for p in inspect.signature(fn).parameters.values() if p.default is p.empty]) >= 2
        result = fn(call["subject"], dict(call.get("state") or {})) if two else fn(call["subject"])
        if inspect.isawaitable(result):
            result = await result
        return bool(result)

    @activity.defn(name=WAITING_ACTIVITY)
    async def waiting(call: dict[str, Any]) -> None:
        await wait_reached(runner, call)

    return [run_chunk, decide, pause_payload, reduce_state, condition, waiting]
