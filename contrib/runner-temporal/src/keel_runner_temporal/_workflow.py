"""The deterministic interpreter that runs inside the Temporal workflow.

Its input is the execution's frozen flow definition (TriggerFlow's data form) and those of the
sub-flows it names, so editing a flow never changes what a running execution replays. It runs the
definition as TriggerFlow's local engine runs the ops it compiles from it: the same step paths
(``@1.f.0``, ``@2[3]@2.f.0``, ``@4>@0``), so the same ``ctx.path`` and ``ctx.idempotency_key``; the
same values, state reducers, joins and results. It imports only temporalio and the standard
library: Temporal's sandbox re-imports this module for every workflow run.

Changing what this interpreter does to a history already recorded breaks the replay of running
executions: gate the change with ``workflow.patched(...)`` (see ``_STATE_IN_CHUNKS`` below) and add
a recorded history to ``tests/histories`` (the replay test runs them all).
"""

from __future__ import annotations

import asyncio
import operator
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError

from keel_runner_temporal._plan import EVENTS, STOP, PlanInterpreter, PlanScope, unwrapped
from keel_runner_temporal._plan import Scope as _Scope

WORKFLOW = "keel.flow"
CHUNK_ACTIVITY = "keel.chunk"
CONDITION_ACTIVITY = "keel.condition"
WAITING_ACTIVITY = "keel.waiting"
SIGNAL_UPDATE = "keel.signal"
EMIT_UPDATE = "keel.emit"
CHUNK_FAILED = "ChunkFailed"  # the error type of an activity whose chunk raised (not a lost worker)
WAIT_REQUESTED = "WaitRequested"  # an attempt stopped at ctx.pause_for: wait, then run it again
MEMO_KEY = "keel"  # the start's memo: {"flow": name, "tenant": tenant}
WAITING_MEMO = "keel_waiting"  # the waits the workflow is in (a memo: Temporal answers it with no worker)
REF = "$keel_ref"  # a value a worker put in the stack's store: {"$keel_ref": sha256, "size": bytes}
SUPPORTED = ("to", "end", "pause_for", "set_state", "if", "match", "batch", "for_each", "flow")
DEFAULT_CONCURRENCY = 256  # branches at once when batch/for_each name none, as on the local runner

#: a patch: chunks get the flow's state and write it back (histories before it sent no state)
_STATE_IN_CHUNKS = "keel-state-in-chunks"
#: a patch: a flow whose main chain is done continues as new between event chains (an event loop)
_EVENTS_CONTINUE = "keel-events-continue"
#: a patch: a chunk's own wait (``ctx.pause_for``) that times out with on_timeout="fail" raises
#: inside the chunk, as on the local runner (before it, it failed the execution)
_CHUNK_WAIT_TIMEOUT = "keel-chunk-wait-timeout"
#: a patch: continue-as-new while event chains run: chains not begun are held (data), the main
#: chain stops at a step boundary, the begun chains finish, then the workflow carries the rest
_DRAIN = "keel-drain-continue"
#: an answer to a chunk's wait that timed out: its ctx.pause_for raises WaitTimeout
TIMED_OUT = "$keel_wait_timed_out"
#: a patch: a wait is announced to the worker's process only once its memo is stored (a 1 ms timer
#: ends the workflow task that wrote it), so any process that sees it waiting can find the wait
_MEMO_BEFORE_NOTICE = "keel-memo-before-notice"

_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "in": lambda a, b: a in b,
    "not in": lambda a, b: a not in b,
}


def _dig(value: Any, path: str) -> Any:
    for part in path.split(".") if path else ():
        value = value[int(part)] if isinstance(value, list) else (value or {}).get(part)
    return value


def _failed(path: str, error_type: str, message: str, attempts: int = 1) -> ApplicationError:
    """A step's failure, worded as the local runner's ``StepFailed``; details keep type and message."""
    return ApplicationError(
        f"step {path} failed after {attempts} attempt(s): {error_type}: {message}",
        {"type": error_type, "message": message},
        type="StepFailed",
        non_retryable=True,
    )


