"""``Runtime``: one application's plugins, stack, event bus, drivers and executions.

    async with keel.Runtime.open() as runtime:     # discover plugins, read the stack
        model = runtime.model()                      # the stack's model driver
        store = runtime.store()                      # the stack's store

Driver instances are built once per runtime and closed when it closes. There is no global
runtime: pass it where it is needed.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskGroup

from keel.actions import ActionOutcome, ActionRegistry, call_action
from keel.budget_manager import Budgets
from keel.budgets import Budget, current_meter, requesting
from keel.calls import CallPolicies
from keel.containment import OWNER, ContainedExecution, GuardedTaskGroup, Owner
from keel.environments import EnvironmentManager
from keel.errors import DriverNotFoundError, KeelError, NotFoundError, StackError
from keel.events import EventBus, RuntimeEvent
from keel.execution import Execution, ExecutionRegistry, ExecutionStatus, Runnable, RunnableRegistry
from keel.plugins import PluginHost, env_list
from keel.policy import Approver, load_approver
from keel.refs import load_ref
from keel.stack import Stack, load_stack
from keel.store import Store
from keel.types import ActionCall, ActionContext, ActionSpec, Model, PolicyDecision

__all__ = ["Runtime", "discover_for"]

log = logging.getLogger("keel.runtime")

#: how long closing a runtime waits for observers to drain their events before cancelling them
OBSERVER_GRACE_SECONDS = 5.0

log = logging.getLogger("keel")


class Runtime:
    """Everything an application needs at run time, built from a plugin host and a stack."""

    def __init__(
        self,
        host: PluginHost | None = None,
        stack: Stack | None = None,
        *,
        buffer: int = 1024,
        approver: Approver | None = None,
        resources: Mapping[str, Any] | None = None,
        shutdown_grace: float = 10.0,
    ):
        self.host = host or PluginHost()
        self.stack = stack or Stack()
        if approver is None and self.stack.config.approver:  # code wins over the stack
            approver = load_approver(self.stack.config.approver, what="the stack's approver", error=StackError)
        #: who approves actions that policy says need approval: the one given here, else the stack's
        #: ``approver = "module:attribute"``; ``None`` = deny them (fail closed)
        self.approver = approver
        #: ``source(execution, kind)`` serves the clock, random and id draws of executions
        #: (``keel.draws``) instead of drawing them: a replay sets it; ``None`` = draw for real
        self.draw_source: Callable[[Any, str], Any] | None = None
        self.bus = EventBus(self.host.observers(self), buffer=buffer)
        self.runnables = RunnableRegistry()
        self.executions = ExecutionRegistry()
        #: live objects (clients, workspaces, agents) that executions adopted by this runtime may
        #: need; never serialized: a plugin adopting an execution hands them over
        self.resources: dict[str, Any] = dict(resources or {})
        #: on close, how long running executions may go on to reach a wait or their end before
        #: their work is cancelled (durable ones stay resumable); waiting ones are left at once
        self.shutdown_grace = shutdown_grace
        self._base_group: TaskGroup | None = None
        self._actions: ActionRegistry | None = None
        self._budgets: Budgets | None = None
        self._calls: CallPolicies | None = None
        self._environments: EnvironmentManager | None = None
        self._observer_scope: anyio.CancelScope | None = None
        self._models: dict[str, Model] = {}
        self._store: Store | None = None
        self._task_group: TaskGroup | None = None
        self._guarded: GuardedTaskGroup | None = None
        #: tasks of the runtime's task group that raised (each contained; see :meth:`start`)
        self.failed_tasks = 0
        #: what this process serves with this runtime (``"gateway"``, ``"worker"``...): the plugins
        #: that serve add their name; ``keel doctor`` reads it (a worker beside the gateway)
        self.serving: set[str] = set()

    @classmethod
    def from_stack(
        cls, path: str | Path | None = None, *, name: str | None = None, host: PluginHost | None = None
    ) -> Runtime:
        """Read the stack, discover the plugins it allows, and load its ``runnables``."""
        stack = load_stack(path, name=name)
        if host is None:
            host = discover_for(stack)
        runtime = cls(host, stack)
        for target in stack.config.runnables:
            runtime.runnables.add(_import_target(target))
        return runtime

    @classmethod
    @asynccontextmanager
    async def open(cls, path: str | Path | None = None, *, name: str | None = None) -> AsyncIterator[Runtime]:
        """``from_stack`` as an async context: started on entry, closed on exit."""
        async with cls.from_stack(path, name=name) as runtime:
            yield runtime

    # ---------------------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Runtime:
        # two task groups: the base one holds the observers, which must outlive the work (they
        # receive its last events); the work one (``task_group``) is cancelled first on close
        base = anyio.create_task_group()
        await base.__aenter__()
        self._base_group = base
        base.start_soon(self._run_observers)
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        self._guarded = GuardedTaskGroup(task_group, self._task_failed)
        try:
            await self.environments.run(task_group)
        except BaseException as err:
            await self.__aexit__(type(err), err, err.__traceback__)
            raise
        return self

    async def _run_observers(self) -> None:
        with anyio.CancelScope() as self._observer_scope:
            await self.bus.run_observers()

    async def __aexit__(self, *exc: Any) -> None:
        """Shut down in order: let running executions reach a wait or their end within
        ``shutdown_grace``, cancel what is left (durable executions stay resumable, their leases
        released), then stop environments, close the drivers (the store last of all the work),
        and drain the observers."""
        task_group = self._task_group
        base, self._base_group = self._base_group, None
        cancelled = isinstance(exc[1], anyio.get_cancelled_exc_class())
        try:
            if task_group is not None:
                with anyio.CancelScope(shield=True):
                    await self._settle_executions()
                task_group.cancel_scope.cancel()
                # pass on only a cancellation: any other error propagates from the caller's
                # block as itself, not wrapped in an exception group by our task group
                await task_group.__aexit__(*(exc if cancelled else (None, None, None)))
        finally:
            self._task_group, self._guarded = None, None
            try:
                if self._environments is not None:
                    await self._environments.stop_all()  # also cancels their supervisors
                await self.aclose()
            finally:
                self.bus.close()  # the observer dispatcher drains, then ends...
                if self._observer_scope is not None:  # ...unless an observer hangs: then it is cancelled
                    self._observer_scope.deadline = anyio.current_time() + OBSERVER_GRACE_SECONDS
                if base is not None:
                    await base.__aexit__(None, None, None)
                self.executions.clear()  # see ExecutionRegistry.clear: freed as their holders let go

    async def _settle_executions(self) -> None:
        """Wait up to ``shutdown_grace`` for running executions to reach a wait or their end, then
        log one line for each execution left in flight."""
        busy = (ExecutionStatus.RUNNING, ExecutionStatus.PENDING)
        with anyio.move_on_after(self.shutdown_grace):
            while any(_busy_here(e, busy) for e in self.executions.in_flight()):
                await anyio.sleep(0.02)
        for execution in self.executions.in_flight():
            if _busy_here(execution, busy):
                log.warning(
                    "shutdown: execution %s (%s, tenant %s) was still running after %gs: cancelled here; "
                    "a durable one resumes in the next process",
                    execution.id, execution.kind, execution.tenant, self.shutdown_grace,
                )  # fmt: skip
            else:
                log.info(
                    "shutdown: execution %s (%s, tenant %s) left %s; it stays in the store",
                    execution.id, execution.kind, execution.tenant, execution.status.value,
                )  # fmt: skip

    async def aclose(self) -> None:
        """Close every driver this runtime built."""
        with anyio.CancelScope(shield=True):
            for model in list(self._models.values()):
                await model.aclose()
            self._models.clear()
            if self._store is not None:
                store, self._store = self._store, None
                await store.aclose()

    @property
    def started(self) -> bool:
        """Whether the runtime is running (inside ``async with runtime``)."""
        return self._task_group is not None

    @property
    def task_group(self) -> GuardedTaskGroup:
        """The runtime's task group, for background work that must end with it.

        A task started here that raises is contained: it is logged and published as a
        ``runtime.task_failed`` event, the execution it was started for (inside :meth:`start`)
        becomes ``failed`` with the cause, and every other task goes on.
        """
        if self._task_group is None or self._guarded is None:
            raise KeelError("the runtime is not started: use 'async with runtime:' (or Runtime.open())")
        if self._task_group.cancel_scope.cancel_called:
            raise KeelError("the runtime has stopped: its task group was cancelled; restart the process")
        return self._guarded

    def health(self) -> tuple[bool, str]:
        """Whether this runtime can start work: ``(True, "ok")``, or ``(False, why not)``."""
        if self._task_group is None:
            return False, "the runtime is not started"
        if self._task_group.cancel_scope.cancel_called:
            return False, "the runtime has stopped: its task group was cancelled"
        return True, "ok"

    def _task_failed(self, error: BaseException, task: str, owner: Owner | None) -> None:
        self.failed_tasks += 1
        execution = owner.execution if owner is not None else None
        log.error("task %r failed and was contained: %s: %s", task, type(error).__name__, error, exc_info=error)
        if owner is not None:
            if execution is not None:
                execution.fail(error)
            elif owner.early is None:
                owner.early = error
        self.publish(
            RuntimeEvent(
                kind="runtime.task_failed",
                execution_id=execution.id if execution is not None else None,
                tenant=execution.tenant if execution is not None else "default",
                level="error",
                payload={"task": task, "error": type(error).__name__, "message": str(error)[:500]},
            )
        )

    async def start(
        self, runnable: Runnable | str, input: Any = None, *, tenant: str = "default", budget: Budget | None = None
    ) -> Execution:
        """Start a runnable (or the one registered under a name) and register its execution.

        :param budget: this execution's own limits, over the stack's (:class:`keel.Budget`; see
            :attr:`budgets`).

        What the kernel guarantees around a runnable, whoever wrote it: a task it starts in
        :attr:`task_group` that raises fails only this execution (status ``failed``, the cause in
        ``result()`` and in a last ``execution.failed`` event); the runtime and every other
        execution go on. An exception from ``runnable.start`` itself propagates to the caller.
        """
        if isinstance(runnable, str):
            runnable = self.runnables.get(runnable)
        owner = Owner()
        token = OWNER.set(owner)
        try:
            with requesting(budget):
                execution = await runnable.start(input, runtime=self, tenant=tenant)
        finally:
            OWNER.reset(token)
        contained = execution if isinstance(execution, ContainedExecution) else ContainedExecution(execution)
        owner.execution = contained
        if owner.early is not None:
            contained.fail(owner.early)
        self.executions.add(contained)
        return contained

    # ------------------------------------------------------------------------------ drivers

    def model(self, alias: str | None = None) -> Model:
        """The model driver for an alias (default: the stack's ``model`` slot), built once."""
        key = alias or ""
        if key not in self._models:
            name, config, _source = self.stack.model_config(alias)
            models = self.host.models()
            if alias is None:
                registered, _choice = self.stack.resolve("model", self.host)
            elif config.provider in models:
                registered = models[config.provider]
            else:
                raise DriverNotFoundError("model", config.provider, models, f"model alias {name!r}")
            self._models[key] = registered.spec.factory(config)
        return self._models[key]

    def use_model(self, model: Model, alias: str | None = None) -> Model:
        """Put a ready model instance in place of the stack's (tests, demos)."""
        self._models[alias or ""] = model
        return model

    def use_store(self, store: Store) -> Store:
        """Put a ready store in place of the stack's (tests, demos); the runtime closes it."""
        self._store = store
        return store

    def store(self) -> Store:
        """The stack's store, built once."""
        if self._store is None:
            registered, choice = self.stack.resolve("store", self.host)
            self._store = registered.spec.factory(dict(choice.options))
        return self._store

    # ------------------------------------------------------------------------------- events

    def publish(self, event: RuntimeEvent) -> RuntimeEvent:
        self.bus.publish(event)
        return event

    def check_action(self, call: ActionCall, context: ActionContext) -> PolicyDecision:
        return self.host.check_action(call, context)

    @property
    def environments(self) -> EnvironmentManager:
        """The stack's environments (``[environments.<name>]``), owned by this runtime."""
        if self._environments is None:
            self._environments = EnvironmentManager(
                self.host.environments(), self.stack.config.environments, emit=self._emit_plain, actions=self.actions
            )
        return self._environments

    def _emit_plain(self, kind: str, payload: dict[str, Any]) -> None:
        self.publish(RuntimeEvent(kind=kind, payload=payload))

    @property
    def budgets(self) -> Budgets:
        """Tokens, cost, model requests, action calls and wall time each execution, runnable and
        tenant may use: the stack's ``[budgets]`` plus what code declares (docs/budgets.md)."""
        if self._budgets is None:
            self._budgets = Budgets(self, self.stack.config.budgets, source=self.stack.sources.get("budgets", "code"))
        return self._budgets

    @property
    def calls(self) -> CallPolicies:
        """Timeouts and retries per runnable and per action: the stack's ``[calls]`` plus code's."""
        if self._calls is None:
            self._calls = CallPolicies(self.stack.config.calls, source=self.stack.sources.get("calls", "code"))
        return self._calls

    @property
    def actions(self) -> ActionRegistry:
        """Every action: the plugins' (``keel_actions``), the stack's ``actions = [...]`` and the ones the
        application adds in code."""
        if self._actions is None:
            registry = ActionRegistry(self.host.actions())
            for target in self.stack.config.actions:  # read without starting anything: doctor sees them
                spec = load_ref(target, what="actions entry", error=StackError)
                if not isinstance(spec, ActionSpec):
                    raise StackError(
                        f"actions entry {target!r} is a {type(spec).__name__}, not an action: "
                        "name a function decorated with @keel.action (or a keel.ActionSpec)"
                    )
                registry.add(spec, source=f"the stack's actions ({target})")
            self._actions = registry
        return self._actions

    async def call_action(
        self,
        name: str,
        arguments: dict[str, Any],
        *,
        context: ActionContext | None = None,
        approver: Approver | None = None,
        approval_timeout: float | None = 300.0,
        visible: Iterable[str] | None = None,
    ) -> ActionOutcome:
        """Call an action through policy, approval and audit (events on the runtime bus).

        :param visible: the caller's own action selection (names or ``tag:<t>``), as an agent's.
        """
        context = context or ActionContext()
        approver = approver or self.approver
        await self.ensure_actions([name])

        def emit(kind: str, payload: dict[str, Any]) -> None:
            self.publish(
                RuntimeEvent(kind=kind, execution_id=context.execution_id, tenant=context.tenant, payload=payload)
            )

        return await call_action(
            self.actions, name, arguments, context=context, check=self.check_action, approver=approver,
            approval_timeout=approval_timeout, emit=emit, visible=visible, meter=current_meter(),
            policy=self.calls.for_action(name),
        )  # fmt: skip

    async def ensure_actions(self, names: Iterable[str]) -> None:
        """Start the lazy environments that declare (``actions = {...}`` in their stack table) any
        of these actions not registered yet, so their first use starts them. An environment that
        cannot start raises its :class:`keel.KeelError`, naming it and why."""
        missing = [n for n in names if n not in self.actions]
        if not missing:
            return
        declared = self.environments.declared_actions()
        for environment in sorted({declared[n][1] for n in missing if n in declared}):
            await self.environments.ensure(environment)

    def add(self, runnable: Runnable) -> Runnable:
        """Register a runnable (an agent, a flow) so that it can be started by name."""
        return self.runnables.add(runnable)

    # --------------------------------------------------------------------------- executions

    async def find_execution(self, execution_id: str, tenant: str = "default") -> Execution:
        """The execution with this id for this tenant: a live one, or one that a plugin adopts
        from the store (``keel_find_execution``), after a restart or from another process. A
        held execution that is not running here (a copy of one another process runs, or one
        released at a wait) is refreshed from the store first when it offers ``refresh()``.

        :raises NotFoundError: when no execution has this id, or it belongs to another tenant.
        """
        try:
            held = self.executions.get(execution_id, tenant)
        except NotFoundError:
            pass
        else:
            if not held.status.finished and not getattr(held, "running_here", True):
                # a copy of what the store says: another process may have moved it on since
                refresh = getattr(held, "refresh", None)
                if refresh is not None:
                    await refresh()
            return held
        hook = self.host.pm.hook.keel_find_execution
        for impl in reversed(hook.get_hookimpls()):  # newest first, as pluggy calls them
            found = _call_impl(impl, runtime=self, execution_id=execution_id, tenant=tenant)
            if inspect.isawaitable(found):
                found = await found
            if found is None:
                continue
            if not isinstance(found, Execution) or found.id != execution_id or found.tenant != tenant:
                raise KeelError(
                    f"plugin {impl.plugin_name!r} answered keel_find_execution({execution_id!r}, {tenant!r}) with "
                    f"{found!r}: it must return an Execution with that id and tenant, or None"
                )
            try:  # a concurrent caller may have adopted it while we awaited: one object per execution
                return self.executions.get(execution_id, tenant)
            except NotFoundError:
                return self.executions.add(found)
        raise NotFoundError(f"no execution {execution_id!r}")

    async def adopt_executions(self) -> None:
        """Let every plugin take over the executions whose owning process is gone
        (``keel_adopt_executions``): what a service calls once it has started."""
        self.task_group  # noqa: B018 -- raises when the runtime is not started
        for impl in reversed(self.host.pm.hook.keel_adopt_executions.get_hookimpls()):
            result = _call_impl(impl, runtime=self)
            if inspect.isawaitable(result):
                await result


def _busy_here(execution: Execution, busy: tuple[ExecutionStatus, ...]) -> bool:
    """Running in this process: an execution that only mirrors one another process runs says so
    with ``running_here = False`` (optional, see :class:`keel.Execution`)."""
    return execution.status in busy and bool(getattr(execution, "running_here", True))


def _call_impl(impl: Any, **kwargs: Any) -> Any:
    """Call one hook implementation with the arguments it declares (pluggy lets it take fewer)."""
    return impl.function(*(kwargs[name] for name in impl.argnames))


def discover_for(stack: Stack, *, tolerant: bool = False) -> PluginHost:
    """Discover installed plugins as the environment switches and the stack's ``plugins`` and
    ``disable_plugins`` allow (the environment's ``KEEL_LOAD_PLUGINS`` wins over the stack's list).
    A name no installed plugin has is an error naming where it was set (``tolerant``: see
    :meth:`PluginHost.discover`)."""
    load, load_source = env_list("KEEL_LOAD_PLUGINS"), "KEEL_LOAD_PLUGINS"
    if load is None:
        load, load_source = stack.config.plugins, f"plugins = [...] in {stack.sources.get('plugins', 'the stack')}"
    disable = dict.fromkeys(env_list("KEEL_DISABLE_PLUGINS") or [], "KEEL_DISABLE_PLUGINS")
    where = stack.sources.get("disable_plugins", "the stack")
    disable.update(dict.fromkeys(stack.config.disable_plugins, f"disable_plugins = [...] in {where}"))
    return PluginHost.discover(load=load, disable=disable, load_source=load_source, tolerant=tolerant)


def _import_target(target: str) -> Any:
    return load_ref(target, what="runnables entry", error=StackError)
