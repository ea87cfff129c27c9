"""``runner = "temporal"``: one TriggerFlow execution is one Temporal workflow, each chunk an activity.

The runner speaks to TriggerFlow only through what a flow object offers every runner: its data
form (``flow.definition``, the documented ``FlowDefinition`` format, set for flows built with
``Registry.load``) and the registry that names its chunks (``flow.registry.chunks``). The frozen
definition is the workflow's input; the worker in this process runs the chunks, with the same
``ctx`` surface a chunk sees on the local runner (``value``, ``input``, ``execution_id``,
``tenant``, ``runtime``, ``attempt``, ``idempotency_key``). What does not run here yet is refused
before anything starts, naming the node and docs/scale-out.md.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

import anyio
from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import to_jsonable_python

from keel import (
    ConflictError,
    EventLog,
    ExecutionStatus,
    KeelError,
    Runtime,
    RuntimeEvent,
    new_id,
    parse_options,
)

__all__ = [
    "ChunkContext",
    "TemporalExecution",
    "TemporalExecutionFailed",
    "TemporalRunner",
    "TemporalRunnerError",
    "TemporalRunnerOptions",
    "TemporalUnavailableError",
]

_DOCS = "docs/scale-out.md"


class TemporalRunnerError(KeelError):
    """A flow, an option or a call the temporal runner cannot run (yet): the message names it."""

    code = "temporal.runner_failed"


class TemporalUnavailableError(TemporalRunnerError):
    """No Temporal server answered at the configured address."""

    code = "temporal.unavailable"


class TemporalExecutionFailed(KeelError):
    """The execution's workflow failed or was cancelled on Temporal; the message carries the cause."""

    code = "temporal.execution_failed"


class TemporalRunnerOptions(BaseModel):
    """The options of ``runner = "temporal"`` (the ``[runner]`` table of a stack)."""

    model_config = ConfigDict(extra="forbid")

    address: str = Field("127.0.0.1:7233", description="the Temporal frontend, host:port")
    namespace: str = Field("default", description="the Temporal namespace")
    task_queue: str = Field("keel", min_length=1, description="the task queue of the workflows and their chunks")
    activity_timeout: float = Field(300.0, gt=0, description="start-to-close seconds of one chunk attempt")
    heartbeat_timeout: float = Field(
        30.0, gt=0, description="seconds without a heartbeat after which a chunk's worker counts as lost"
    )
    redeliveries: int = Field(
        20, ge=0, description="how often Temporal re-runs a chunk attempt lost to a dead worker or a timeout"
    )
    worker: bool = Field(True, description="run a worker for this runtime's flows in this process")


class ChunkContext:
    """What a chunk receives as ``ctx`` in a Temporal activity: the local runner's surface for a
    chunk of a linear flow. ``state``, ``emit``, ``pause_for`` and resources are refused by name."""

    def __init__(self, runtime: Runtime, call: Mapping[str, Any]):
        self.value = call["value"]
        self.input = call["value"]  # as on the local runner: the step's input is its value
        self.execution_id = str(call["execution_id"])
        self.tenant = str(call["tenant"])
        self.runtime = runtime
        self.path = str(call["path"])
        self.attempt = int(call["attempt"])  # 1, 2, ...: a failure of the chunk counts, a lost worker does not

    @property
    def idempotency_key(self) -> str:
        return f"{self.execution_id}:{self.path}:{self.attempt}"

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise TemporalRunnerError(
            f"ctx.{name} is not available to a chunk on the temporal runner yet (it runs linear flows: "
            f"value, input, execution_id, tenant, runtime, attempt, idempotency_key); see {_DOCS}, "
            'or run this flow with runner = "local"'
        )


def _frozen(flow: Any) -> dict[str, Any]:
    """The flow's data form, checked for what this runner runs: every problem in one error."""
    definition = getattr(flow, "definition", None)
    registry = getattr(flow, "registry", None)
    name = getattr(flow, "name", repr(flow))
    if not isinstance(definition, dict) or registry is None:
        raise TemporalRunnerError(
            f"flow {name!r} was built in Python; the temporal runner runs flows built from data today "
            f"(Registry.load of a FlowDefinition), whose frozen definition is the workflow's input. "
            f'Load it with a Registry, or run it with runner = "local" ({_DOCS})'
        )
    chunks = getattr(registry, "chunks", {})
    problems: list[str] = []
    if definition.get("on"):
        problems.append("'on' chains (events) do not run on the temporal runner yet")
    steps = definition.get("steps", [])
    if not steps:
        problems.append("the flow has no steps")
    for i, node in enumerate(steps):
        if not isinstance(node, dict) or not ({"to", "end", "pause_for"} & set(node)):
            kind = next(iter(node), "?") if isinstance(node, dict) else type(node).__name__
            problems.append(
                f"steps.{i}: a {kind!r} node does not run on the temporal runner yet (only 'to', 'pause_for' and 'end')"
            )
        elif "to" in node and node["to"] not in chunks:
            problems.append(
                f"steps.{i}: unknown chunk {node['to']!r} (registered: {', '.join(sorted(chunks)) or 'none'})"
            )
    if problems:
        raise TemporalRunnerError(f"flow {name!r} cannot run on Temporal: " + "; ".join(problems) + f" (see {_DOCS})")
    return dict(definition)


