"""Workers: claim due jobs with leases, run each as an execution of its runnable, record the outcome.

A worker runs up to ``concurrency`` jobs at once. A housekeeping task renews the leases of the
jobs it holds every ``lease / 3`` seconds, cancels the ones it lost (cancelled by an operator, or
taken over after its lease expired), delivers pending signals to their executions, and releases
other workers' expired leases. Nothing is ever run inside an HTTP handler: intake and the
scheduler only enqueue.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from keel import Channel, Execution, ExecutionStatus, KeelError, NotFoundError, ProductEvent, RuntimeEvent, new_id
from keel_scheduler.jobs import Job, JobStatus
from keel_scheduler.queue import Queue
from keel_scheduler.tasks import JobContext, _current

if TYPE_CHECKING:
    from keel import Runtime

__all__ = ["Worker", "WorkerEvent"]


@dataclass
class WorkerEvent:
    """What a worker tells its watcher (the ``keel worker`` live lines): ``kind`` is one of
    claimed, completed, retrying, failed, lost, signal."""

    kind: str
    job: Job
    detail: str = ""
    time: float = field(default_factory=time.time)


@dataclass
class _Running:
    job: Job
    scope: anyio.CancelScope
    execution: Execution | None = None
    lost: str = ""


class Worker:
    """Claims and runs jobs from ``queues`` with the runnables of ``runtime``.

    :param concurrency: jobs run at once by this worker (the global limit per process).
    :param queue_limits: per queue, the most jobs running at once across *all* workers.
    :param rate_limits: per queue, the most jobs started per second across *all* workers.
    :param lease: seconds a claim lasts without renewal; a killed worker's jobs return after it.
    :param channels: where each job's product events go (``task.started``, ``task.waiting``...).
    """

    def __init__(
        self,
        queue: Queue,
        runtime: Runtime,
        *,
        queues: Sequence[str] = ("default",),
        concurrency: int = 4,
        lease: float = 30.0,
        poll_interval: float = 0.5,
        queue_limits: dict[str, int] | None = None,
        rate_limits: dict[str, float] | None = None,
        channels: Sequence[Channel] = (),
        on_event: Callable[[WorkerEvent], None] | None = None,
        name: str | None = None,
    ) -> None:
        if concurrency < 1:
            raise KeelError(f"worker: concurrency must be at least 1, not {concurrency}")
        if lease <= 0.1:
            raise KeelError(f"worker: lease must be more than 0.1 seconds, not {lease}")
        self.queue = queue
        self.runtime = runtime
        self.queues = list(queues)
        self.concurrency = concurrency
        self.lease = lease
        self.poll_interval = poll_interval
        self.queue_limits = dict(queue_limits or {})
        self.rate_limits = dict(rate_limits or {})
        self.channels = list(channels)
        self.on_event = on_event
        self.id = name or f"{socket.gethostname()}:{os.getpid()}:{new_id()[-6:]}"
        self.running: dict[str, _Running] = {}
        self.done = 0
        self._stopping = False
        self._slot = anyio.Event()
        self._tg: Any = None
        self._finishing: dict[str, _Running] = {}
        self._pending: list[tuple[Job, Any]] = []
        self._pending_event = anyio.Event()
        self._refused: set[str] = set()
        self._sent: dict[tuple[str, int], int] = {}  # (job, attempt) -> product events sent: their seq

    # ------------------------------------------------------------------------------------- run

    async def run(self, *, drain: bool = False, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        """Claim and run until :meth:`stop` (or, with ``drain``, until no job is due and none runs)."""
        self.runtime.serving.add("worker")  # keel doctor reports a worker beside the gateway
        async with anyio.create_task_group() as tg:
            self._tg = tg
            tg.start_soon(self._housekeeping)
            tg.start_soon(self._completer)
            task_status.started()
            while not self._stopping:
                free = self.concurrency - len(self.running)
                # known before claiming: a job that ends now may queue a retry
                idle = not self.running and not self._finishing
                jobs: list[Job] = []
                if free > 0:
                    jobs = await self.queue.claim(
                        self.id, queues=self.queues, limit=free, lease=self.lease, queue_limits=self.queue_limits,
                        rate_limits=self.rate_limits,
                    )  # fmt: skip
                    for job in jobs:
                        self.running[job.id] = _Running(job, anyio.CancelScope())
                        self._tell("claimed", job, f"attempt {job.attempts}/{job.max_attempts}")
                        tg.start_soon(self._run_job, job)
                if jobs:
                    continue
                if drain and idle:
                    break
                if free > 0:
                    await self.queue.db.wait_for_work(self.poll_interval)
                else:
                    with anyio.move_on_after(self.poll_interval):
                        await self._slot.wait()
                    self._slot = anyio.Event()
            while self.running or self._finishing:  # let what runs finish; a hard stop: leases expire
                await self._slot.wait()
                self._slot = anyio.Event()
            tg.cancel_scope.cancel()

    def stop(self) -> None:
        """Claim nothing more; :meth:`run` returns once the running jobs end."""
        self._stopping = True
        self._slot.set()

    # ------------------------------------------------------------------------------- one job

    async def _run_job(self, job: Job) -> None:
        slot = self.running[job.id]
        token = _current.set(
            JobContext(job.id, job.attempts, job.queue, job.correlation_id, job.schedule_id, job.scheduled_for)
        )
        try:
            await self._send(job, "task.started", f"attempt {job.attempts} of {job.max_attempts}")
            try:
                runnable = self.runtime.runnables.get(job.task)
            except NotFoundError as err:
                await self._failed(job, f"{err} (in worker {self.id})", retry=False)
                return
            try:
                with slot.scope:
                    # through the runtime: a task of this execution that raises fails this job only
                    execution = await self.runtime.start(runnable, job.input, tenant=job.tenant)
                    slot.execution = execution
                    follow = anyio.CancelScope()
                    self._tg.start_soon(self._follow, job, execution, follow)
                    try:
                        result = await execution.result()
                    finally:
                        follow.cancel()
                if slot.scope.cancelled_caught:
                    with anyio.CancelScope(shield=True):
                        if slot.execution is not None and not slot.execution.status.finished:
                            await slot.execution.cancel(slot.lost or "lease lost")
                    self._tell("lost", job, slot.lost)
                    return
            except Exception as err:
                if slot.execution is not None and slot.execution.status == ExecutionStatus.CANCELLED and slot.lost:
                    self._tell("lost", job, slot.lost)
                    return
                await self._failed(job, _describe(err), retry=True)
                return
            # the work is done: its slot is free now, and its completion joins the next batch commit
            # (its lease is renewed until then; a crash before the commit runs it again)
            self._finishing[job.id] = slot
            self._pending.append((job, result))
            self._pending_event.set()
        finally:
            _current.reset(token)
            self.running.pop(job.id, None)
            self._slot.set()

    async def _completer(self) -> None:
        """Commit finished jobs in batches: one transaction (one disk flush) for all that finished
        while the previous batch was committing."""
        while True:
            await self._pending_event.wait()
            self._pending_event = anyio.Event()
            batch, self._pending = self._pending, []
            if not batch:
                continue
            recorded: list[bool] | None = None
            for delay in (0.05, 0.2, 1.0, 0.0):
                try:
                    with anyio.CancelScope(shield=True):
                        recorded = await self.queue.complete_many([(job, self.id, result) for job, result in batch])
                    break
                except (KeelError, OSError) as err:  # the database is away: retry, then let leases expire
                    for job, _ in batch:
                        self._tell("lost", job, f"recording the completion failed ({err}); retrying")
                    if not delay:
                        break
                    await anyio.sleep(delay)
            for i, (job, result) in enumerate(batch):
                self._finishing.pop(job.id, None)
                if recorded is not None and recorded[i]:
                    self.done += 1
                    self._publish("job.completed", job)
                    self._tell("completed", job)
                    await self._send(job, "task.completed", "completed", data=result)
                elif recorded is not None:
                    self._tell("lost", job, "the outcome came after the job was cancelled or taken over; not recorded")
            self._slot.set()

    async def _failed(self, job: Job, error: str, *, retry: bool) -> None:
        with anyio.CancelScope(shield=True):
            status = await self.queue.fail(job, self.id, error, retry=retry)
        if status is None:
            self._tell("lost", job, "the failure came after the job was cancelled or taken over; not recorded")
        elif status == JobStatus.QUEUED:
            self._publish("job.retrying", job, {"error": error})
            self._tell("retrying", job, error)
            await self._send(job, "task.progress", f"attempt {job.attempts} failed; retrying")
        else:
            self._publish("job.failed", job, {"error": error})
            self._tell("failed", job, error)
            await self._send(job, "task.failed", "the task failed", data={"code": "error"})

    async def _follow(self, job: Job, execution: Execution, scope: anyio.CancelScope) -> None:
        """Pass the execution's waits and progress on as product events."""
        with scope:
            await self._follow_events(job, execution)

    async def _follow_events(self, job: Job, execution: Execution) -> None:
        async for event in execution.events():
            if event.kind == "execution.waiting":
                interrupts = event.payload.get("interrupts") or []
                names = ", ".join(str(i.get("name")) for i in interrupts if isinstance(i, dict)) or "a signal"
                await self._send(
                    job,
                    "task.waiting",
                    f"waiting for {names}",
                    waiting_for={"signals": interrupts, "correlation_id": job.correlation_id},
                )
            elif event.kind.endswith(".progress"):
                message = event.payload.get("message")
                await self._send(job, "task.progress", message if isinstance(message, str) else "working")

    # -------------------------------------------------------------------------- housekeeping

    async def _housekeeping(self) -> None:
        every = max(self.lease / 3, 0.05)
        last_release = 0.0
        while True:
            await anyio.sleep(min(every, self.poll_interval))
            held = {**self._finishing, **self.running}
            if held:
                alive = await self.queue.renew(self.id, held, self.lease)
                for job_id, slot in held.items():
                    if job_id not in alive and job_id in self.running:
                        slot.lost = "the job was cancelled, or its lease expired and another worker took it"
                        slot.scope.cancel()
                await self._deliver_signals(held)
            if time.monotonic() - last_release >= every:
                last_release = time.monotonic()
                await self.queue.release_expired()

    async def _deliver_signals(self, held: dict[str, _Running]) -> None:
        by_correlation = {s.job.correlation_id: s for s in held.values() if s.job.correlation_id and s.execution}
        for signal in await self.queue.pending_signals(by_correlation):
            slot = by_correlation[signal["correlation_id"]]
            assert slot.execution is not None
            try:
                await slot.execution.signal(signal["name"], signal["payload"], request_id=signal["request_id"])
            except KeelError as err:  # not waiting for it yet, say: kept, and offered again next round
                if signal["id"] not in self._refused:
                    self._refused.add(signal["id"])
                    self._tell("signal", slot.job, f"signal {signal['name']!r} not taken yet: {err}")
                continue
            self._tell("signal", slot.job, f"signal {signal['name']!r} delivered")
            await self.queue.mark_delivered(signal["id"])

    # ----------------------------------------------------------------------------- reporting

    def _tell(self, kind: str, job: Job, detail: str = "") -> None:
        if self.on_event is not None:
            self.on_event(WorkerEvent(kind, job, detail))

    def _publish(self, kind: str, job: Job, payload: dict[str, Any] | None = None) -> None:
        self.runtime.publish(
            RuntimeEvent(
                kind=kind,
                tenant=job.tenant,
                source="scheduler",
                payload={
                    "job": job.id,
                    "queue": job.queue,
                    "task": job.task,
                    "attempt": job.attempts,
                    **(payload or {}),
                },
            )
        )

    async def _send(self, job: Job, kind: Any, message: str, **fields: Any) -> None:
        if not self.channels:
            return
        # each event of a job gets its own seq, so a channel's delivery id (X-Keel-Delivery,
        # "<job>.<seq>", which receivers deduplicate by) is one per event and the same on its
        # retries; the attempt is in it, so a later attempt, maybe on another worker, never reuses one
        attempt = (job.id, job.attempts)
        sent = self._sent.pop(attempt, 0) + 1
        if kind not in _LAST_OF_ATTEMPT and "retrying" not in message:
            if len(self._sent) >= _MAX_SENT:  # attempts lost without a last event: forget the oldest
                del self._sent[next(iter(self._sent))]
            self._sent[attempt] = sent
        event = ProductEvent(
            type=kind,
            task_id=job.id,
            execution_id=job.id,
            tenant=job.tenant,
            seq=job.attempts * _SEQ_PER_ATTEMPT + sent,
            message=message,
            **fields,
        )  # type: ignore[arg-type]
        for channel in self.channels:
            try:
                with anyio.CancelScope(shield=True):
                    await channel.send(event)
            except Exception as err:  # a channel never fails the task that produced the event
                self._tell("signal", job, f"channel {channel.name} failed: {err}")


#: a job's product event seq is attempt * _SEQ_PER_ATTEMPT + its number within the attempt
_SEQ_PER_ATTEMPT = 1_000_000
_LAST_OF_ATTEMPT = ("task.completed", "task.failed")
_MAX_SENT = 100_000


def _describe(err: BaseException) -> str:
    text = str(err)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
