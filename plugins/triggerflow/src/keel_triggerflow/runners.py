"""Runners: the interface between a flow definition and what executes it, and the ``local`` runner."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, field_validator

from keel import DriverNotFoundError, Execution, PluginConflictError, PluginHost, Runtime, parse_options
from keel.stack import SlotChoice
from keel_triggerflow import hookspecs
from keel_triggerflow._clock import clock_of, load_clock
from keel_triggerflow._history import (
    NAMESPACE,
    due_waits,
    ensure_index,
    lease_is_live,
    parse_age,
    purge_executions,
    rows_by_status,
)
from keel_triggerflow.flow import TriggerFlow
from keel_triggerflow.types import FlowError, LeaseError

__all__ = ["LocalRunner", "LocalRunnerOptions", "Runner", "RunnerSpec", "check_runner", "get_runner", "runner_specs"]


@runtime_checkable
class Runner(Protocol):
    """What runs flows. Every method takes the definition itself (not a copy), so any runner can
    run any flow; executions it returns implement :class:`keel.Execution`."""

    name: str

    async def start(
        self, flow: TriggerFlow, input: Any = None, *, tenant: str = "default", **options: Any
    ) -> Execution:
        """Start a new execution and return it at once (it runs in the background)."""
        ...

    async def resume(
        self, flow: TriggerFlow, execution_id: str, *, tenant: str = "default", **options: Any
    ) -> Execution:
        """Continue an execution from its history (completed steps do not run again)."""
        ...

    async def recover(
        self,
        flows: Iterable[TriggerFlow],
        *,
        tenant: str = "default",
        resources: Mapping[str, Any] | None = None,
    ) -> list[Execution]:
        """Resume every running execution of these flows whose owner is gone (lease expired);
        waiting ones stay in the store until a signal, a timer or a reader adopts them."""
        ...


class RunnerSpec(BaseModel):
    """A runner a plugin registers: ``factory(runtime, options) -> Runner``."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    name: str
    description: str = ""
    factory: Callable[[Runtime, dict[str, Any]], Any] = Field(description="builds the runner")


