"""The kernel's whole extension surface: every hook a plugin may implement.

Hooks are synchronous (pluggy has no async). Registration hooks return descriptors; the objects the
descriptors build have ``async`` methods. The kernel, not the plugins, decides duplicates, ordering
and conflicts. ``docs/hooks.md`` is generated from this module; a test fails when they drift.

A plugin is a module with functions marked ``@keel.hookimpl``, named by an entry point in the group
``keel``::

    [project.entry-points.keel]
    my-plugin = "my_plugin.plugin"
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable, Mapping
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from keel.budgets import ModelPrice
    from keel.cli import KeelGroup
    from keel.events import RuntimeEvent
    from keel.execution import Execution
    from keel.runtime import Runtime
    from keel.types import (
        ActionCall,
        ActionContext,
        ActionSpec,
        ChannelSpec,
        DoctorCheck,
        EnvironmentSpec,
        EvaluatorSpec,
        ModelSpec,
        PolicyDecision,
        SlotSpec,
        StoreSpec,
    )

__all__ = ["hookimpl", "hookspec"]

hookspec = pluggy.HookspecMarker("keel")
hookimpl = pluggy.HookimplMarker("keel")


# ======================================================================= registration: drivers


@hookspec
def keel_models() -> Iterable[ModelSpec]:
    """Register model providers.

    A stack picks one by name (``model = "openai"``, or an alias in ``[models.<alias>]`` whose
    ``provider`` is the name). The spec's ``factory`` receives the alias's :class:`keel.ModelConfig`
    and returns a :class:`keel.Model`; import the provider's SDK inside the factory, not at module
    level, so that discovery stays fast. The stream order, how tool results come back, and options
    versus alias keys: docs/writing-a-model.md.

    :returns: model specs; two plugins returning the same name is a :class:`keel.PluginConflictError`.

    Example::

        import keel


        class EchoModel:
            name = "echo"
            capabilities = keel.ModelCapabilities(streaming=True)

            async def stream(self, request):
                yield keel.TextDelta(text=request.messages[-1].content)
                yield keel.ModelDone()  # exactly one, always last

            async def aclose(self):
                pass


        @keel.hookimpl
        def keel_models():
            yield keel.ModelSpec(name="echo", factory=lambda config: EchoModel())
    """
    raise NotImplementedError


@hookspec
def keel_stores() -> Iterable[StoreSpec]:
    """Register store backends (key-value with versions, blobs by hash, append-only logs).

    A stack picks one with ``store = "<name>"`` (or a ``[store]`` table with ``driver`` and
    options). The spec's ``factory`` receives the options and returns a :class:`keel.store.Store`.
    Every backend must pass :class:`keel.testing.conformance.StoreConformance`.

    :returns: store specs.

    Example::

        import keel
        from keel.store import MemoryStore


        @keel.hookimpl
        def keel_stores():
            yield keel.StoreSpec(name="scratch", durable=False, factory=lambda options: MemoryStore())
    """
    raise NotImplementedError


@hookspec
def keel_stack_slots() -> Iterable[SlotSpec]:
    """Declare a stack slot your plugin owns (TriggerFlow's ``runner``), with its check.

    The kernel resolves ``model`` and ``store`` itself; any other slot belongs to the plugin that
    uses it, which declares it here so that ``keel stack`` checks the stack's
    choice without starting anything. ``check(choice, host)`` receives the
    :class:`keel.stack.SlotChoice` (``name``, ``options``, ``source``) and the plugin host, returns
    the plugin that provides the chosen driver, and raises a :class:`keel.DriverNotFoundError` (or
    a :class:`keel.StackError` for bad options) when the choice cannot work. The stack keys a
    plugin may own are reserved in :class:`keel.StackConfig` (``runner``).

    :returns: slot specs; a slot another plugin declares too is a conflict naming both.

    Example::

        import keel


        def check_runner(choice, host):
            if choice.name != "local":
                raise keel.DriverNotFoundError("runner", choice.name, ["local"], choice.source)
            return "acme-flows"


        @keel.hookimpl
        def keel_stack_slots():
            yield keel.SlotSpec(name="runner", description="what runs flows", check=check_runner)
    """
    raise NotImplementedError


@hookspec
def keel_environments() -> Iterable[EnvironmentSpec]:
    """Register kinds of hosted environment: MCP servers, script sandboxes, browsers.

    An environment has a lifecycle (``start``, ``stop``, ``health``) that the kernel's manager
    owns, and declared :class:`keel.Permissions`.

    :returns: environment specs.

    Example::

        import shutil
        import tempfile
        from pathlib import Path

        import keel


        class ScratchFolder:
            # a temporary folder that exists while the environment runs
            def __init__(self, options):
                self.name, self.path, self.status = "scratch", None, "stopped"

            async def start(self):
                self.path, self.status = Path(tempfile.mkdtemp()), "ready"

            async def stop(self):
                shutil.rmtree(self.path, ignore_errors=True)
                self.status = "stopped"

            async def health(self):
                return keel.Health(ok=self.path is not None and self.path.is_dir())


        @keel.hookimpl
        def keel_environments():
            yield keel.EnvironmentSpec(name="scratch", kind="folder", factory=ScratchFolder)
    """
    raise NotImplementedError


@hookspec
def keel_channels() -> Iterable[ChannelSpec]:
    """Register channels: where product events go (SSE, WebSocket, webhook, console).

    A channel receives :class:`keel.ProductEvent` objects only, never RuntimeEvent payloads.
    A failing channel never fails the task that produced the event.

    :returns: channel specs.

    Example::

        import keel


        class PrintChannel:
            name = "print"

            async def send(self, event):
                print(f"[{event.type}] {event.task_id}: {event.message}")

            async def aclose(self):
                pass


        @keel.hookimpl
        def keel_channels():
            yield keel.ChannelSpec(name="print", factory=lambda options: PrintChannel())
    """
    raise NotImplementedError


@hookspec
def keel_evaluators() -> Iterable[EvaluatorSpec]:
    """Register evaluators: judges of an output (schema, rules, exact match, a model judge).

    ``evaluate(sample)`` returns (or awaits to) a :class:`keel.EvalResult` with a score in [0, 1].
    The :class:`keel.EvalSample` carries the case (``input``, ``expected``, ``metadata``), the
    run (``output``, ``error``, ``duration_ms``, its RuntimeEvents as ``events``), the arguments the
    case gives this evaluator (``arguments``), the runnable's ``output_schema``, and the ``runtime``
    (``None`` when a finished run is re-scored offline). A spec with ``needs_model=True`` (a judge)
    keeps its earlier result in an offline re-score.

    :returns: evaluator specs.

    Example::

        import keel


        def exact_match(sample):
            ok = sample.output == sample.expected
            return keel.EvalResult(evaluator="exact", passed=ok, score=float(ok))


        @keel.hookimpl
        def keel_evaluators():
            yield keel.EvaluatorSpec(name="exact", evaluate=exact_match)
    """
    raise NotImplementedError


@hookspec
def keel_actions() -> Iterable[ActionSpec]:
    """Register actions (tools) agents may call.

    Build specs with :func:`keel.action`, which derives the JSON schema from the function's typed
    signature. Each action has a risk level (``read``, ``write``, ``irreversible``) that policy
    uses, and a visible scope (which agents may see it).

    :returns: action specs.

    Example::

        import keel


        @keel.action(risk="read")
        def word_count(text: str) -> int:
            "Count the words in a text."
            return len(text.split())


        @keel.hookimpl
        def keel_actions():
            yield word_count
    """
    raise NotImplementedError


@hookspec
def keel_model_prices() -> Mapping[str, ModelPrice | Mapping[str, float]]:
    """Register what models cost, for cost budgets (docs/budgets.md).

    Names are matched exactly, then by the longest known prefix (``gpt-4o`` prices
    ``gpt-4o-2024-08-06``). A stack's ``[budgets.prices."<model>"]`` and ``runtime.budgets.price()``
    win over every plugin; two plugins pricing one model differently is a :class:`keel.BudgetError`
    naming both, when a price is needed. A model nobody prices cannot run under a cost limit.

    :returns: model name -> :class:`keel.ModelPrice` (or ``{"input": ..., "output": ...}``), US
        dollars per million tokens.

    Example::

        import keel


        @keel.hookimpl
        def keel_model_prices():
            return {"acme-large": {"input": 1.0, "output": 4.0}}
    """
    raise NotImplementedError


# ============================================================================ runtime: observers


@hookspec
def keel_on_runtime_event(event: RuntimeEvent, runtime: Runtime) -> None:
    """Observe every RuntimeEvent (DevTools, OpenTelemetry, logs).

    Called from the event bus's dispatcher, never on an execution's own path: a slow observer
    fills its buffer and events are dropped (and counted), an observer that raises is logged and
    skipped. Neither ever stalls or fails an execution. May return an awaitable, which is awaited.

    An observer that only hands the event on (appends it to a bounded queue that a thread of its
    own drains) may be marked ``@keel.inline_observer`` (under ``@keel.hookimpl``): the bus then
    calls it from ``publish``, in order, without the dispatcher's per-event hop. It must not
    block or await; one that raises or returns anything but ``None`` is disabled for that
    runtime, logged and counted (``runtime.bus.disabled``, ``runtime.bus.dropped``). With
    ``@keel.inline_observer(bind=f)``, ``f(runtime)`` runs once per runtime and returns the callable
    the bus calls with each of its events (``None``: nothing of that runtime is observed), so the
    per-event cost is that callable alone.

    :param event: the event; treat it as read-only.
    :param runtime: the runtime whose bus carries the event; take only what you need (most often
        ``runtime.stack.settings("<plugin>")``). Leave the parameter out if you need nothing.

    Example::

        import keel


        @keel.hookimpl
        def keel_on_runtime_event(event, runtime):
            if event.kind == "execution.failed" and runtime.stack.settings("alerts").get("print", True):
                print(event.execution_id, event.payload)
    """


# =============================================================================== runtime: policy


@hookspec
def keel_check_action(call: ActionCall, context: ActionContext) -> PolicyDecision | None:
    """Decide whether an action call may run.

    Every implementation is asked; the kernel combines the answers: any ``deny`` wins, then any
    ``approve`` (approval required), then ``allow``. When no plugin answers, the kernel's default
    applies: ``irreversible`` actions need approval, and with no approver available that is a
    denial (fail closed).

    :param call: the action, its arguments and risk level.
    :param context: the calling agent, execution id, tenant and whether an approver is available.
    :returns: a decision, or ``None`` to abstain.

    Example::

        import keel


        @keel.hookimpl
        def keel_check_action(call, context):
            if call.action == "drop_table":
                return keel.PolicyDecision(verdict="deny", reason="never", policy="dba")
    """


# ========================================================================= executions: adoption


@hookspec
def keel_find_execution(
    runtime: Runtime, execution_id: str, tenant: str
) -> Execution | Awaitable[Execution | None] | None:
    """Find an execution that no live object holds, in the runtime's store, and adopt it.

    Called by :meth:`keel.Runtime.find_execution` when ``runtime.executions`` does not hold the
    id: after a restart, or when another process started the execution. The plugin that owns that
    kind of execution (TriggerFlow, a scheduler, a Temporal runner) looks the id up for ``tenant``
    in ``runtime.store()`` (or its own backend) and returns an object implementing
    :class:`keel.Execution`, or ``None`` when the id is not one of its executions. An execution of
    another tenant is ``None``, exactly like a missing one. Adopting must be cheap: a waiting
    execution costs nothing until it is signalled, cancelled or read; one whose owner is gone
    continues once adopted. Live resources the execution needs come from ``runtime.resources``.
    Implementations are asked newest-registered first; the first answer wins. May return an
    awaitable, which is awaited.

    :param runtime: the runtime asking; its store, runnables and ``resources``.
    :param execution_id: the id a caller holds (from a URL, a CLI argument, a schedule).
    :param tenant: the caller's tenant.
    :returns: the execution (its ``id`` and ``tenant`` equal to the arguments), or ``None``.

    Example::

        import keel


        class StoredJob:
            # a job read back from the store (implements keel.Execution)

            kind = "job"

            def __init__(self, execution_id, tenant, row):
                self.id, self.tenant, self.row = execution_id, tenant, row

            @property
            def status(self):
                return keel.ExecutionStatus(self.row["status"])

            async def events(self, since=0):
                return
                yield

            async def result(self):
                return self.row.get("result")

            async def signal(self, name, payload=None, *, request_id=None):
                raise keel.KeelError(f"job {self.id} waits for no signal")

            async def cancel(self, reason="cancelled"):
                pass


        @keel.hookimpl
        async def keel_find_execution(runtime, execution_id, tenant):
            row = await runtime.store().get(tenant, "jobs", execution_id)
            return None if row is None else StoredJob(execution_id, tenant, row.value)
    """


@hookspec
def keel_adopt_executions(runtime: Runtime) -> Awaitable[None] | None:
    """Take over, when a service starts, the executions whose owning process is gone.

    Called by :meth:`keel.Runtime.adopt_executions` (``keel serve`` does, on start-up). Resume
    the executions that were running when their owner died (their lease expired), in the
    runtime's task group, and arm timers of waiting ones; leave waiting executions in the store
    otherwise (they are adopted on demand through :func:`keel_find_execution`). Must return
    quickly whatever the number of stored executions: no per-execution work for waiting ones.
    May return an awaitable, which is awaited.

    :param runtime: a started runtime (``async with runtime``).

    Example::

        import keel


        async def finish(runtime, key):
            await runtime.store().put("default", "jobs", key, {"status": "completed"})


        @keel.hookimpl
        async def keel_adopt_executions(runtime):
            store = runtime.store()
            for key in await store.list_keys("default", "jobs"):
                row = await store.get("default", "jobs", key)
                if row is not None and row.value["status"] == "running":  # its process died
                    runtime.task_group.start_soon(finish, runtime, key)
    """


# ======================================================================= pre-launch: keel doctor


@hookspec
def keel_doctor_checks() -> Iterable[DoctorCheck]:
    """Contribute checks to ``keel doctor``, the pre-launch checklist run against a stack.

    Each :class:`keel.DoctorCheck` names a checklist row (``keel.doctor.ROWS``: ``output-contract``,
    ``state``, ``recovery``... or a row of the plugin's own) and a ``check(context)`` function. The
    context is a read-only :class:`keel.doctor.DoctorContext`: ``stack``, ``host``, ``runnables``,
    ``actions`` (with their risk and source), ``environments`` (as declared), ``store`` (the
    resolved spec) and ``approver``. A check returns a :class:`keel.DoctorResult` (``pass``,
    ``warn`` or ``fail``, the evidence, a one-line fix) and starts nothing: no environment, model
    or store call. A row's verdict is the worst of its checks; a check that raises is a ``fail``
    naming the plugin. Import what the check needs inside it, so that discovery stays cheap.

    :returns: checks; a check name another plugin uses too is reported as a ``fail`` naming both.

    Example::

        import keel


        def tables_exist(context):
            options = dict(context.stack.settings("acme-store"))
            if options.get("migrated"):
                return keel.DoctorResult(status="pass", evidence=["settings.acme-store.migrated = true"])
            return keel.DoctorResult(
                status="fail",
                evidence=["settings.acme-store.migrated is not set"],
                fix="run `acme-store migrate`, then set migrated = true in [settings.acme-store]",
            )


        @keel.hookimpl
        def keel_doctor_checks():
            yield keel.DoctorCheck(name="acme-store.migrated", row="state", title="tables migrated", check=tables_exist)
    """
    raise NotImplementedError


# ================================================================================== command line


@hookspec
def keel_commands(cli: KeelGroup) -> None:
    """Add sub-commands to the ``keel`` command line.

    :param cli: the top-level click group (a :class:`keel.cli.KeelGroup`). Add a command by
        reference with ``cli.add_lazy_command(name, "package.module:command", help="...")``: it is
        imported only when it runs, so every other command starts without it (the entry module
        stays cheap). ``cli.add_command(...)`` and ``@cli.command()`` work too, for a small command
        defined in the entry module. Two plugins adding one name is a conflict (``keel plugins``
        lists it, ``KEEL_STRICT_PLUGINS=1`` makes it an error, the command refuses to run) unless
        each adds a distinct ``kind=``: then ``keel NAME --runner KIND`` picks one, and the one added
        with ``default=True`` runs without ``--runner``. Inside a command, ``click.get_current_context().find_root().obj``
        is a :class:`keel.cli.CliState`: ``.host``, ``.stack`` and ``.runtime()``.

    Example::

        import click
        import keel


        @keel.hookimpl
        def keel_commands(cli):
            # imported only when `keel report` runs
            cli.add_lazy_command("report", "keel_report.cli:report", help="Print the weekly report.")

            @cli.command()
            def hello():
                "Say hello."
                click.echo("hello")
    """


# ================================================================================ plugins' hooks


@hookspec(historic=True)
def keel_addhooks(pluginmanager: pluggy.PluginManager) -> None:
    """Add a plugin's own hook specifications, for other plugins to implement.

    Called once for each plugin as it registers (a historic hook, as pytest's ``pytest_addhooks``).
    Implementations of the added hooks may come from plugins registered before or after yours: the
    kernel checks every implementation against the specifications only once all plugins are
    registered, so nobody needs ``optionalhook=True``. An implementation that matches no
    specification then fails its plugin's load with an error naming the hook.

    :param pluginmanager: the host's :class:`pluggy.PluginManager`; call ``add_hookspecs(module)``.

    Example::

        import keel
        import pluggy


        class hookspecs:  # in a real plugin: a module, my_plugin/hookspecs.py
            @pluggy.HookspecMarker("keel")
            def my_plugin_formats(self): ...  # returns the file formats a plugin can export


        @keel.hookimpl
        def keel_addhooks(pluginmanager):
            pluginmanager.add_hookspecs(hookspecs)
    """
