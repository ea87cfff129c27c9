"""The workflow's interpreter of TriggerFlow's runner contract: a flow built in Python, as the plan
``flow.plan()`` gives (JSON nodes with ``kind``, ``id`` and ``ref``). Mixed into the workflow.

Everything that is the flow's code runs in a worker, through the calls the flow object offers
(``flow.run_step``, ``flow.decide``, ``flow.pause_payload``, ``flow.reduce_state``): chunks are
activities, decisions, computed payloads and reducer functions local activities (recorded, so a
replay takes the same branch). The workflow walks the nodes and names steps as the local engine
does (``thread + "@" + id``; a for-each item's thread ``key[i]``; a sub-flow's ``key>``; a chain an
event started ``thread_hash(origin, event, k)``), so ``ctx.idempotency_key`` agrees across runners.
Event chains (``when``) run concurrently with the main chain, as tasks of the flow's scope, which
ends when all have. Like ``_workflow``, it imports only temporalio and the standard library.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

DECIDE_ACTIVITY = "keel.decide"
PAYLOAD_ACTIVITY = "keel.pause_payload"
REDUCE_ACTIVITY = "keel.reduce"
#: the plan node kinds this interpreter runs
PLAN_KINDS = (
    "step", "pause_for", "subflow", "if", "match", "batch", "for_each", "end", "set_state", "emit", "collect",
)  # fmt: skip
MODEL = "$keel_model"  # a pydantic output: {"$keel_model": "module:qualname", "v": its data}
STOP: Any = object()  # a chain ends here (a collect that is not yet full), as the local engine's STOP
#: a patch: event chains (``when``, ``emit``, ``collect``) and reducer functions; plans that have
#: them were refused before it, so no history from before it reaches this code (the marker says when)
EVENTS = "keel-events"


def thread_hash(*parts: object) -> str:
    """The id of an event-started chain, as TriggerFlow names it (``emit_thread``, ``join_thread``,
    ``collect_thread`` in ``keel_triggerflow.plan``): blake2b of the parts joined by ``|``."""
    return "t" + hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=6).hexdigest()


def unwrapped(value: Any) -> Any:
    """A pydantic output's data (what the local engine's state and comparisons see); else ``value``."""
    if isinstance(value, dict) and MODEL in value and set(value) == {MODEL, "v"}:
        return value["v"]
    return value


class Scope:
    """A flow's run: the root flow or one sub-flow instance, with its own state."""

    def __init__(self, flow: str, definition: dict[str, Any], prefix: str):
        self.flow = flow
        self.definition = definition
        self.reducers: dict[str, str] = dict(definition.get("reducers") or {})
        self.prefix = prefix
        self.state: dict[str, Any] = {}
        self.result: Any = None
        self.has_result = False

    def set(self, key: str, value: Any) -> None:
        reducer = self.reducers.get(key, "last")
        if reducer == "list":
            self.state.setdefault(key, []).append(value)
        elif reducer == "dict":
            self.state.setdefault(key, {}).update(value)
        else:
            self.state[key] = value

    def apply(self, sets: list[list[Any]]) -> None:
        """A chunk's state writes, in order: ``[key, value]``, or ``[key]`` for a deletion."""
        for write in sets:
            if len(write) == 1:
                self.state.pop(write[0], None)
            else:
                self.set(write[0], write[1])