class TemporalRunner:
    """Runs flows as Temporal workflows on ``[runner] address`` / ``task_queue``.

    With ``worker = true`` (the default) the runtime's task group runs a worker for the flows this
    runner has been given (by ``start``, ``resume``, ``recover`` or :meth:`serve`), until the runtime
    closes; ``worker = false`` only starts and follows executions (a worker runs elsewhere)."""

    name = "temporal"

    def __init__(self, runtime: Runtime, options: Mapping[str, Any] | None = None):
        self.runtime = runtime
        self.options_given = dict(options or {})
        self.options = parse_options(TemporalRunnerOptions, self.options_given, where="runner 'temporal'")
        self._flows: dict[str, Any] = {}
        self._client: Any = None
        self._worker_started = False
        self._executions: dict[str, TemporalExecution] = {}  # followed here: the worker tells them of waits

    # ------------------------------------------------------------------------- connection
    async def client(self) -> Any:
        """The Temporal client (connected once)."""
        if self._client is None:
            from temporalio.client import Client

            try:
                with anyio.fail_after(30):
                    self._client = await Client.connect(self.options.address, namespace=self.options.namespace)
            except (RuntimeError, TimeoutError, OSError) as err:
                raise TemporalUnavailableError(
                    f"no Temporal server answers at {self.options.address} ({err}); start one "
                    "(`temporal server start-dev`, from pip install keel-runner-temporal[dev-server]) or set "
                    '[runner] driver = "temporal", address = "host:port" in keel.toml'
                ) from None
        return self._client

    # ----------------------------------------------------------------------------- worker
    async def serve(self, flows: Iterable[Any]) -> None:
        """Let this process's worker run these flows' chunks (starting the worker if needed)."""
        for flow in flows:
            _frozen(flow)
            self._flows[flow.name] = flow
        if self.options.worker and not self._worker_started:
            client = await self.client()
            self._worker_started = True
            await self.runtime.task_group.start(self._run_worker, client)

    async def _run_worker(self, client: Any, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        from temporalio.worker import Worker
        from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

        from keel_runner_temporal._workflow import FlowWorkflow

        restrictions = SandboxRestrictions.default.with_passthrough_modules("keel", "pydantic", "pydantic_core")
        worker = Worker(
            client,
            task_queue=self.options.task_queue,
            workflows=[FlowWorkflow],
            activities=[self._chunk_activity(), self._waiting_activity()],
            workflow_runner=SandboxedWorkflowRunner(restrictions=restrictions),
        )
        # its own asyncio task (temporalio is asyncio-only): a cancelled runtime asks it to shut down
        # and waits for that, instead of cancelling it halfway through its own shutdown
        run = asyncio.ensure_future(worker.run())
        task_status.started()
        try:
            await asyncio.shield(run)
        finally:
            with anyio.CancelScope(shield=True):
                if not run.done():
                    await worker.shutdown()
                    await asyncio.wait([run])

    def _chunk_activity(self) -> Any:
        from temporalio import activity
        from temporalio.exceptions import ApplicationError

        from keel_runner_temporal._workflow import CHUNK_ACTIVITY, CHUNK_FAILED

        @activity.defn(name=CHUNK_ACTIVITY)
        async def run_chunk(call: dict[str, Any]) -> Any:
            flow = self._flows.get(call["flow"])
            if flow is None:  # retryable: another worker on this queue may serve it
                raise ApplicationError(
                    f"this worker does not serve flow {call['flow']!r} (serving: {', '.join(sorted(self._flows))}); "
                    "load it in every worker of the task queue (the stack's runnables)",
                    type="FlowNotServed",
                )
            fn = flow.registry.chunks[call["chunk"]][0]
            ctx = ChunkContext(self.runtime, call)
            beating = asyncio.ensure_future(_heartbeat(self.options.heartbeat_timeout / 3))
            try:
                if inspect.iscoroutinefunction(fn):
                    out = await fn(ctx)
                else:  # a plain chunk may block: in a thread, so that the heartbeat goes on
                    out = await anyio.to_thread.run_sync(fn, ctx)
                    if inspect.isawaitable(out):
                        out = await out
            except TemporalRunnerError as err:  # an unsupported ctx feature: retrying cannot help
                raise ApplicationError(str(err), type=type(err).__name__, non_retryable=True) from None
            except Exception as err:  # the chunk failed: the workflow counts it as an attempt
                raise ApplicationError(
                    f"{type(err).__name__}: {err}", {"type": type(err).__name__}, type=CHUNK_FAILED, non_retryable=True
                ) from None
            finally:
                beating.cancel()
            return to_jsonable_python(out)

        return run_chunk

    def _waiting_activity(self) -> Any:
        from temporalio import activity

        from keel_runner_temporal._workflow import WAITING_ACTIVITY

        @activity.defn(name=WAITING_ACTIVITY)
        async def waiting(call: dict[str, Any]) -> None:
            execution = self._executions.get(call["execution_id"])
            if execution is not None:
                execution._now_waiting({k: v for k, v in call.items() if k != "execution_id"})

        return waiting

    # ------------------------------------------------------------------------ the Runner
    async def start(
        self,
        flow: Any,
        input: Any = None,
        *,
        tenant: str = "default",
        execution_id: str | None = None,
        **options: Any,
    ) -> TemporalExecution:
        """Start the workflow whose id is the execution id; the same id twice is a ConflictError."""
        if options:
            raise TemporalRunnerError(
                f"the temporal runner does not take {', '.join(sorted(options))} yet (it takes tenant and execution_id)"
            )
        from temporalio.exceptions import WorkflowAlreadyStartedError

        from keel_runner_temporal._workflow import MEMO_KEY, WORKFLOW

        definition = _frozen(flow)
        await self.serve([flow])
        client = await self.client()
        execution_id = execution_id or new_id("flow")
        job = {
            "flow": flow.name,
            "definition": definition,
            "input": to_jsonable_python(input),
            "tenant": tenant,
            "activity_timeout": self.options.activity_timeout,
            "heartbeat_timeout": self.options.heartbeat_timeout,
            "redeliveries": self.options.redeliveries,
        }
        try:
            handle = await client.start_workflow(
                WORKFLOW,
                job,
                id=execution_id,
                task_queue=self.options.task_queue,
                memo={MEMO_KEY: {"flow": flow.name, "tenant": tenant}},  # what find() reads back, from anywhere
            )
        except WorkflowAlreadyStartedError:
            raise ConflictError(
                f"execution {execution_id!r} already exists on Temporal (the workflow id is the execution id); "
                "follow it with runner.resume(flow, execution_id), or start with another id"
            ) from None
        return self._follow(handle, flow.name, tenant)

    async def resume(
        self, flow: Any, execution_id: str, *, tenant: str = "default", **options: Any
    ) -> TemporalExecution:
        """Follow an execution Temporal is running (Temporal resumes it on any worker itself)."""
        if options:
            raise TemporalRunnerError(f"the temporal runner's resume does not take {', '.join(sorted(options))}")
        await self.serve([flow])
        client = await self.client()
        return self._follow(client.get_workflow_handle(execution_id), flow.name, tenant)

    async def recover(
        self,
        flows: Iterable[Any],
        *,
        tenant: str = "default",
        resources: Mapping[str, Any] | None = None,
    ) -> list[TemporalExecution]:
        """Serve these flows: Temporal hands their running executions to this worker by itself, so
        there is nothing to adopt here; returns ``[]``."""
        if resources:
            raise TemporalRunnerError(f"resources do not reach chunks on the temporal runner yet ({_DOCS})")
        await self.serve(flows)
        return []

    async def find(self, execution_id: str, tenant: str) -> TemporalExecution | None:
        """The execution whose workflow id is ``execution_id``, if it is a flow of ``tenant`` on this
        namespace (else ``None``): what ``runtime.find_execution`` reaches after a restart or from
        another process. Its flow, found among the runtime's runnables by name (or rebuilt from the
        workflow's frozen definition by a registry there), is served by this process's worker."""
        from temporalio.service import RPCError, RPCStatusCode

        from keel_runner_temporal._workflow import MEMO_KEY, WAITING_MEMO, WORKFLOW

        followed = self._executions.get(execution_id)
        if followed is not None:
            return followed if followed.tenant == tenant else None
        handle = (await self.client()).get_workflow_handle(execution_id)
        try:
            described = await handle.describe()
        except RPCError as err:
            if err.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT):
                return None
            raise TemporalRunnerError(f"Temporal did not describe execution {execution_id!r}: {err}") from None
        memo = await described.memo()
        keel_memo = memo.get(MEMO_KEY)
        if described.workflow_type != WORKFLOW or not isinstance(keel_memo, dict):
            return None  # another workflow on this namespace: not a keel execution
        if keel_memo.get("tenant") != tenant:
            return None  # another tenant's: exactly like a missing one
        name = str(keel_memo.get("flow", "?"))
        flow = self._flows.get(name) or await self._flow_for(name, handle)
        if flow is not None:
            await self.serve([flow])
        status = _STATUS.get(described.status.name if described.status else "RUNNING", ExecutionStatus.FAILED)
        waiting = memo.get(WAITING_MEMO) if status is ExecutionStatus.RUNNING else None
        return self._follow(handle, name, tenant, status=status, waiting=waiting)

    async def _flow_for(self, name: str, handle: Any) -> Any:
        """The runtime's runnable called ``name``, or the workflow's frozen definition loaded by a
        registry among the runnables (a data flow); ``None`` when neither is here."""
        if name in self.runtime.runnables:
            found = self.runtime.runnables.get(name)
            if isinstance(getattr(found, "definition", None), dict):
                return found
        registries: list[Any] = [getattr(r, "registry", None) for r in self.runtime.runnables]
        registries = [r for r in registries if hasattr(r, "load")]
        if not registries:
            return None
        definition = await self._started_definition(handle)
        for registry in registries:
            try:
                return registry.load(definition)
            except KeelError:
                continue  # its chunks are not this registry's
        return None

    async def _started_definition(self, handle: Any) -> Any:
        async for event in handle.fetch_history_events():
            attributes = event.workflow_execution_started_event_attributes
            [job] = await (await self.client()).data_converter.decode(attributes.input.payloads)
            return job["definition"]
        return None

    def _follow(self, handle: Any, flow: str, tenant: str, **seen: Any) -> TemporalExecution:
        execution = TemporalExecution(handle, flow, tenant, **seen)
        execution.served_here = self.options.worker and flow in self._flows
        self._executions[execution.id] = execution
        self.runtime.task_group.start_soon(self._watch, execution)
        return execution

    async def _watch(self, execution: TemporalExecution) -> None:
        try:
            await execution._watch()
        finally:
            self._executions.pop(execution.id, None)


