"""The op interpreter: runs a compiled flow's ops, calls chunks, fires events, records steps.

One :class:`Interpreter` per drive of an execution. The ops (``_ops``) see only its narrow
interface (:class:`keel_triggerflow._ops.OpHost`): whether it replays, the recorded facts of a
step or decision, and how to call a chunk, run ops, run a sub-flow and fire an event.
"""

from __future__ import annotations

import json
from collections.abc import Generator
from types import CoroutineType
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
from pydantic import BaseModel

import keel
from keel_triggerflow._context import Context, Scope
from keel_triggerflow._ops import STOP, Op, Step, Tail, emit_thread, thread_hash
from keel_triggerflow._part import ExecutionPart
from keel_triggerflow._records import AttemptFailed, Decision, ErrorInfo, StepCompleted, StepFailedRecord
from keel_triggerflow._values import BLOB_THRESHOLD, jsonable, model_ref, revive
from keel_triggerflow.types import FlowError, LeaseError, MissingResourceError, StepFailed

if TYPE_CHECKING:
    from keel_triggerflow._engine import FlowExecution
    from keel_triggerflow._history import History
    from keel_triggerflow.flow import TriggerFlow

Job = tuple[list[Op], Any, str]  # a chain to start: (ops, its first value, its thread)


class _Resumed:
    """Await a chunk's coroutine that already ran up to its first suspension (``signal``): the
    rest of it runs as if it had been awaited from the start (sends and throws pass through)."""

    __slots__ = ("coro", "signal")

    def __init__(self, coro: Any, signal: Any):
        self.coro = coro
        self.signal = signal

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, signal = self.coro, self.signal
        while True:
            try:
                sent = yield signal
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:
                try:
                    signal = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    signal = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


def error_info(err: BaseException) -> ErrorInfo:
    """How a step's error is recorded and shown: its type name and message."""
    if isinstance(err, StepFailed):
        return {"type": err.error_type, "message": err.message}
    return {"type": type(err).__name__, "message": str(err)}