class PlanScope(Scope):
    """The run of a flow built in Python: also its event chains (``when``), its collections and
    the chains running in it, which it waits for before it ends (as the local engine's task group)."""

    def __init__(self, flow: str, plan: dict[str, Any], prefix: str):
        super().__init__(flow, {"reducers": plan.get("reducers") or {}}, prefix)
        self.whens: list[dict[str, Any]] = list(plan.get("whens") or ())
        self.handlers: dict[str, list[tuple[int, str | None]]] = {}  # event -> [(its when's index, join)]
        for w, when in enumerate(self.whens):
            for event in when["events"]:
                self.handlers.setdefault(event, []).append((w, when.get("join")))
        self.collect_keys: dict[str, list[str]] = dict(plan.get("collects") or {})
        self.collect_then: dict[str, list[dict[str, Any]]] = {}
        _collect_thens([*plan.get("main", ()), *(n for w in plan.get("whens") or () for n in w["ops"])],
                       self.collect_then)  # fmt: skip
        self.evented = bool(self.handlers or self.collect_keys)
        self.collections: dict[str, dict[str, Any]] = {}
        self.rounds: dict[str, int] = {}
        self.tasks: dict[int, asyncio.Task[Any]] = {}  # the chains running now (in start order)
        self.pending: dict[int, list[Any]] = {}  # chains not begun yet: [when index, value, thread] (data)
        self.started = 0
        self.main: asyncio.Task[Any] | None = None
        self.error: BaseException | None = None
        self.reducing = asyncio.Lock()  # a reducer function's write is read, reduced, written at once

    def arrive(self, name: str, key: str, value: Any) -> tuple[dict[str, Any], int] | None:
        """``value`` into collection ``name``; once every key came, the full ``{key: value}`` and its round."""
        expected = self.collect_keys[name]
        bucket = self.collections.setdefault(name, {})
        bucket[key] = value
        if len(bucket) < len(expected):
            return None
        del self.collections[name]
        self.rounds[name] = self.rounds.get(name, 0) + 1
        return {k: bucket[k] for k in expected}, self.rounds[name]

    def fail(self, err: BaseException) -> None:
        """A chain failed: the flow fails with the first error, and its other chains stop."""
        if self.error is None:
            self.error = err
        self.cancel_all()

    def cancel_all(self) -> None:
        me = asyncio.current_task()
        for task in [*([self.main] if self.main else []), *self.tasks.values()]:
            if task is not me and not task.done():
                task.cancel()


def _collect_thens(nodes: list[dict[str, Any]], found: dict[str, list[dict[str, Any]]]) -> None:
    """The steps after each collection's ``collect`` (the one of its calls that has some)."""
    for node in nodes:
        if node["kind"] == "collect" and node.get("then"):
            found[node["name"]] = node["then"]
        for key in ("ops", "else_ops", "then"):
            _collect_thens(node.get(key) or [], found)
        for part in [*(node.get("branches") or []), *(node.get("cases") or [])]:
            _collect_thens(part["ops"], found)