async def _heartbeat(every: float) -> None:
    """Tell Temporal this chunk's worker is alive (and let a cancel reach the chunk) until cancelled."""
    from temporalio import activity

    while True:
        activity.heartbeat()
        await asyncio.sleep(every)


_CLOSED = {"COMPLETED": ExecutionStatus.COMPLETED, "CANCELED": ExecutionStatus.CANCELLED}
#: Temporal's workflow status -> keel's (FAILED, TERMINATED and TIMED_OUT are failures)
_STATUS = {**_CLOSED, "RUNNING": ExecutionStatus.RUNNING, "CONTINUED_AS_NEW": ExecutionStatus.RUNNING}


class TemporalExecution:
    """A flow execution that Temporal runs, seen through :class:`keel.Execution`."""

    kind = "flow"
    running_here = False  # Temporal owns it: a closing runtime does not wait for it
    served_here = False  # whether this process's worker runs its chunks (keel flow signal follows it then)

    def __init__(
        self,
        handle: Any,
        flow: str,
        tenant: str,
        *,
        status: ExecutionStatus = ExecutionStatus.RUNNING,
        waiting: dict[str, Any] | None = None,
    ):
        self.id: str = handle.id
        self.flow = flow
        self.tenant = tenant
        self._handle = handle
        self._status = status  # what Temporal said when this object was made (found: maybe finished)
        self._waiting: dict[str, Any] | None = None
        self._log: EventLog[RuntimeEvent] = EventLog()
        self._done = anyio.Event()
        self._result: Any = None
        self._error: BaseException | None = None
        self._cancel_reason: str | None = None
        self._sent: dict[str, dict[str, Any]] = {}  # request id -> the signal this object delivered
        self._event("execution.started", {"flow": flow, "runner": "temporal"})
        if waiting is not None:  # found waiting: what a follower of the live execution saw last
            self._now_waiting(waiting)

    @property
    def status(self) -> ExecutionStatus:
        return self._status

    def _event(self, kind: str, payload: dict[str, Any]) -> None:
        self._log.append(
            RuntimeEvent(
                kind=kind,
                execution_id=self.id,
                seq=len(self._log) + 1,
                tenant=self.tenant,
                source="temporal",
                payload=payload,
            )
        )

    async def _watch(self) -> None:
        from temporalio.client import WorkflowFailureError
        from temporalio.exceptions import CancelledError as TemporalCancelled

        try:
            self._result = await self._handle.result()
            self._status = ExecutionStatus.COMPLETED
            self._event("execution.completed", {})
        except WorkflowFailureError as err:
            cause: Any = err.cause
            while getattr(cause, "cause", None) is not None:
                cause = cause.cause
            cancelled = isinstance(err.cause, TemporalCancelled)
            self._status = ExecutionStatus.CANCELLED if cancelled else ExecutionStatus.FAILED
            message = getattr(cause, "message", None) or str(cause or err)  # without the error type's prefix
            reason = (self._cancel_reason or "cancelled") if cancelled else message
            self._error = TemporalExecutionFailed(
                f"execution {self.id!r} {'was cancelled' if cancelled else 'failed'} on Temporal: {reason}"
            )
            self._event(
                "execution.cancelled" if cancelled else "execution.failed",
                {"reason": reason, "code": "execution.cancelled" if cancelled else self._error.code},
            )
        finally:
            self._done.set()
            self._log.notify()

    async def result(self) -> Any:
        await self._done.wait()
        if self._error is not None:
            raise self._error
        return self._result

    def events(self, since: int = 0) -> AsyncIterator[RuntimeEvent]:
        return self._log.follow(since, lambda: self._done.is_set())

    async def position(self) -> dict[str, Any]:
        """The workflow's own answer to where it is (a Temporal query): ``step``, ``steps``, ``chunk``."""
        answer: dict[str, Any] = await self._handle.query("keel.position")
        return answer

    async def describe(self) -> ExecutionStatus:
        """Temporal's status of the workflow, mapped to keel's (also when another process runs it)."""
        described = await self._handle.describe()
        name = described.status.name if described.status is not None else "RUNNING"
        return _CLOSED.get(name, ExecutionStatus.RUNNING if name == "RUNNING" else ExecutionStatus.FAILED)

    def _now_waiting(self, interrupt: dict[str, Any]) -> None:
        self._status = ExecutionStatus.WAITING
        self._waiting = interrupt
        self._event("execution.waiting", {"interrupts": [interrupt]})

    def get_pending_interrupts(self) -> list[dict[str, Any]]:
        """The wait this object last saw (``id``, ``name``, ``payload``, ``path``, ``deadline``)."""
        return [dict(self._waiting)] if self._waiting is not None and self._status is ExecutionStatus.WAITING else []

    async def signal(self, name: str, payload: Any = None, *, request_id: str | None = None) -> None:
        """Deliver ``name`` as a Temporal workflow update: the same ``request_id`` twice is a no-op,
        with another payload a :class:`keel.ConflictError`."""
        from temporalio.client import WorkflowUpdateFailedError
        from temporalio.service import RPCError

        from keel_runner_temporal._workflow import SIGNAL_UPDATE

        call = {"name": name, "payload": to_jsonable_python(payload), "request_id": request_id}
        if request_id is not None and request_id in self._sent:
            if self._sent[request_id] != call:  # known here: no round trip (the workflow checks it too)
                raise ConflictError(
                    f"execution {self.id!r}: request id {request_id!r} was already used for another signal"
                )
            return  # delivered already, maybe to a workflow that has closed since
        try:
            await self._handle.execute_update(SIGNAL_UPDATE, call)
        except RPCError as err:
            raise TemporalRunnerError(f"execution {self.id!r} did not take signal {name!r}: {err}") from None
        except WorkflowUpdateFailedError as err:
            if getattr(err.cause, "type", None) == "Conflict":
                raise ConflictError(f"execution {self.id!r}: {err.cause}") from None
            raise TemporalRunnerError(f"execution {self.id!r} did not take signal {name!r}: {err.cause}") from None
        if request_id is not None:
            self._sent[request_id] = call
        if self._status is ExecutionStatus.WAITING:
            self._status = ExecutionStatus.RUNNING

    async def cancel(self, reason: str = "cancelled") -> None:
        """Ask Temporal to cancel the workflow and return once it has ended (cancelled, or finished
        first); after the end it changes nothing. A chunk running then is abandoned by the workflow."""
        if self._done.is_set():
            return
        self._cancel_reason = reason
        await self._handle.cancel()
        await self._done.wait()

    def __repr__(self) -> str:
        return f"TemporalExecution({self.id!r}, flow={self.flow!r}, status={self._status.value})"
