"""What a chunk sees while the local engine runs it: :class:`Context` (``ctx``), its ``ctx.state``,
and the run of one flow or sub-flow (:class:`Scope`) whose state it reads and writes."""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any

from keel import Runtime
from keel_triggerflow._values import jsonable
from keel_triggerflow.types import MissingResourceError

if TYPE_CHECKING:
    from keel_triggerflow._interpreter import Interpreter
    from keel_triggerflow._ops import Compiled, Op
    from keel_triggerflow.flow import TriggerFlow

#: the live resource that follows sub-flow boundaries (see ``Context.resource``)
WORKSPACE_RESOURCE = "workspace"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.:@-]+")


def scope_name(prefix: str) -> str:
    """A sub-flow's step path as a workspace scope: '/'-separated, safe characters only."""
    parts = [_UNSAFE.sub("_", part).strip("_") or "_" for part in prefix.rstrip(">").split(">")]
    return "/".join(parts)


def set_state(state: dict[str, Any], reducers: dict[str, Any], key: str, value: Any) -> None:
    """Write ``value`` (as data) into ``state[key]`` through the key's reducer (``last`` by default)."""
    value = jsonable(value)  # state is data: the same live and when rebuilt from history
    reducer = reducers.get(key, "last")
    if reducer == "last":
        state[key] = value
    elif reducer == "list":
        state.setdefault(key, []).append(value)
    elif reducer == "dict":
        state.setdefault(key, {}).update(value)
    else:
        state[key] = reducer(state.get(key), value)


class Scope:
    """A flow's run: the root flow or one sub-flow instance, with its own state."""

    __slots__ = ("collections", "compiled", "error", "flow", "has_result", "prefix", "result", "rounds", "state", "tg")

    def __init__(self, flow: TriggerFlow, prefix: str):
        self.flow = flow
        self.compiled: Compiled = flow.compile()
        self.prefix = prefix
        self.state: dict[str, Any] = {}
        self.result: Any = None
        self.has_result = False
        self.tg: Any = None
        self.error: BaseException | None = None
        self.collections: dict[str, dict[str, Any]] = {}
        self.rounds: dict[str, int] = {}

    def set_state(self, key: str, value: Any) -> None:
        set_state(self.state, self.flow.reducers, key, value)

    def arrive(self, name: str, key: str, value: Any) -> tuple[dict[str, Any], int] | None:
        expected = self.compiled.collect_keys[name]
        bucket = self.collections.setdefault(name, {})
        bucket[key] = value
        if len(bucket) < len(expected):
            return None
        del self.collections[name]
        rnd = self.rounds.get(name, 0) + 1
        self.rounds[name] = rnd
        return {k: bucket[k] for k in expected}, rnd


