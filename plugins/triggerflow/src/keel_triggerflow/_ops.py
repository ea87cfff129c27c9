"""The compiled form of a flow: a tree of ops, each with a stable id.

A step's durable identity is ``thread + "@" + op id``: the op id comes from the op's place in the
definition (never from the chunk function, so the same chunk at two places is two steps and never
a loop), and the thread names the dynamic instance (main chain, a for-each item, an event trigger).
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from keel_triggerflow.types import BranchError, FlowDefinitionError

if TYPE_CHECKING:
    from keel_triggerflow._context import Scope as _Scope
    from keel_triggerflow._records import ErrorInfo, StepCompleted

DEFAULT_CONCURRENCY = 256  # branches at once when batch/for_each name no concurrency
STOP: Any = object()  # a thread ends here (a collect that is not yet full)


class Tail:
    """Continue with another chain in the same task: an emit in tail position that starts exactly
    one chain (the ``emit`` op, or a chunk whose ``ctx.emit`` started one chain and which finished
    without suspending). The thread's own output stays ``own``; the chain starts with ``value``."""

    __slots__ = ("ops", "own", "thread", "value")

    def __init__(self, ops: list[Op], value: Any, thread: str, own: Any):
        self.ops = ops
        self.value = value
        self.thread = thread
        self.own = own


class OpHost(Protocol):
    """What an op may use of the engine that runs it (the local engine's ``Interpreter``): nothing
    else. ``replaying`` is true for a loaded execution, whose recorded facts come back through
    ``recorded``/``decision`` instead of running again."""

    replaying: bool

    def recorded(self, key: str) -> StepCompleted | None: ...

    async def replay_step(self, scope: _Scope, key: str, rec: StepCompleted) -> Any: ...

    async def call(self, op: Step, scope: _Scope, value: Any, key: str, tail: bool = False) -> Any: ...

    async def run_ops(self, scope: _Scope, ops: list[Op], value: Any, thread: str, tail: bool) -> Any: ...

    async def run_subflow(self, flow: Any, parent: _Scope, value: Any, prefix: str) -> Any: ...

    def decision(self, key: str) -> Any: ...

    def decide(self, key: str, value: Any) -> None: ...

    def error_info(self, err: BaseException) -> ErrorInfo: ...

    def fire(self, scope: _Scope, event: str, value: Any, origin: str, k: int) -> None: ...

    def on_emit(self, scope: _Scope, event: str, origin: str) -> None: ...


def thread_hash(*parts: object) -> str:
    """A short, stable thread id for an event-triggered chain: constant size however deep a loop goes."""
    return "t" + hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=6).hexdigest()


_blake2b = hashlib.blake2b


def emit_thread(origin: str, event: str, k: int) -> str:
    """``thread_hash(origin, event, k)``, the id of the chain an emit starts, without the generic join."""
    return "t" + _blake2b(f"{origin}|{event}|{k}".encode(), digest_size=6).hexdigest()


def _arity(fn: Callable[..., Any]) -> int:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 1
    return sum(1 for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty)


class Predicate:
    """A condition: ``fn(value)`` or ``fn(value, state)``; may be async."""

    __slots__ = ("fn", "two")

    def __init__(self, fn: Callable[..., Any]):
        self.fn = fn
        self.two = _arity(fn) >= 2

    async def __call__(self, value: Any, state: dict[str, Any]) -> bool:
        result = self.fn(value, state) if self.two else self.fn(value)
        if inspect.isawaitable(result):
            result = await result
        return bool(result)


class Op:
    __slots__ = ("sfx", "sid")

    def __init__(self) -> None:
        self.sid = ""
        self.sfx = ""

    def children(self) -> list[tuple[str, list[Op]]]:
        return []

    async def run(self, x: OpHost, scope: _Scope, value: Any, thread: str, tail: bool) -> Any:
        raise NotImplementedError