class PlanInterpreter:
    """The plan's node kinds; the host class gives ``_job``, ``_call``, ``_wait``, ``_gather``."""

    _job: dict[str, Any]
    _chunk: str
    _call: Callable[..., Awaitable[Any]]
    _wait: Callable[..., Awaitable[Any]]
    _gather: Callable[..., Awaitable[list[Any]]]

    async def _plan_ops(self, scope: Scope, nodes: list[dict[str, Any]], thread: str, value: Any) -> Any:
        for node in nodes:
            value = await self._plan_op(scope, node, thread, value)
            if value is STOP:
                return STOP
        return value

    async def _plan_op(self, scope: Scope, node: dict[str, Any], thread: str, value: Any) -> Any:
        try:
            return await self._plan_node(scope, node, thread, value)
        except (TypeError, KeyError, IndexError, ValueError, AttributeError) as err:
            # a value the node cannot use: fail the execution (a plain error would retry the task forever)
            raise ApplicationError(
                f"step {thread}@{node.get('id')}: {type(err).__name__}: {err}", type=type(err).__name__,
                non_retryable=True,
            ) from None  # fmt: skip

    async def _plan_node(self, scope: Scope, node: dict[str, Any], thread: str, value: Any) -> Any:
        kind, key = node["kind"], f"{thread}@{node['id']}"
        if kind == "step":
            self._chunk = str(node["name"])
            return await self._call(scope, str(node["name"]), int(node.get("retries", 0)), key, value, ref=node["ref"])
        if kind == "end":
            scope.result, scope.has_result = value, True
            return value
        if kind == "set_state":
            await self._write(scope, [[str(node["key"]), unwrapped(value)]], node["ref"])
            return value
        if kind == "pause_for":
            payload = (
                await self._local(PAYLOAD_ACTIVITY, node, value) if node.get("payload_fn") else node.get("payload")
            )
            wait = {k: node.get(k) for k in ("timeout", "default")}
            return await self._wait({"pause_for": node["signal"], "payload": payload,
                                     "on_timeout": node.get("on_timeout", "fail"), **wait}, key)  # fmt: skip
        if kind == "subflow":
            return await self._plan_subflow(scope, node, f"{key}>", value)
        if kind == "if":
            index = int(await self._local(DECIDE_ACTIVITY, node, value, scope.state))
            ops = node["branches"][index]["ops"] if index < len(node["branches"]) else node.get("else_ops")
            return await self._plan_ops(scope, ops, thread, value) if ops else value
        if kind == "match":
            return await self._plan_match(scope, node, thread, value)
        if kind == "batch":
            jobs = [self._plan_job(scope, branch["ops"], thread, value) for branch in node["branches"]]
            results = await self._gather(jobs, node)
            return {
                branch["name"]: None if out is STOP else out
                for branch, out in zip(node["branches"], results, strict=True)
            }
        if kind == "for_each":
            value = unwrapped(value)
            if not isinstance(value, (list, dict)):
                raise TypeError(f"for_each needs a list or an object, got {type(value).__name__}")
            items = [list(pair) for pair in value.items()] if isinstance(value, dict) else list(value)
            jobs = [self._plan_job(scope, node["ops"], f"{key}[{i}]", item) for i, item in enumerate(items)]
            return await self._gather(jobs, node)
        if kind == "emit":
            self._fire(scope, str(node["event"]), value, key, 0)
            return value
        if kind == "collect":
            return await self._collect(scope, node, value)
        raise TypeError(f"a {kind!r} node does not run on the temporal runner")

    def _plan_job(self, scope: Scope, ops: list[dict[str, Any]], thread: str, value: Any) -> Callable[[], Any]:
        async def job() -> Any:
            out = await self._plan_ops(scope, ops, thread, value)
            return None if out is STOP else out  # a branch that ended in a collect gives nothing

        return job

    async def _plan_match(self, scope: Scope, node: dict[str, Any], thread: str, value: Any) -> Any:
        hits = list(await self._local(DECIDE_ACTIVITY, node, value, scope.state))
        if not hits:
            return await self._plan_ops(scope, node["else_ops"], thread, value) if node.get("else_ops") else value
        if node["mode"] == "hit_first":
            return await self._plan_ops(scope, node["cases"][hits[0]]["ops"], thread, value)
        outs = [await self._plan_ops(scope, node["cases"][c]["ops"], thread, value) for c in hits]
        return [None if out is STOP else out for out in outs]

    async def _plan_subflow(self, parent: Scope, node: dict[str, Any], prefix: str, value: Any) -> Any:
        plan = node["flow"]
        scope = PlanScope(parent.flow, plan, prefix)
        if scope.evented:
            out = await self._scoped(scope, self._plan_ops(scope, plan["main"], prefix, value))
        else:
            out = await self._plan_ops(scope, plan["main"], prefix, value)
        return scope.result if scope.has_result else None if out is STOP else out

    # ------------------------------------------------------------------------ events
    async def _scoped(self, scope: PlanScope, main: Coroutine[Any, Any, Any]) -> Any:
        """Run a flow's main chain, then wait for the chains its events started, as the local
        engine's task group does: the first error of any fails the flow and stops the others."""
        scope.main = asyncio.ensure_future(main)
        try:
            try:
                out = await scope.main
            except asyncio.CancelledError:
                if scope.error is None:
                    raise  # the execution (or an enclosing branch) was cancelled
                out = STOP
            except Exception as err:
                scope.fail(err)
                out = STOP
            await workflow.wait_condition(lambda: not scope.tasks)
        except BaseException:
            scope.cancel_all()
            raise
        if scope.error is not None:
            raise scope.error
        return out

    def _fire(self, scope: Scope, event: str, value: Any, origin: str, k: int) -> None:
        """Start every ``when(event)`` chain with ``value``, each concurrently, in the threads the
        local engine gives them; an ``and`` chain once all its events arrived."""
        handlers = getattr(scope, "handlers", {}).get(event)
        if not handlers:
            return
        assert isinstance(scope, PlanScope)
        base = thread_hash(origin, event, k)
        for j, (w, join) in enumerate(handlers):
            if join is not None:
                ready = scope.arrive(join, event, value)
                if ready is not None:
                    self._spawn(scope, w, ready[0], thread_hash(scope.prefix, join, ready[1]))
            else:
                self._spawn(scope, w, value, base if j == 0 else f"{base}.{j}")

    def _spawn(self, scope: PlanScope, w: int, value: Any, thread: str) -> None:
        """Start the chain of ``when`` number ``w``; until it begins it is data (``scope.pending``),
        which a continue-as-new can carry."""

        async def chain() -> None:
            if self._holds_chain(scope):  # the workflow drains toward a continue-as-new: stay data
                await workflow.wait_condition(lambda: not self._holds_chain(scope))
            scope.pending.pop(n, None)
            try:
                await self._plan_ops(scope, scope.whens[w]["ops"], thread, value)
            except Exception as err:
                scope.fail(err)
            else:
                self._chain_done(scope)

        scope.started += 1
        n = scope.started
        scope.pending[n] = [w, value, thread]
        task = asyncio.ensure_future(chain())
        scope.tasks[n] = task
        task.add_done_callback(lambda _: (scope.tasks.pop(n, None), scope.pending.pop(n, None)))

    def _chain_done(self, scope: PlanScope) -> None:
        """A chain ended well (the workflow may continue as new here)."""

    def _holds_chain(self, scope: PlanScope) -> bool:
        """Whether a chain of ``scope`` that has not begun waits (the workflow drains)."""
        return False

    async def _collect(self, scope: Scope, node: dict[str, Any], value: Any) -> Any:
        assert isinstance(scope, PlanScope)
        name = str(node["name"])
        ready = scope.arrive(name, str(node["key"]), value)
        if ready is None:
            return STOP
        full, rnd = ready
        then = scope.collect_then.get(name)
        if not then:
            return full
        return await self._plan_ops(scope, then, thread_hash(scope.prefix, "collect", name, rnd), full)

    # ------------------------------------------------------------------------ state
    async def _write(self, scope: Scope, writes: list[list[Any]], ref: str) -> None:
        """State writes through the keys' reducers; a reducer function (``custom`` in the plan)
        runs in a worker (a local activity, recorded), one write at a time."""
        if not any(len(w) == 2 and scope.reducers.get(w[0]) == "custom" for w in writes):
            scope.apply(writes)
            return
        assert isinstance(scope, PlanScope)
        async with scope.reducing:
            for write in writes:
                if len(write) == 1 or scope.reducers.get(write[0]) != "custom":
                    scope.apply([write])
                    continue
                scope.state[write[0]] = await workflow.execute_local_activity(
                    REDUCE_ACTIVITY,
                    {"flow": self._job["flow"], "ref": ref, "key": write[0], "current": scope.state.get(write[0]),
                     "value": write[1]},
                    start_to_close_timeout=timedelta(seconds=float(self._job["activity_timeout"])),
                    retry_policy=RetryPolicy(maximum_attempts=1),
                )  # fmt: skip

    async def _local(self, activity: str, node: dict[str, Any], value: Any, state: Any = None) -> Any:
        """The flow's code a decision or a payload needs, run by a worker (recorded in history)."""
        return await workflow.execute_local_activity(
            activity,
            {
                "flow": self._job["flow"],
                "ref": node["ref"],
                "value": value,
                "state": state or {},
                "tenant": self._job["tenant"],
            },
            start_to_close_timeout=timedelta(seconds=float(self._job["activity_timeout"])),
            retry_policy=RetryPolicy(maximum_attempts=1),
        )