class _State:
    """``ctx.state``: reads and writes the flow's state; writes are recorded with the step."""

    __slots__ = ("_ctx",)

    def __init__(self, ctx: Context):
        self._ctx = ctx

    def get(self, key: str, default: Any = None) -> Any:
        return self._ctx._scope.state.get(key, default)

    def set(self, key: str, value: Any) -> None:
        ctx = self._ctx
        ctx._scope.set_state(key, value)
        ctx._sets.append([key, jsonable(value)])

    def __getitem__(self, key: str) -> Any:
        return self._ctx._scope.state[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.set(key, value)

    def __delitem__(self, key: str) -> None:
        ctx = self._ctx
        del ctx._scope.state[key]  # a KeyError for a key that is not there, as a dict gives
        ctx._sets.append([key])  # one element: a deletion, replayed as one

    def __contains__(self, key: object) -> bool:
        return key in self._ctx._scope.state

    def to_dict(self) -> dict[str, Any]:
        return dict(self._ctx._scope.state)


class Context:
    """What a chunk receives: the value, state, emit, the runtime stream, waits, resources."""

    __slots__ = ("_deferred", "_emits", "_scope", "_sets", "_span", "_waits", "_x", "attempt", "path", "value")

    def __init__(self, x: Interpreter, scope: Scope, path: str, value: Any, attempt: int):
        self._x = x
        self._scope = scope
        self.path = path
        self.value = value
        self.attempt = attempt
        self._emits: list[list[Any]] = []
        self._sets: list[list[Any]] = []
        self._waits = 0
        self._span: str | None = None
        # chains started by emit() while the chunk has not yet suspended: the engine starts them
        # when it suspends or ends (the same moment a spawned task would first run); None = at once
        self._deferred: list[tuple[list[Op], Any, str]] | None = []

    @property
    def input(self) -> Any:
        """The same as ``value`` (Agently's name)."""
        return self.value

    @property
    def execution_id(self) -> str:
        return self._x.execution.id

    @property
    def tenant(self) -> str:
        return self._x.execution.tenant

    @property
    def runtime(self) -> Runtime:
        return self._x.execution.runtime

    @property
    def trace_id(self) -> str:
        """The execution's trace id: pass it (with :attr:`span_id`) to work this step starts, so
        that a tracer shows that work inside the step (an agent run as a step gets both)."""
        return self._x.events.template.trace_id or ""

    @property
    def span_id(self) -> str:
        """This attempt's span id, the one its ``flow.step.*`` events carry."""
        if self._span is None:
            self._span = os.urandom(8).hex()
        return self._span

    @property
    def idempotency_key(self) -> str:
        """``<execution id>:<step path>:<attempt>``: hand it to side-effecting calls so that a step
        resumed after a crash (same attempt) is recognised by the system it calls."""
        return f"{self._x.execution.id}:{self.path}:{self.attempt}"

    @property
    def state(self) -> _State:
        return _State(self)

    def emit(self, event: str, value: Any = None) -> None:
        """Start every ``when(event)`` chain with ``value`` (recorded with this step)."""
        k = len(self._emits)
        self._emits.append([event, jsonable(value)])
        self._x.fire(self._scope, event, value, self.path, k + 1, self._deferred)

    async def async_emit(self, event: str, value: Any = None) -> None:
        self.emit(event, value)

    def put_into_stream(self, item: Any) -> None:
        """Put an item into the runtime stream (``execution.stream()``; events of kind ``flow.stream``)."""
        data = jsonable(item)
        self._x.events.add("flow.stream", {"path": self.path, "item": data})
        if self._x.journal.history is not None:  # for processes that follow the execution
            self._x.journal.stream_item(self.path, data)

    async def async_put_into_stream(self, item: Any) -> None:
        self.put_into_stream(item)

    def set_result(self, value: Any) -> None:
        """Make ``value`` the flow's result (as ``.end()`` does)."""
        self._scope.result = value
        self._scope.has_result = True

    def resource(self, name: str) -> Any:
        """A live resource given to ``create_execution``/``load`` (never serialized).

        The resource named ``"workspace"`` follows the flow's topology: inside a sub-flow it is
        the sub-flow's own child (``workspace.child(<sub-flow path>)``), so each role sub-flow
        writes its evidence apart while the parent keeps the shared one. Any object with a
        ``child(name)`` method works (keel-workspace's ``Workspace`` does); TriggerFlow imports none.
        """
        try:
            value = self._x.resources[name]
        except KeyError:
            raise MissingResourceError(
                f"step {self.path} needs the resource {name!r}, which this execution was not given; "
                f"pass resources={{{name!r}: ...}} to create_execution() or load()"
            ) from None
        if name == WORKSPACE_RESOURCE and self._scope.prefix and callable(getattr(value, "child", None)):
            return value.child(scope_name(self._scope.prefix))
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
        """Wait for the signal ``name`` (an approval, an answer, any external event) and return
        its payload. The wait is durable: the process may exit; a resumed execution waits again
        (the code before the wait runs again, so keep it free of side effects or key them with
        ``idempotency_key``). On timeout: ``on_timeout="fail"`` raises :class:`WaitTimeout`,
        ``"continue"`` returns ``default``."""
        self._waits += 1
        return await self._x.waits.wait(self.path, self._waits, name, jsonable(payload), timeout, on_timeout, default)