class Step(Op):
    """Call a chunk: ``async def chunk(ctx)``; its output flows on."""

    __slots__ = ("fn", "is_async", "name", "retries")

    def __init__(self, fn: Callable[..., Any], name: str, retries: int = 0):
        super().__init__()
        self.fn = fn
        self.name = name
        self.retries = retries
        self.is_async = inspect.iscoroutinefunction(fn)

    async def run(self, x: OpHost, scope: _Scope, value: Any, thread: str, tail: bool) -> Any:
        key = thread + self.sfx
        if x.replaying:
            rec = x.recorded(key)
            if rec is not None:
                return await x.replay_step(scope, key, rec)
        return await x.call(self, scope, value, key, tail)


class Pause(Step):
    """``.pause_for(name)`` in a chain: a step whose chunk waits for the signal ``name``; what
    it waits for is kept here, so that a runner can read it from the plan."""

    __slots__ = ("default", "on_timeout", "payload", "signal", "timeout")

    def __init__(self, signal: str, payload: Any, timeout: float | None, on_timeout: str, default: Any) -> None:
        self.signal = signal
        self.payload = payload  # a value, or fn(value) -> the payload shown with the wait
        self.timeout = timeout
        self.on_timeout = on_timeout
        self.default = default

        async def wait(ctx: Any) -> Any:
            return await ctx.pause_for(
                signal, self.payload_for(ctx.value), timeout=timeout, on_timeout=on_timeout, default=default
            )

        super().__init__(wait, f"pause_for:{signal}")

    def payload_for(self, value: Any) -> Any:
        return self.payload(value) if callable(self.payload) else self.payload


class SubFlow(Op):
    """Run a whole flow inline with its own state; its RESULT (not a snapshot) flows on."""

    __slots__ = ("flow",)

    def __init__(self, flow: Any):
        super().__init__()
        self.flow = flow

    async def run(self, x: OpHost, scope: _Scope, value: Any, thread: str, tail: bool) -> Any:
        return await x.run_subflow(self.flow, scope, value, thread + self.sfx + ">")


class If(Op):
    __slots__ = ("branches", "else_ops")

    def __init__(self) -> None:
        super().__init__()
        self.branches: list[tuple[Predicate, list[Op]]] = []
        self.else_ops: list[Op] | None = None

    def children(self) -> list[tuple[str, list[Op]]]:
        kids = [(str(i), ops) for i, (_, ops) in enumerate(self.branches)]
        return [*kids, ("e", self.else_ops)] if self.else_ops is not None else kids

    async def choose(self, value: Any, state: dict[str, Any]) -> int:
        """The branch taken: the first whose condition holds, or ``len(branches)`` for the else."""
        for i, (pred, _) in enumerate(self.branches):
            if await pred(value, state):
                return i
        return len(self.branches)

    async def run(self, x: OpHost, scope: _Scope, value: Any, thread: str, tail: bool) -> Any:
        key = thread + self.sfx
        index = x.decision(key)
        if index is None:
            index = await self.choose(value, scope.state)
            x.decide(key, index)
        ops = self.branches[index][1] if index < len(self.branches) else self.else_ops
        if not ops:
            return value
        return await x.run_ops(scope, ops, value, thread, tail)