class LocalRunnerOptions(BaseModel):
    """The options of ``runner = "local"`` (the ``[runner]`` table of a stack)."""

    model_config = ConfigDict(extra="forbid")

    retention: float | None = Field(
        default=None,
        description="delete finished executions' histories this long after they finished "
        "(seconds, or '12h', '30d'); applied by recover() and `keel flow purge`",
    )

    clock: str | None = Field(
        default=None,
        description="'module:attr' of a function returning seconds since the epoch (default time.time): the "
        "clock that flows' wait deadlines and timers are measured against, for a test or a simulation that "
        "lets time pass without waiting for it",
    )

    @field_validator("clock")
    @classmethod
    def _clock(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                load_clock(value)
            except FlowError as err:
                raise ValueError(str(err)) from None  # reported by parse_options with where it was set
        return value

    @field_validator("retention", mode="before")
    @classmethod
    def _age(cls, value: Any) -> float | None:
        try:
            return None if value is None else parse_age(value)
        except FlowError as err:
            raise ValueError(str(err)) from None  # reported by parse_options with where it was set


class LocalRunner:
    """In-process runner on anyio: executions run in the runtime's task group."""

    name = "local"

    def __init__(self, runtime: Runtime, options: Mapping[str, Any] | None = None):
        self.runtime = runtime
        self.options = parse_options(LocalRunnerOptions, dict(options or {}), where="runner 'local'")

    async def purge(self, older_than: float | str | None = None, *, tenant: str = "default") -> int:
        """Delete finished executions older than ``older_than`` (default: the configured ``retention``);
        returns how many. Without either, an error says how to configure one."""
        age = self.options.retention if older_than is None else parse_age(older_than)
        if age is None:
            raise FlowError(
                "no retention configured: pass older_than (e.g. '30d'), or set it in the stack: "
                '[runner] driver = "local", retention = "30d"'
            )
        return await purge_executions(self.runtime.store(), older_than=age, tenant=tenant)

    async def start(
        self, flow: TriggerFlow, input: Any = None, *, tenant: str = "default", **options: Any
    ) -> Execution:
        execution = flow.create_execution(self.runtime, tenant=tenant, **options)
        await execution.start(input)
        return execution

    async def resume(
        self, flow: TriggerFlow, execution_id: str, *, tenant: str = "default", **options: Any
    ) -> Execution:
        execution = await flow.load(execution_id, self.runtime, tenant=tenant, **options)
        await execution.resume()
        return execution

    async def recover(
        self,
        flows: Iterable[TriggerFlow],
        *,
        tenant: str = "default",
        resources: Mapping[str, Any] | None = None,
    ) -> list[Execution]:
        """Resume every running execution of these flows whose owner is gone (lease expired), and
        the waiting ones whose timeout has passed; other waiting ones cost nothing until a signal,
        a timer or a reader adopts them (``runtime.find_execution``). First, with a configured ``retention``, delete the finished
        executions older than it. An execution that cannot resume (a resource missing from
        ``resources``, say) fails alone, its error recorded; the others go on.

        :param resources: live resources for the resumed executions (default ``runtime.resources``).
        """
        if self.options.retention is not None:
            await self.purge(tenant=tenant)
        by_name = {f.name: f for f in flows}
        given = dict(self.runtime.resources if resources is None else resources)
        store = self.runtime.store()
        resumed: list[Execution] = []
        now = clock_of(self.runtime)()
        await ensure_index(store, tenant)
        due = [  # waiting ones whose timeout passed while no process ran them: their timer fires now
            item.value
            for deadline, execution_id in await due_waits(store, tenant)
            if deadline <= now and (item := await store.get(tenant, NAMESPACE, f"exec:{execution_id}")) is not None
        ]
        for row in [*await rows_by_status(store, tenant, "running"), *due]:
            flow = by_name.get(row.get("flow", ""))
            if flow is None or await lease_is_live(store, tenant, row["id"]):
                continue  # not one of these flows, or a live owner has it
            try:
                execution = await flow.load(row["id"], self.runtime, tenant=tenant, resources=given)
                execution._adopted = True  # a missing resource fails this one, recorded, not the recovery
                await execution.resume()
            except LeaseError:
                continue  # another recoverer was faster
            resumed.append(execution)
        return resumed


def _local(runtime: Runtime, options: dict[str, Any]) -> LocalRunner:
    return LocalRunner(runtime, options)


def add_hookspecs(runtime: Runtime | PluginHost) -> None:
    """Add TriggerFlow's hookspecs to the runtime's plugin manager when the plugin that adds them
    (``keel_addhooks`` in ``keel_triggerflow.plugin``) is not registered: a host built by hand."""
    pm = (runtime.host if isinstance(runtime, Runtime) else runtime).pm
    caller = getattr(pm.hook, "keel_triggerflow_runners", None)
    if caller is None or caller.spec is None:
        pm.add_hookspecs(hookspecs)


def runner_specs(runtime: Runtime | PluginHost) -> dict[str, tuple[str, RunnerSpec]]:
    """Every registered runner by name, with the plugin that registered it (``local`` built in)."""
    add_hookspecs(runtime)
    found: dict[str, tuple[str, RunnerSpec]] = {}
    pm = (runtime.host if isinstance(runtime, Runtime) else runtime).pm
    for impl in pm.hook.keel_triggerflow_runners.get_hookimpls():
        specs: Iterable[RunnerSpec] = impl.function() or ()  # type: ignore[assignment]
        for spec in specs:
            if spec.name in found and found[spec.name][0] != impl.plugin_name:
                raise PluginConflictError("runner", spec.name, found[spec.name][0], impl.plugin_name)
            found[spec.name] = (impl.plugin_name, spec)
    found.setdefault("local", ("keel-triggerflow", RunnerSpec(name="local", factory=_local)))
    return found


def check_runner(choice: SlotChoice, host: PluginHost) -> str:
    """The ``runner`` slot's check (``keel stack``): the chosen runner is registered, and the local
    runner's options are valid; returns the plugin that registered it. Starts nothing."""
    specs = runner_specs(host)
    if choice.name not in specs:
        raise DriverNotFoundError("runner", choice.name, specs, choice.source)
    if choice.name == "local":
        parse_options(LocalRunnerOptions, dict(choice.options), where=f"runner 'local' ({choice.source})")
    return specs[choice.name][0]


def get_runner(runtime: Runtime, name: str | None = None) -> Runner:
    """The runner the stack's ``runner`` slot names (default ``local``)."""
    choice = runtime.stack.choice("runner")
    wanted = name or choice.name
    specs = runner_specs(runtime)
    if wanted not in specs:
        raise DriverNotFoundError("runner", wanted, specs, "" if name else choice.source)
    runner: Runner = specs[wanted][1].factory(runtime, dict(choice.options))
    return runner
