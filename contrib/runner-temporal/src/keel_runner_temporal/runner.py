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
import logging
import time
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

import anyio
from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import to_jsonable_python

from keel import ConflictError, ExecutionStatus, KeelError, Runtime, current_trace, new_id, parse_options
from keel_runner_temporal.activities import ChunkContext, activities, frozen, resolve, stream_name, subflows
from keel_runner_temporal.errors import TemporalExecutionFailed, TemporalRunnerError, TemporalUnavailableError
from keel_runner_temporal.execution import _STATUS, TemporalExecution
from keel_runner_temporal.stepevents import trace_in_memo

log = logging.getLogger(__name__)

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


def _drawing(flow: Any) -> dict[str, Any]:
    """The flow's drawing (TriggerFlow's ``flow.drawing()``) for the ``execution.started`` event, as
    the local runner's carries it (DevTools draws the path taken on it); ``{}`` when it has none."""
    draw = getattr(flow, "drawing", None)
    drawn = draw() if callable(draw) else None
    return {"drawing": drawn} if isinstance(drawn, dict) else {}


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
    inline_limit: int = Field(
        256 * 1024,
        ge=1024,
        le=2 * 1024 * 1024,
        description="bytes of a step's output (as JSON) above which it goes by reference, through the stack's store",
    )
    workflow_sandbox: bool = Field(
        False,
        description="run the workflow in temporalio's sandbox: the workflow is Keel's interpreter (it imports only "
        "temporalio and the standard library; your code runs in activities) and the replay test guards its "
        "determinism, so it is off by default: the sandbox costs ~15 ms per workflow activation here",
    )
    local_chunks: list[str] = Field(
        default_factory=list,
        description="chunks (by name; a Python flow's steps by step name) that run as local activities: cheap, "
        "pure ones, run by the worker that runs the workflow task, with no task-queue round trip",
    )
    max_concurrent_chunks: int | None = Field(
        None,
        ge=1,
        description="chunk attempts one worker runs at once (temporalio's max_concurrent_activities; default 100): "
        "more wait in the task queue for a worker with room, so workers on one queue share the load",
    )
    continue_after: int | None = Field(
        None,
        ge=1,
        description="continue-as-new after this many main-chain steps in one run (default: when Temporal suggests it)",
    )


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
        self.flows: dict[str, Any] = {}
        self._client: Any = None
        self._worker_started = False
        self.followed: dict[str, TemporalExecution] = {}  # followed here: the worker tells them of waits

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
            frozen(flow)
            self.flows[flow.name] = flow
            for sub in subflows(flow):  # its sub-flows' chunks run in this worker too
                self.flows.setdefault(sub.name, sub)
        if self.options.worker and not self._worker_started:
            client = await self.client()
            self._worker_started = True
            await self.runtime.task_group.start(self._run_worker, client)

    async def _run_worker(self, client: Any, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        from temporalio.worker import UnsandboxedWorkflowRunner, Worker
        from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

        from keel_runner_temporal._workflow import FlowWorkflow

        if self.options.workflow_sandbox:
            restrictions = SandboxRestrictions.default.with_passthrough_modules("keel", "pydantic", "pydantic_core")
            workflow_runner: Any = SandboxedWorkflowRunner(restrictions=restrictions)
        else:
            workflow_runner = UnsandboxedWorkflowRunner()
        worker = Worker(
            client,
            task_queue=self.options.task_queue,
            workflows=[FlowWorkflow],
            activities=activities(self),
            workflow_runner=workflow_runner,
            max_concurrent_activities=self.options.max_concurrent_chunks,  # None: temporalio's default
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

        job = await self._job(flow, input, tenant)
        client = await self.client()
        execution_id = execution_id or new_id("flow")
        memo: dict[str, Any] = {"flow": flow.name, "tenant": tenant}
        caller = current_trace()  # started for a caller with a traceparent: its trace, in every process
        if caller is not None:
            memo["trace"] = {"trace_id": caller.trace_id, "parent": caller.span_id}
        try:
            handle = await client.start_workflow(
                WORKFLOW,
                job,
                id=execution_id,
                task_queue=self.options.task_queue,
                memo={MEMO_KEY: memo},  # what find() reads back, from anywhere
            )
        except WorkflowAlreadyStartedError:
            raise ConflictError(
                f"execution {execution_id!r} already exists on Temporal (the workflow id is the execution id); "
                "follow it with runner.resume(flow, execution_id), or start with another id"
            ) from None
        started = {"input": job["input"], **_drawing(flow)}
        return self._follow(handle, flow.name, tenant, started=started, trace=memo.get("trace"))

    async def schedule(
        self,
        flow: Any,
        schedule_id: str,
        *,
        every: float | None = None,
        cron: str | None = None,
        input: Any = None,
        tenant: str = "default",
        overlap: str = "skip",
    ) -> Any:
        """A Temporal Schedule that starts an execution of ``flow`` every ``every`` seconds or on
        ``cron``; each run's execution id is ``<schedule_id>-<time>`` (found by id as any other).
        ``overlap`` is Temporal's policy when a run is still going: ``skip`` (default),
        ``buffer_one``, ``buffer_all``, ``cancel_other``, ``terminate_other``, ``allow_all``.
        Returns temporalio's ``ScheduleHandle`` (describe, pause, trigger, delete)."""
        from temporalio.client import (
            Schedule,
            ScheduleActionStartWorkflow,
            ScheduleAlreadyRunningError,
            ScheduleIntervalSpec,
            ScheduleOverlapPolicy,
            SchedulePolicy,
            ScheduleSpec,
        )

        from keel_runner_temporal._workflow import MEMO_KEY, WORKFLOW

        if (every is None) == (cron is None):
            raise TemporalRunnerError(f"schedule {schedule_id!r}: give exactly one of every= (seconds) or cron=")
        policies = {p.name.lower(): p for p in ScheduleOverlapPolicy if p.name != "UNSPECIFIED"}
        if overlap not in policies:
            raise TemporalRunnerError(
                f"schedule {schedule_id!r}: overlap {overlap!r} is not one of {', '.join(sorted(policies))}"
            )
        job = await self._job(flow, input, tenant)
        spec = ScheduleSpec(
            intervals=[ScheduleIntervalSpec(every=timedelta(seconds=every))] if every is not None else [],
            cron_expressions=[cron] if cron is not None else [],
        )
        action = ScheduleActionStartWorkflow(
            WORKFLOW, job, id=schedule_id, task_queue=self.options.task_queue,
            memo={MEMO_KEY: {"flow": flow.name, "tenant": tenant}},
        )  # fmt: skip
        schedule = Schedule(action=action, spec=spec, policy=SchedulePolicy(overlap=policies[overlap]))
        try:
            return await (await self.client()).create_schedule(schedule_id, schedule)
        except ScheduleAlreadyRunningError:
            raise ConflictError(f"schedule {schedule_id!r} already exists on Temporal: delete it first") from None

    async def _job(self, flow: Any, input: Any, tenant: str, *, serve: bool = True) -> dict[str, Any]:
        """The workflow's input: the frozen flow and what the interpreter needs of the options
        (``serve=False``: for a schedule made by a command, whose runs the stack's workers take)."""
        form = frozen(flow)  # the definition and its sub-flows', or the plan
        if serve:
            await self.serve([flow])
        return {
            "flow": flow.name,
            **form,
            "input": to_jsonable_python(input),
            "tenant": tenant,
            "activity_timeout": self.options.activity_timeout,
            "heartbeat_timeout": self.options.heartbeat_timeout,
            "redeliveries": self.options.redeliveries,
            "continue_after": self.options.continue_after,
            "local_chunks": list(self.options.local_chunks),
        }

    async def resume(
        self, flow: Any, execution_id: str, *, tenant: str = "default", **options: Any
    ) -> TemporalExecution:
        """Follow an execution Temporal is running (Temporal resumes it on any worker itself)."""
        if options:
            raise TemporalRunnerError(f"the temporal runner's resume does not take {', '.join(sorted(options))}")
        await self.serve([flow])
        handle = (await self.client()).get_workflow_handle(execution_id)
        started = {"followed": True, **_drawing(flow)}
        return self._follow(handle, flow.name, tenant, started=started, trace=await trace_in_memo(handle))

    async def recover(
        self,
        flows: Iterable[Any],
        *,
        tenant: str = "default",
        resources: Mapping[str, Any] | None = None,
    ) -> list[TemporalExecution]:
        """Serve these flows: Temporal hands their running executions to this worker by itself, so
        there is nothing to adopt here; returns ``[]``."""
        if resources is not None and dict(resources) != dict(self.runtime.resources):
            raise TemporalRunnerError(
                "on the temporal runner, chunks get the resources of the worker's runtime: give them to "
                f"Runtime(host, stack, resources={{...}}) in every worker, not to recover() ({_DOCS})"
            )
        await self.serve(flows)
        return []

    async def find(self, execution_id: str, tenant: str) -> TemporalExecution | None:
        """The execution whose workflow id is ``execution_id``, if it is a flow of ``tenant`` on this
        namespace (else ``None``): what ``runtime.find_execution`` reaches after a restart or from
        another process. Its flow, found among the runtime's runnables by name (or rebuilt from the
        workflow's frozen definition by a registry there), is served by this process's worker."""
        from temporalio.service import RPCError, RPCStatusCode

        from keel_runner_temporal._workflow import MEMO_KEY, WAITING_MEMO, WORKFLOW

        followed = self.followed.get(execution_id)
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
        flow = self.flows.get(name) or await self._flow_for(name, handle)
        if flow is not None:
            await self.serve([flow])
        status = _STATUS.get(described.status.name if described.status else "RUNNING", ExecutionStatus.FAILED)
        waiting = memo.get(WAITING_MEMO) if status is ExecutionStatus.RUNNING else None
        waiting = [waiting] if isinstance(waiting, dict) else waiting  # one wait, as memos before lists had it
        started = {"followed": True, **_drawing(flow)}
        found = self._follow(
            handle, name, tenant, status=status, waiting=waiting, started=started, trace=keel_memo.get("trace")
        )
        with anyio.move_on_after(30):  # what the store holds first (its steps, its waits, in order)
            await found._caught_up.wait()
        found._found()
        return found

    async def list_executions(self, tenant: str = "default") -> list[dict[str, Any]]:
        """This stack's executions of ``tenant`` on Temporal (its task queue), oldest first, as
        ``keel flow ls`` shows them: ``id``, ``flow``, ``status`` (``waiting`` from the memo),
        ``created`` and ``updated`` (epoch seconds). Temporal's visibility store answers."""
        from keel_runner_temporal._workflow import MEMO_KEY, WAITING_MEMO, WORKFLOW

        client = await self.client()
        query = f"WorkflowType = '{WORKFLOW}' AND TaskQueue = '{self.options.task_queue}'"
        rows: list[dict[str, Any]] = []
        async for found in client.list_workflows(query):
            if found.status is not None and found.status.name == "CONTINUED_AS_NEW":
                continue  # an earlier run of an execution: its latest run is listed
            memo = await found.memo()
            keel_memo = memo.get(MEMO_KEY) or {}
            if keel_memo.get("tenant") != tenant:
                continue
            status = _STATUS.get(found.status.name if found.status else "RUNNING", ExecutionStatus.FAILED)
            if status is ExecutionStatus.RUNNING and memo.get(WAITING_MEMO):
                status = ExecutionStatus.WAITING
            ended = found.close_time or found.start_time
            rows.append(
                {"id": found.id, "flow": keel_memo.get("flow", "?"), "status": status.value,
                 "created": found.start_time.timestamp(), "updated": ended.timestamp()}
            )  # fmt: skip
        return sorted(rows, key=lambda row: row["created"])

    async def purge_executions(
        self, older_than: float, tenant: str = "default", *, dry_run: bool = False
    ) -> list[dict[str, Any]]:
        """Delete from Temporal the finished executions of ``tenant`` on this stack's task queue that
        ended more than ``older_than`` seconds ago (``keel flow purge``): every run's history (those a
        continue-as-new ended too), as Temporal's namespace retention would later. Returns them
        (``id``, ``flow``, ``status``), oldest first; ``dry_run`` deletes nothing."""
        from temporalio.api.common.v1 import WorkflowExecution
        from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest

        from keel_runner_temporal._workflow import MEMO_KEY, WORKFLOW

        client = await self.client()
        cutoff = time.time() - older_than
        runs: dict[str, list[Any]] = {}
        query = f"WorkflowType = '{WORKFLOW}' AND TaskQueue = '{self.options.task_queue}'"
        async for found in client.list_workflows(query):
            runs.setdefault(found.id, []).append(found)
        rows: list[dict[str, Any]] = []
        for execution_id, each in runs.items():
            if any(r.status is None or r.status.name == "RUNNING" for r in each):
                continue  # not finished
            last = max(each, key=lambda r: r.close_time or r.start_time)
            keel_memo = (await last.memo()).get(MEMO_KEY) or {}
            if keel_memo.get("tenant") != tenant or (last.close_time or last.start_time).timestamp() > cutoff:
                continue
            status = _STATUS.get(last.status.name, ExecutionStatus.FAILED) if last.status else ExecutionStatus.FAILED
            rows.append({"id": execution_id, "flow": keel_memo.get("flow", "?"), "status": status.value,
                         "updated": (last.close_time or last.start_time).timestamp()})  # fmt: skip
            if not dry_run:
                for run in each:
                    await client.workflow_service.delete_workflow_execution(
                        DeleteWorkflowExecutionRequest(
                            namespace=self.options.namespace,
                            workflow_execution=WorkflowExecution(workflow_id=execution_id, run_id=run.run_id),
                        )
                    )
        return sorted(rows, key=lambda row: row["updated"])

    async def _flow_for(self, name: str, handle: Any) -> Any:
        """The runtime's runnable called ``name``, or the workflow's frozen definition loaded by a
        registry among the runnables (a data flow); ``None`` when neither is here."""
        if name in self.runtime.runnables:
            found = self.runtime.runnables.get(name)
            if isinstance(getattr(found, "definition", None), dict) or callable(getattr(found, "plan", None)):
                return found
        registries: list[Any] = [getattr(r, "registry", None) for r in self.runtime.runnables]
        registries = [r for r in registries if hasattr(r, "load")]
        if not registries:
            return None
        definition = await self._started_definition(handle)
        if definition is None:
            return None
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
            return job.get("definition")  # a flow built in Python has none: it is found by name only
        return None

    def _follow(self, handle: Any, flow: str, tenant: str, **seen: Any) -> TemporalExecution:
        # its events go to this runtime's bus too (DevTools, keel-otel), unless it had ended before it
        # was found here: the process that followed it then has published them already
        running = seen.get("status", ExecutionStatus.RUNNING) is ExecutionStatus.RUNNING
        execution = TemporalExecution(
            handle, flow, tenant, resolve=lambda v: resolve(self.runtime, tenant, v, models=False),
            publish=self.runtime.publish if running else None, **seen,
        )  # fmt: skip
        execution.served_here = self.options.worker and flow in self.flows
        execution._record = lambda record: self._recorded(execution, record)
        self.followed[execution.id] = execution
        self.runtime.task_group.start_soon(self._watch, execution)
        return execution

    async def _watch(self, execution: TemporalExecution) -> None:
        relay = anyio.CancelScope()
        execution._drain = lambda: self._relay(execution, relay, follow=False)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._relay, execution, relay)
                await execution._watch()
                relay.cancel()
        finally:
            self.followed.pop(execution.id, None)

    async def _relay(self, execution: TemporalExecution, relay: anyio.CancelScope, *, follow: bool = True) -> None:
        """The execution's stream items and step events, from the stack's store (where the worker that
        ran the step put them) to its readers here: followed live, then (``follow=False``, before the
        end event) the rest, once the live relay has stopped, so none is shown twice."""
        store, stream = self.runtime.store(), stream_name(execution.id)
        try:
            if follow:
                with relay:
                    try:  # what is there already, then live
                        for record in await store.read(execution.tenant, stream, after=execution._stream_seq):
                            execution._stream_seq = record.seq
                            execution._stored(record.data)
                    finally:
                        execution._caught_up.set()
                    async for record in store.subscribe(execution.tenant, stream, after=execution._stream_seq):
                        execution._stream_seq = record.seq
                        execution._stored(record.data)
                return
            relay.cancel()
            for record in await store.read(execution.tenant, stream, after=execution._stream_seq):
                execution._stream_seq = record.seq
                execution._stored(record.data)
        except Exception as err:  # a store that fails costs the items, not the execution
            log.warning("execution %s: its stream items were not read from the store: %s", execution.id, err)

    async def _recorded(self, execution: TemporalExecution, record: dict[str, Any]) -> bool:
        """``record`` (an answer this process gave) in the execution's store stream, which every
        follower relays; ``False`` when the store did not take it."""
        try:
            await self.runtime.store().append(execution.tenant, stream_name(execution.id), [record])
        except Exception as err:
            log.warning("execution %s: an answer was not stored (shown here only): %s", execution.id, err)
            return False
        return True