def _error_info(err: BaseException) -> dict[str, str]:
    """A branch's error as the local runner's ``BranchError`` records it."""
    if isinstance(err, ApplicationError):
        if err.type == "StepFailed" and err.details:
            return dict(err.details[0])
        return {"type": err.type or "ApplicationError", "message": err.message}
    return {"type": type(err).__name__, "message": str(err)}


@workflow.defn(name=WORKFLOW, sandboxed=True)
class FlowWorkflow(PlanInterpreter):
    def __init__(self) -> None:
        self._job: dict[str, Any] = {}
        self._step = -1
        self._chunk = ""
        self._steps = 0
        self._signals: dict[str, list[Any]] = {}  # name -> answers not yet taken by a wait
        self._requests: dict[str, list[Any]] = {}  # request id -> [name, payload]
        self._waits: dict[str, dict[str, Any]] = {}  # interrupt id -> the interrupt
        self._waited = 0  # waits so far: each interrupt id is new
        self._root: PlanScope | None = None  # the flow's scope, once run() made it (events reach it)
        self._external: list[list[Any]] = []  # events from outside that came before run() made it
        self._emitted = 0  # events from outside fired so far: the k of each one's thread
        self._calls = 0  # steps called in this run (an event loop continues as new after continue_after)
        self._main_done = False
        self._carry: list[list[Any]] | None = None  # the chains a continue-as-new between chains carries
        self._draining = False  # toward a continue-as-new: root chains not begun wait (see _DRAIN)

    @workflow.run
    async def run(self, job: dict[str, Any]) -> Any:
        self._job = job
        carried = job.get("carried") or {}  # what a continue-as-new brought from the run before
        # merged, not replaced: an update delivered with the workflow's first task runs before run()
        for name, answers in (carried.get("signals") or {}).items():
            self._signals[name] = [*answers, *self._signals.get(name, [])]
        self._requests = {**(carried.get("requests") or {}), **self._requests}
        self._waited = int(carried.get("waited", 0))
        self._emitted = int(carried.get("emitted", 0))
        plan = job.get("plan")  # a flow built in Python, as TriggerFlow's runner contract gives it
        root = PlanScope(job["flow"], plan, "") if plan else _Scope(job["flow"], job["definition"], "")
        root.state = dict(carried.get("state") or {})
        root.result, root.has_result = carried.get("result"), bool(carried.get("has_result"))
        steps: list[dict[str, Any]] = list(plan["main"] if plan else job["definition"].get("steps", []))
        self._steps = len(steps)
        evented = isinstance(root, PlanScope) and root.evented and workflow.patched(EVENTS)
        if evented:
            assert isinstance(root, PlanScope)
            root.collections, root.rounds = dict(carried.get("collections") or {}), dict(carried.get("rounds") or {})
            self._root = root
            for w, sent, thread in carried.get("chains") or ():  # carried by a continue-as-new between chains
                self._spawn(root, int(w), sent, str(thread))
            # events from outside that came while the run before ended, then with this run's first task
            for event, sent in [*(carried.get("queued") or ()), *self._external]:
                self._emitted += 1
                self._fire(root, event, sent, "ext", self._emitted)
            self._external.clear()
            value = await self._scoped(root, self._main(root, steps, evented))
            self._root = None  # ended: a later event starts nothing
            if self._carry is not None:
                await self._continue_between_chains(root, value, len(steps))
        else:
            value = await self._main(root, steps, evented)
        self._step = self._steps
        return root.result if root.has_result else None if value is STOP else value

    async def _main(self, root: _Scope, steps: list[dict[str, Any]], evented: bool) -> Any:
        """The main chain, from where the run before stopped; continues-as-new at a step boundary
        (not while event chains run: they are not data to carry)."""
        try:
            return await self._main_chain(root, steps, evented)
        finally:
            self._main_done = True

    async def _main_chain(self, root: _Scope, steps: list[dict[str, Any]], evented: bool) -> Any:
        job = self._job
        carried = job.get("carried") or {}
        if carried.get("stopped"):
            return STOP  # the main chain ended in a collect, in a run before
        start = int(carried.get("at", 0))
        value = carried["value"] if "value" in carried else job["input"]
        for index in range(start, len(steps)):
            self._step = index
            if job.get("plan"):
                value = await self._plan_op(root, steps[index], "", value)
                if value is STOP:
                    return STOP
            else:
                value = await self._op(root, steps[index], str(index), "", value)
            if index + 1 < len(steps) and self._time_to_continue(index + 1 - start):
                quiet = not evented or not getattr(root, "tasks", None)
                if not quiet and not await self._drained(root):
                    continue  # not now: at the next boundary
                await workflow.wait_condition(workflow.all_handlers_finished)
                more = {"collections": root.collections, "rounds": root.rounds} if isinstance(root, PlanScope) else {}
                if isinstance(root, PlanScope) and root.pending:  # the chains the drain held: data
                    more["chains"] = [root.pending[n] for n in root.tasks if n in root.pending]
                workflow.continue_as_new(
                    {
                        **job,
                        "carried": {
                            "at": index + 1,
                            "value": value,
                            "state": root.state,
                            "result": root.result,
                            "has_result": root.has_result,
                            "signals": self._signals,
                            "requests": self._requests,
                            "waited": self._waited,
                            "emitted": self._emitted,
                            **more,
                        },
                    }
                )
        return value

    async def _drained(self, root: _Scope) -> bool:
        """At a main-chain step boundary while event chains run, time to continue as new: hold the
        chains not begun (data), let the begun ones finish, then True. False (go on, try at the
        next boundary) when a wait is open, or opens meanwhile: its answer may take days, and the
        held chains would wait as long; and in a history from before the drain (``_DRAIN``)."""
        if not isinstance(root, PlanScope) or self._waits or not workflow.patched(_DRAIN):
            return False
        self._draining = True
        await workflow.wait_condition(lambda: all(n in root.pending for n in root.tasks) or bool(self._waits))
        if all(n in root.pending for n in root.tasks):
            return True  # still draining: a chain an update starts now is held, and carried
        self._draining = False
        return False

    def _holds_chain(self, scope: PlanScope) -> bool:
        return self._draining and scope is self._root and not self._waits

    def _chain_done(self, scope: PlanScope) -> None:
        """An event loop continues as new here: the main chain is done, every other chain of the
        flow has not begun (so it is data: its when, value and thread), and it is time. While other
        chains are under way (coroutines, not data), it starts a drain (``_DRAIN``): chains not
        begun are held, and the last begun one to end carries them."""
        if scope is not self._root or not self._main_done:
            return
        me = asyncio.current_task()
        if any(n not in scope.pending and task is not me for n, task in scope.tasks.items()):
            if not self._draining and not self._waits and self._time_to_continue(self._calls):
                self._draining = workflow.patched(_DRAIN)
            return  # a chain is under way: a coroutine, not data
        if not scope.pending:
            self._draining = False  # nothing left to carry: the flow ends
            return
        if not self._draining and not (self._time_to_continue(self._calls) and workflow.patched(_EVENTS_CONTINUE)):
            return
        self._carry = [scope.pending[n] for n in scope.tasks if n in scope.pending]
        self._root = None  # events from outside wait in _external for the next run
        scope.cancel_all()  # none of them has begun: nothing is lost

    async def _continue_between_chains(self, root: PlanScope, value: Any, at: int) -> None:
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(
            {
                **self._job,
                "carried": {
                    "at": at, "value": None if value is STOP else value, "stopped": value is STOP,
                    "state": root.state, "result": root.result, "has_result": root.has_result,
                    "signals": self._signals, "requests": self._requests, "waited": self._waited,
                    "emitted": self._emitted, "collections": root.collections, "rounds": root.rounds,
                    "chains": self._carry, "queued": self._external,
                },
            }
        )  # fmt: skip

    def _time_to_continue(self, done: int) -> bool:
        """At a step boundary of the main chain: when Temporal suggests it (the history is long),
        or after ``continue_after`` steps in this run when the stack sets one."""
        every = self._job.get("continue_after")
        return workflow.info().is_continue_as_new_suggested() or (every is not None and done >= int(every))

    # ------------------------------------------------------------------------------ ops
    async def _ops(self, scope: _Scope, nodes: list[dict[str, Any]], prefix: str, thread: str, value: Any) -> Any:
        for j, node in enumerate(nodes):
            value = await self._op(scope, node, f"{prefix}{j}", thread, value)
        return value

    async def _op(self, scope: _Scope, node: dict[str, Any], sid: str, thread: str, value: Any) -> Any:
        key = f"{thread}@{sid}"
        try:
            if "to" in node:
                self._chunk = str(node["to"])
                return await self._call(scope, str(node["to"]), int(node.get("retries", 0)), key, value)
            if "end" in node:  # the value here is the flow's result; the steps after it still run
                scope.result, scope.has_result = value, True
                return value
            if "set_state" in node:
                scope.set(str(node["set_state"]), unwrapped(value))
                return value
            if "pause_for" in node:
                return await self._wait(node, key)
            if "flow" in node:
                return await self._subflow(str(node["flow"]), f"{key}>", value)
            if "if" in node:
                return await self._if(scope, node, sid, thread, value)
            if "match" in node:
                return await self._match(scope, node, sid, thread, value)
            if "batch" in node:
                return await self._batch(scope, node, sid, thread, value)
            if "for_each" in node:
                return await self._for_each(scope, node, sid, thread, value)
        except (TypeError, KeyError, IndexError, ValueError, AttributeError) as err:
            # a value the construct cannot use: fail the execution (a plain error would retry the task forever)
            raise ApplicationError(
                f"step {key}: {type(err).__name__}: {err}", type=type(err).__name__, non_retryable=True
            ) from None
        kind = next(iter(node), "?")
        raise ApplicationError(
            f"step {key} is a {kind!r} node, which the temporal runner does not run", non_retryable=True
        )

    async def _if(self, scope: _Scope, node: dict[str, Any], sid: str, thread: str, value: Any) -> Any:
        for b, branch in enumerate(node["if"]):
            if await self._holds(scope, branch["condition"], value, f"{thread}@{sid}"):
                return await self._ops(scope, branch["then"], f"{sid}.{b}.", thread, value)
        if node.get("else"):
            return await self._ops(scope, node["else"], f"{sid}.e.", thread, value)
        return value

    async def _match(self, scope: _Scope, node: dict[str, Any], sid: str, thread: str, value: Any) -> Any:
        subject = _dig(self._plain(value, f"{thread}@{sid}"), str(node.get("key", "")))
        hits: list[int] = []
        for c, case in enumerate(node["match"]):
            wanted = case["case"]
            if isinstance(wanted, dict) and "condition" in wanted:
                hit = await self._holds(scope, wanted["condition"], subject, f"{thread}@{sid}")
            else:
                hit = subject == wanted
            if hit:
                hits.append(c)
                if node.get("mode", "hit_first") == "hit_first":
                    break
        if not hits:
            return await self._ops(scope, node["else"], f"{sid}.e.", thread, value) if node.get("else") else value
        if node.get("mode", "hit_first") == "hit_first":
            return await self._ops(scope, node["match"][hits[0]]["then"], f"{sid}.{hits[0]}.", thread, value)
        return [await self._ops(scope, node["match"][c]["then"], f"{sid}.{c}.", thread, value) for c in hits]

    async def _batch(self, scope: _Scope, node: dict[str, Any], sid: str, thread: str, value: Any) -> Any:
        flows = self._job.get("flows") or {}

        def branch(name: str, target: str) -> Callable[[], Awaitable[Any]]:
            key = f"{thread}@{sid}.{name}.0"
            if target in flows:  # a registered flow wins over a chunk of that name, as Registry builds it
                return lambda: self._subflow(target, f"{key}>", value)
            return lambda: self._call(scope, target, 0, key, value)

        names = list(node["batch"])
        results = await self._gather([branch(n, str(t)) for n, t in node["batch"].items()], node)
        return dict(zip(names, results, strict=True))

    async def _for_each(self, scope: _Scope, node: dict[str, Any], sid: str, thread: str, value: Any) -> Any:
        value = self._plain(value, f"{thread}@{sid}")
        if not isinstance(value, (list, dict)):
            raise TypeError(f"for_each needs a list or an object, got {type(value).__name__}")
        items = [list(pair) for pair in value.items()] if isinstance(value, dict) else list(value)
        base = f"{thread}@{sid}"

        def item(i: int, it: Any) -> Callable[[], Awaitable[Any]]:
            return lambda: self._ops(scope, node["for_each"], f"{sid}.f.", f"{base}[{i}]", it)

        return await self._gather([item(i, it) for i, it in enumerate(items)], node)

    async def _gather(self, jobs: list[Callable[[], Awaitable[Any]]], node: dict[str, Any]) -> list[Any]:
        """Run branches concurrently (``concurrency`` at once); ``fail_fast`` cancels the others on
        the first failure, ``collect`` leaves ``{"error": {"type", "message"}}`` in its slot."""
        gate = asyncio.Semaphore(int(node.get("concurrency") or DEFAULT_CONCURRENCY))

        async def one(job: Callable[[], Awaitable[Any]]) -> Any:
            async with gate:
                return await job()

        tasks = [asyncio.ensure_future(one(job)) for job in jobs]
        if node.get("on_error") == "collect":
            done = await asyncio.gather(*tasks, return_exceptions=True)
            for out in done:
                if isinstance(out, BaseException) and not isinstance(out, Exception):
                    raise out  # a cancel of the execution is not a branch's error
            return [{"error": _error_info(out)} if isinstance(out, Exception) else out for out in done]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:
                task.cancel()
            raise

    async def _subflow(self, name: str, prefix: str, value: Any) -> Any:
        definition = (self._job.get("flows") or {})[name]
        scope = _Scope(name, definition, prefix)
        out = await self._ops(scope, list(definition.get("steps", [])), "", prefix, value)
        return scope.result if scope.has_result else out

    # ------------------------------------------------------------------------ conditions
    async def _holds(self, scope: _Scope, condition: Any, subject: Any, path: str) -> bool:
        """A comparison is data: decided here. A registered condition is code: a worker decides it
        (a local activity, recorded, so a replay takes the same branch)."""
        if isinstance(condition, str):
            return bool(
                await workflow.execute_local_activity(
                    CONDITION_ACTIVITY,
                    {"flow": scope.flow, "name": condition, "subject": subject, "state": scope.state},
                    start_to_close_timeout=timedelta(seconds=float(self._job["activity_timeout"])),
                    retry_policy=RetryPolicy(maximum_attempts=1),
                )
            )
        subject = _dig(self._plain(subject, path), str(condition.get("path", "")))
        op = str(condition.get("op", "=="))
        if op == "truthy":
            return bool(subject)
        return bool(_COMPARE[op](subject, condition.get("value")))

    def _plain(self, value: Any, path: str) -> Any:
        """``value`` when the workflow may look inside it: a value passed by reference stays in the
        stack's store, which the workflow never reads."""
        if isinstance(value, dict) and REF in value:
            raise ApplicationError(
                f"step {path} looks inside a value passed by reference ({value.get('size')} bytes, over [runner] "
                "inline_limit): a condition, match or for_each needs the value in the workflow. Return a "
                "smaller value (or the part to branch on) from the step before, or raise inline_limit",
                type="ValueByReference",
                non_retryable=True,
            )
        return unwrapped(value)  # a pydantic output is looked into as its data

    # ----------------------------------------------------------------------------- steps
    async def _call(
        self, scope: _Scope, chunk: str, retries: int, path: str, value: Any, *, ref: str | None = None
    ) -> Any:
        """One step: the chunk as an activity, tried ``retries + 1`` times. A failure of the chunk
        itself counts as an attempt (``ctx.attempt``, as on the local runner); an attempt lost to
        the worker (killed, timed out) is redelivered by Temporal with the same attempt number, so
        ``ctx.idempotency_key`` is the same and a keyed effect happens once."""
        job = self._job
        self._calls += 1
        heartbeat = job.get("heartbeat_timeout")
        with_state = workflow.patched(_STATE_IN_CHUNKS)
        attempt = 1
        answers: list[Any] = []  # to its ctx.pause_for calls, in order (kept across attempts)
        while True:
            call = {
                "flow": scope.flow,
                "chunk": chunk,
                "path": path,
                "attempt": attempt,
                "value": value,
                "input": job["input"],
                "execution_id": workflow.info().workflow_id,
                "tenant": job["tenant"],
            }
            if with_state:
                call["state"] = scope.state
            if ref is not None:  # a plan's step: the worker calls flow.run_step(ref, ...)
                call["ref"] = ref
            if answers:
                call["answers"] = answers
            retry = RetryPolicy(
                maximum_attempts=int(job.get("redeliveries", 20)) + 1,
                non_retryable_error_types=[CHUNK_FAILED, "TemporalRunnerError", "PayloadTooLarge"],
            )
            timeout = timedelta(seconds=float(job["activity_timeout"]))
            try:
                if chunk in (job.get("local_chunks") or ()):  # declared cheap and pure: no task-queue round trip
                    out = await workflow.execute_local_activity(
                        CHUNK_ACTIVITY, call, start_to_close_timeout=timeout, retry_policy=retry
                    )
                else:
                    out = await workflow.execute_activity(
                        CHUNK_ACTIVITY,
                        call,
                        start_to_close_timeout=timeout,
                        heartbeat_timeout=None if heartbeat is None else timedelta(seconds=float(heartbeat)),
                        retry_policy=retry,
                    )
            except (ActivityError, ApplicationError) as err:  # a local activity's failure comes unwrapped
                cause = err.cause if isinstance(err, ActivityError) else err
                if isinstance(cause, CancelledError):
                    raise  # the execution was cancelled: it ends cancelled, not failed
                if isinstance(cause, ApplicationError) and cause.type == WAIT_REQUESTED and cause.details:
                    answers.append(await self._chunk_wait(dict(cause.details[0]), path))  # the same attempt again
                    continue
                if isinstance(cause, ApplicationError) and cause.type == CHUNK_FAILED and attempt <= retries:
                    attempt += 1
                    continue
                if isinstance(cause, ApplicationError) and cause.type == CHUNK_FAILED and cause.details:
                    info = cause.details[0]
                    raise _failed(path, str(info["type"]), str(info["message"]), attempt) from None
                kind = cause.type if isinstance(cause, ApplicationError) and cause.type else type(cause).__name__
                raise _failed(path, kind, getattr(cause, "message", None) or str(cause or err), attempt) from None
            if with_state:
                await self._write(scope, out["s"], ref or "")
                if out.get("r") is not None:  # the chunk called ctx.set_result
                    scope.result, scope.has_result = out["r"]["result"], True
                for k, (event, sent) in enumerate(out.get("e") or (), start=1):  # its ctx.emit calls
                    self._fire(scope, str(event), sent, path, k)
                return out["o"]
            return out

    # ----------------------------------------------------------------------------- waits
    async def _wait(self, node: dict[str, Any], path: str) -> Any:
        name = str(node["pause_for"])
        timeout = node.get("timeout")
        self._waited += 1
        interrupt_id = f"i{self._waited}"
        interrupt = {
            "id": interrupt_id,
            "name": name,
            "payload": node.get("payload"),
            "path": path,
            "deadline": None if timeout is None else workflow.now().timestamp() + float(timeout),
        }
        self._waits[interrupt_id] = interrupt
        workflow.upsert_memo({WAITING_MEMO: list(self._waits.values())})  # any process reads it, no worker needed
        if workflow.patched(_MEMO_BEFORE_NOTICE):
            await workflow.sleep(0.001)
        # tells the worker's process, so that an execution object there shows it (status, event)
        await workflow.execute_local_activity(
            WAITING_ACTIVITY,
            {"execution_id": workflow.info().workflow_id, **interrupt},
            start_to_close_timeout=timedelta(seconds=10),
        )
        try:
            await workflow.wait_condition(lambda: bool(self._signals.get(name)), timeout=timeout)
        except TimeoutError:
            self._waited_for(interrupt_id)
            if node.get("on_timeout") == "continue":
                return node.get("default")
            raise ApplicationError(
                f"no {name!r} signal within {timeout}s", type="WaitTimeout", non_retryable=True
            ) from None
        self._waited_for(interrupt_id)  # not in a `finally`: an evicted workflow must not touch its memo
        return self._signals[name].pop(0)

    async def _chunk_wait(self, node: dict[str, Any], path: str) -> Any:
        """A chunk's own wait: its answer; one that timed out with on_timeout="fail" answers
        ``{TIMED_OUT: name}``, which the chunk's ``ctx.pause_for`` raises as WaitTimeout."""
        try:
            return await self._wait(node, path)
        except ApplicationError as err:
            if err.type != "WaitTimeout" or not workflow.patched(_CHUNK_WAIT_TIMEOUT):
                raise
            return {TIMED_OUT: str(node["pause_for"])}

    def _waited_for(self, interrupt_id: str) -> None:
        del self._waits[interrupt_id]
        workflow.upsert_memo({WAITING_MEMO: list(self._waits.values()) or None})

    @workflow.update(name=SIGNAL_UPDATE)
    def signal(self, call: dict[str, Any]) -> None:
        """Deliver a signal: a wait for ``name`` takes it (now, or when it comes to the wait)."""
        request_id = call.get("request_id")
        if request_id is not None:
            if request_id in self._requests:
                return  # the same request again: already delivered
            self._requests[request_id] = [call["name"], call.get("payload")]
        self._signals.setdefault(str(call["name"]), []).append(call.get("payload"))

    @signal.validator
    def _check_signal(self, call: dict[str, Any]) -> None:
        request_id = call.get("request_id")
        seen = self._requests.get(request_id) if request_id is not None else None
        if seen is not None and seen != [call["name"], call.get("payload")]:
            raise ApplicationError(f"request id {request_id!r} was already used for another signal", type="Conflict")

    @workflow.update(name=EMIT_UPDATE)
    def emit(self, call: dict[str, Any]) -> None:
        """An event from outside (``execution.emit``): starts the flow's ``when`` chains of it in
        the thread ``thread_hash("ext", event, k)``, as the local engine's external events."""
        if self._root is None:  # before run() made the scope (or a flow with no event chains)
            self._external.append([str(call["event"]), call.get("value")])
        else:
            self._emitted += 1
            self._fire(self._root, str(call["event"]), call.get("value"), "ext", self._emitted)

    @workflow.query(name="keel.position")
    def position(self) -> dict[str, Any]:
        """Where the interpreter is: the main chain's step index (``steps`` once done), the last
        chunk called, and the first wait it is in (``None`` when none; ``waits`` lists them all)."""
        waits = list(self._waits.values())
        return {
            "step": self._step,
            "steps": self._steps,
            "chunk": self._chunk,
            "waiting": waits[0] if waits else None,
            "waits": waits,
        }