class Interpreter(ExecutionPart):
    """Runs one execution's ops in this process (see the module docstring). The execution keeps its
    last interpreter (``_interp``); the interpreter holds it weakly (:class:`ExecutionPart`)."""

    execution = ExecutionPart.x

    def __init__(self, execution: FlowExecution, root: Scope):
        super().__init__(execution)
        self.replay = execution._replay
        self.replaying = self.replay.replaying
        self.journal = execution._journal
        self.waits = execution._waits
        self.events = execution._events
        self.resources = execution._resources
        self.step_events = execution._step_events
        self.root = root
        self.active = 0  # chunks running now (a wait inside a chunk counts too)

    # ------------------------------------------------------------------ what the ops see
    def recorded(self, key: str) -> StepCompleted | None:
        """The completion record of the step ``key`` (while replaying), or ``None``."""
        return self.replay.done.get(key)

    def decision(self, key: str) -> Any:
        """The recorded decision of the if/match ``key`` (while replaying), or ``None``."""
        return self.replay.decisions.get(key) if self.replaying else None

    def decide(self, key: str, value: Any) -> None:
        """Record the decision of the if/match ``key`` (with the next commit)."""
        history = self.journal.history
        if history is not None:
            record: Decision = {"t": "d", "p": key, "v": value}
            history.add(record)

    error_info = staticmethod(error_info)

    # ------------------------------------------------------------------ scopes and threads
    async def run_scope(self, scope: Scope, value: Any, thread: str) -> Any:
        async with anyio.create_task_group() as tg:
            scope.tg = tg
            if scope is self.root:
                for record in self.replay.external:  # external events of a resumed execution, in order
                    self.fire(scope, record["n"], record["v"], "ext", record["k"])
            try:
                out = await self.thread(scope, scope.compiled.main, value, thread)
            except Exception as err:
                if scope.error is None:
                    scope.error = err
                tg.cancel_scope.cancel()
        if scope.error is not None:
            raise scope.error
        if scope.has_result:
            return scope.result
        return None if out is STOP else out

    async def run_subflow(self, flow: TriggerFlow, parent: Scope, value: Any, prefix: str) -> Any:
        if flow.input_model is not None:
            value = flow.input_model.model_validate(jsonable(value))
        self.events.add("flow.subflow.started", {"flow": flow.name, "path": prefix})
        out = await self.run_scope(Scope(flow, prefix), value, prefix)
        if flow.output_model is not None:
            out = flow.output_model.model_validate(jsonable(out))
        return out

    async def thread(self, scope: Scope, ops: list[Op], value: Any, thread: str) -> Any:
        out = await self.run_ops(scope, ops, value, thread, True)
        if type(out) is not Tail:
            return out
        own = out.own
        while type(out) is Tail:
            ops = out.ops
            if len(ops) == 1:  # a loop's usual shape: one chunk per event
                op = ops[0]
                if type(op) is Step and not self.replaying:
                    out = await self.call(op, scope, out.value, out.thread + op.sfx, True)
                else:
                    out = await op.run(self, scope, out.value, out.thread, True)
            else:
                out = await self.run_ops(scope, ops, out.value, out.thread, True)
        return own

    async def _spawned(self, scope: Scope, ops: list[Op], value: Any, thread: str) -> None:
        try:
            await self.thread(scope, ops, value, thread)
        except Exception as err:
            if scope.error is None:
                scope.error = err
            scope.tg.cancel_scope.cancel()

    async def run_ops(self, scope: Scope, ops: list[Op], value: Any, thread: str, tail: bool) -> Any:
        last = len(ops) - 1
        fresh = not self.replaying
        for i, op in enumerate(ops):
            if fresh and type(op) is Step:  # what Step.run does when nothing is recorded, one call less
                value = await self.call(op, scope, value, thread + op.sfx, tail and i == last)
            else:
                value = await op.run(self, scope, value, thread, tail and i == last)
            if value is STOP:
                return STOP
        return value

    # ------------------------------------------------------------------ events
    def fire(self, scope: Scope, event: str, value: Any, origin: str, k: int, defer: list[Job] | None = None) -> None:
        """Start every chain of ``event``: each in a task of its own, or, given ``defer`` (a
        running chunk's list), queued there for :meth:`call` to start when the chunk suspends
        or ends."""
        handlers = scope.compiled.handlers.get(event)
        if self.step_events:
            self.events.add("flow.emit", {"event": event, "path": origin})
        if not handlers:
            return
        base = emit_thread(origin, event, k)
        if defer is not None and len(handlers) == 1 and handlers[0][1] is None:  # the common case
            defer.append((handlers[0][0], value, base))
            return
        for j, (ops, join) in enumerate(handlers):
            if join is not None:
                ready = scope.arrive(join, event, value)
                if ready is None:
                    continue
                full, rnd = ready
                job = (ops, full, thread_hash(scope.prefix, join, rnd))
            else:
                job = (ops, value, base if j == 0 else f"{base}.{j}")
            if defer is not None:
                defer.append(job)
            else:
                scope.tg.start_soon(self._spawned, scope, *job)

    def _start_deferred(self, scope: Scope, ctx: Context) -> None:
        """Start the chains a chunk's emits queued, each in its own task; later emits start at once."""
        deferred, ctx._deferred = ctx._deferred, None
        if deferred:
            for job in deferred:
                scope.tg.start_soon(self._spawned, scope, *job)

    def on_emit(self, scope: Scope, event: str, origin: str) -> None:
        if self.step_events:
            self.events.add("flow.emit", {"event": event, "path": origin})

    # ------------------------------------------------------------------ steps
    async def replay_step(self, scope: Scope, key: str, rec: StepCompleted) -> Any:
        for write in rec.get("s", ()):
            if len(write) == 1:
                scope.state.pop(write[0], None)
            else:
                scope.set_state(write[0], write[1])
        for k, (event, value) in enumerate(rec.get("e", ()), start=1):
            self.fire(scope, event, value, key, k)
        if "r" in rec:
            result = rec["r"]
            if "result" in result:
                scope.result, scope.has_result = result["result"], True
        self.execution.steps_completed += 1
        if "ref" in rec:
            store = self.journal.store
            assert store is not None
            out = json.loads(await store.get_blob(self.execution.tenant, rec["ref"]))
        else:
            out = rec.get("o")
        return revive(rec["m"], out) if "m" in rec else out

    async def call(self, op: Step, scope: Scope, value: Any, key: str, tail: bool = False) -> Any:
        """Run the chunk of ``op`` as the step ``key`` (with its retries), record and announce it."""
        if self.replaying:
            fail = self.replay.failed.get(key)
            if fail is not None:
                err = fail["err"]
                raise StepFailed(key, err["type"], err["message"], fail["a"])
            attempt = self.replay.attempts.get(key, 0) + 1
        else:
            attempt = 1
        history = self.journal.history
        events = self.step_events
        self.active += 1
        try:
            while True:
                ctx = Context(self, scope, key, value, attempt)
                if events:
                    self.events.add(
                        "flow.step.started", {"path": key, "step": op.name, "attempt": attempt}, span=ctx.span_id
                    )
                try:
                    if op.is_async or self.journal.lease is None:
                        out = op.fn(ctx)
                    else:  # a plain chunk may block: in a worker thread, the lease's heartbeat goes on
                        out = await anyio.to_thread.run_sync(op.fn, ctx)
                    if type(out) is CoroutineType:
                        # run it to its first suspension by hand: a chunk that ends without suspending
                        # (most do) lets its emits continue in this task instead of a new one each
                        try:
                            signal = out.send(None)
                        except StopIteration as stop:
                            out = stop.value
                        else:
                            self._start_deferred(scope, ctx)
                            out = await _Resumed(out, signal)
                    elif op.is_async or hasattr(out, "__await__"):
                        self._start_deferred(scope, ctx)
                        out = await out
                    break
                except Exception as err:
                    self._start_deferred(scope, ctx)  # what it emitted before failing runs, as it always did
                    if isinstance(err, (LeaseError, MissingResourceError)):
                        raise
                    info = error_info(err)
                    if attempt > op.retries or isinstance(err, keel.BudgetError):  # a retry would spend more
                        await self._step_failed(history, op, key, attempt, info, ctx)
                        raise StepFailed(key, info["type"], info["message"], attempt) from err
                    if history is not None:
                        retry: AttemptFailed = {"t": "x", "p": key, "a": attempt, "err": info}
                        history.add(retry)
                    if events:  # the attempt's end: tracers close its span, UIs show the retry
                        self.events.add(
                            "flow.step.retry", {"path": key, "step": op.name, "attempt": attempt, "error": info},
                            level="warning", span=ctx.span_id,
                        )  # fmt: skip
                    attempt += 1
        finally:
            self.active -= 1
            if self.waits.waiting and not self.journal.indexed_waiting:
                self.journal.index_if_waiting()
        deferred = ctx._deferred
        if deferred:
            if tail and history is None and len(deferred) == 1:
                ctx._deferred = None  # the one chain continues in this task once the step is done
            else:
                self._start_deferred(scope, ctx)  # before the commit, as a spawned task would run
                deferred = None
        else:
            ctx._deferred = None
        if history is not None:
            await self._record_completion(history, key, out, ctx, scope)
        self.execution.steps_completed += 1
        if events:
            self.events.add("flow.step.completed", {"path": key, "step": op.name}, span=ctx.span_id)
        if deferred:
            ops, start, thread = deferred[0]
            return Tail(ops, start, thread, out)
        return out

    async def _step_failed(
        self, history: History | None, op: Step, key: str, attempt: int, info: ErrorInfo, ctx: Context
    ) -> None:
        if history is not None:
            record: StepFailedRecord = {"t": "f", "p": key, "a": attempt, "err": info}
            await history.commit(record)
        if self.step_events:
            self.events.add(
                "flow.step.failed", {"path": key, "step": op.name, "error": info}, level="error", span=ctx.span_id
            )

    async def _record_completion(self, history: History, key: str, out: Any, ctx: Context, scope: Scope) -> None:
        data = jsonable(out)
        record: StepCompleted = {"t": "c", "p": key, "o": data}
        if data is not None and not isinstance(data, (int, float, bool)):
            try:
                text = json.dumps(data)
            except (TypeError, ValueError) as err:
                raise FlowError(
                    f"step {key} returned a value that cannot be stored ({err}); return JSON-compatible data "
                    "(dicts, lists, strings, numbers, pydantic models) or store bytes with the store's put_blob()"
                ) from err
            if len(text) > BLOB_THRESHOLD:
                store = self.journal.store
                assert store is not None
                ref = await store.put_blob(self.execution.tenant, text.encode(), "application/json")
                record = {"t": "c", "p": key, "ref": ref.sha256}
        if isinstance(out, BaseModel):  # replay gives back the model, not a dict
            record["m"] = model_ref(out)
        if ctx._sets:
            record["s"] = ctx._sets
        if ctx._emits:
            record["e"] = ctx._emits
        if scope.has_result and scope is self.root:
            record["r"] = {"result": jsonable(scope.result)}
        await history.commit(record)