class Match(Op):
    __slots__ = ("cases", "else_ops", "key", "mode")

    def __init__(self, key: Callable[[Any], Any] | None, mode: str):
        super().__init__()
        self.key = key
        self.mode = mode
        self.cases: list[tuple[Any, list[Op]]] = []
        self.else_ops: list[Op] | None = None

    def children(self) -> list[tuple[str, list[Op]]]:
        kids = [(str(i), ops) for i, (_, ops) in enumerate(self.cases)]
        return [*kids, ("e", self.else_ops)] if self.else_ops is not None else kids

    async def hits(self, value: Any, state: dict[str, Any]) -> list[int]:
        """The cases that match, in order (only the first with ``hit_first``)."""
        subject = self.key(value) if self.key else value
        hits: list[int] = []
        for i, (case, _) in enumerate(self.cases):
            hit = await case(subject, state) if isinstance(case, Predicate) else subject == case
            if hit:
                hits.append(i)
                if self.mode == "hit_first":
                    break
        return hits

    async def run(self, x: OpHost, scope: _Scope, value: Any, thread: str, tail: bool) -> Any:
        key = thread + self.sfx
        hits = x.decision(key)
        if hits is None:
            hits = await self.hits(value, scope.state)
            x.decide(key, hits)
        if not hits:
            return await x.run_ops(scope, self.else_ops, value, thread, tail) if self.else_ops else value
        if self.mode == "hit_first":
            return await x.run_ops(scope, self.cases[hits[0]][1], value, thread, tail)
        return [await x.run_ops(scope, self.cases[i][1], value, thread, False) for i in hits]


class _Join(Op):
    """Shared by batch and for_each: run branches concurrently, fail fast or collect errors."""

    __slots__ = ("concurrency", "on_error")

    def __init__(self, concurrency: int | None, on_error: str):
        super().__init__()
        self.concurrency = concurrency
        self.on_error = on_error

    async def _gather(self, x: OpHost, scope: _Scope, jobs: list[tuple[list[Op], Any, str]]) -> list[Any]:
        results: list[Any] = [None] * len(jobs)
        failure: list[BaseException] = []
        collect = self.on_error == "collect"
        scope_ref: list[anyio.CancelScope] = []

        async def one(i: int) -> None:
            ops, value, thread = jobs[i]
            try:
                results[i] = await x.run_ops(scope, ops, value, thread, False)
            except Exception as err:
                if collect:
                    info = x.error_info(err)
                    results[i] = BranchError(error={"type": info["type"], "message": info["message"]}).model_dump()
                elif not failure:
                    failure.append(err)
                    scope_ref[0].cancel()

        n = len(jobs)
        # a pool of workers, not a task per branch: an anyio task costs ~15 us, a pooled item ~1 us
        workers = min(n, self.concurrency or DEFAULT_CONCURRENCY)
        indexes = iter(range(n))

        async def worker() -> None:
            for i in indexes:
                await one(i)

        async with anyio.create_task_group() as tg:
            scope_ref.append(tg.cancel_scope)
            for _ in range(workers):
                tg.start_soon(worker, name="triggerflow-branch")
        if failure:
            raise failure[0]
        return results


class Batch(_Join):
    __slots__ = ("branches",)

    def __init__(self, branches: list[tuple[str, list[Op]]], concurrency: int | None, on_error: str):
        super().__init__(concurrency, on_error)
        self.branches = branches

    def children(self) -> list[tuple[str, list[Op]]]:
        return [(name, ops) for name, ops in self.branches]

    async def run(self, x: OpHost, scope: _Scope, value: Any, thread: str, tail: bool) -> Any:
        results = await self._gather(x, scope, [(ops, value, thread) for _, ops in self.branches])
        return {name: results[i] for i, (name, _) in enumerate(self.branches)}


class ForEach(_Join):
    __slots__ = ("ops",)

    def __init__(self, concurrency: int | None, on_error: str):
        super().__init__(concurrency, on_error)
        self.ops: list[Op] = []

    def children(self) -> list[tuple[str, list[Op]]]:
        return [("f", self.ops)]

    async def run(self, x: OpHost, scope: _Scope, value: Any, thread: str, tail: bool) -> Any:
        base = thread + self.sfx
        items = list(value.items()) if isinstance(value, dict) else list(value)
        return await self._gather(x, scope, [(self.ops, item, f"{base}[{i}]") for i, item in enumerate(items)])


class Emit(Op):
    """Emit the current value as an event; the value flows on unchanged."""

    __slots__ = ("event",)

    def __init__(self, event: str):
        super().__init__()
        self.event = event

    async def run(self, x: OpHost, scope: _Scope, value: Any, thread: str, tail: bool) -> Any:
        key = thread + self.sfx
        if tail:
            handlers = scope.compiled.handlers.get(self.event)
            if handlers is not None and len(handlers) == 1 and handlers[0][1] is None:
                x.on_emit(scope, self.event, key)
                return Tail(handlers[0][0], value, emit_thread(key, self.event, 0), value)
        x.fire(scope, self.event, value, key, 0)
        return value


class Collect(Op):
    """Gather values from several chains by key; the chain after the collect runs once, when full."""

    __slots__ = ("key", "name", "then")

    def __init__(self, name: str, key: str):
        super().__init__()
        self.name = name
        self.key = key
        self.then: list[Op] = []

    def children(self) -> list[tuple[str, list[Op]]]:
        return [("c", self.then)]

    async def run(self, x: OpHost, scope: _Scope, value: Any, thread: str, tail: bool) -> Any:
        ready = scope.arrive(self.name, self.key, value)
        if ready is None:
            return STOP
        full, rnd = ready
        then = scope.compiled.collect_then.get(self.name)
        if not then:
            return full
        return await x.run_ops(scope, then, full, thread_hash(scope.prefix, "collect", self.name, rnd), tail)


class End(Op):
    """The value reaching here becomes the flow's result."""

    async def run(self, x: OpHost, scope: _Scope, value: Any, thread: str, tail: bool) -> Any:
        scope.result = value
        scope.has_result = True
        return value


class SetState(Op):
    """Write the current value into the flow's state under a key (through the key's reducer)."""

    __slots__ = ("key",)

    def __init__(self, key: str):
        super().__init__()
        self.key = key

    async def run(self, x: OpHost, scope: _Scope, value: Any, thread: str, tail: bool) -> Any:
        scope.set_state(self.key, value)
        return value


class Compiled:
    """A flow ready to run: ops with ids, the event handler table, the collect table."""

    def __init__(self, main: list[Op], whens: list[tuple[list[str], str, list[Op]]], name: str):
        self.main = main
        # event -> [(ops, join name or None)]
        self.handlers: dict[str, list[tuple[list[Op], str | None]]] = {}
        self.collect_keys: dict[str, list[str]] = {}
        self.collect_then: dict[str, list[Op]] = {}
        self.steps = 0
        self.by_id: dict[str, Op] = {}  # op id -> op (what a runner's references name)
        problems: list[str] = []
        _assign(main, "", self, problems)
        for j, (events, mode, ops) in enumerate(whens):
            _assign(ops, f"w{j}:", self, problems)
            join = f"when:{j}" if mode == "and" and len(events) > 1 else None
            if join:
                self.collect_keys[join] = list(events)
                self.collect_then[join] = ops
            for event in events:
                self.handlers.setdefault(event, []).append((ops, join))
        if problems:
            raise FlowDefinitionError(name, problems)


def _assign(ops: list[Op], prefix: str, compiled: Compiled, problems: list[str]) -> None:
    for i, op in enumerate(ops):
        op.sid = f"{prefix}{i}"
        op.sfx = "@" + op.sid
        compiled.by_id[op.sid] = op
        if isinstance(op, (Step, SubFlow)):
            compiled.steps += 1
        if isinstance(op, Collect):
            keys = compiled.collect_keys.setdefault(op.name, [])
            if op.key in keys:
                problems.append(f"collect {op.name!r} uses the key {op.key!r} twice")
            keys.append(op.key)
            if op.then:
                if op.name in compiled.collect_then:
                    problems.append(f"collect {op.name!r}: only one of its collect() calls may have steps after it")
                compiled.collect_then[op.name] = op.then
        for tag, kids in op.children():
            _assign(kids, f"{op.sid}.{tag}.", compiled, problems)
