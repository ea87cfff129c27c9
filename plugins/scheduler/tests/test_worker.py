"""Workers on both backends: run runnables, retry, dead-letter, cancel, deliver signals."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from pydantic import BaseModel

import keel
from keel.testing import make_host
from keel_scheduler import JobStatus, Queue, Worker, WorkerEvent, current_job, task

from .conftest import Backend


def _runtime(*runnables: Any) -> keel.Runtime:
    runtime = keel.Runtime(make_host())
    for r in runnables:
        runtime.add(r)
    return runtime


async def test_worker_runs_a_job_and_records_its_result(queue: Queue) -> None:
    seen: list[Any] = []

    @task
    async def add(input: dict[str, int]) -> int:
        job = current_job()
        assert job is not None
        seen.append((job.job_id, job.attempt, job.idempotency_key))
        return input["a"] + input["b"]

    async with _runtime(add) as runtime:
        job = await queue.enqueue("add", {"a": 1, "b": 2})
        events: list[WorkerEvent] = []
        worker = Worker(queue, runtime, poll_interval=0.05, on_event=events.append)
        with anyio.fail_after(30):
            await worker.run(drain=True)
    done = await queue.get(job.id)
    assert done.status == JobStatus.COMPLETED and done.result == 3
    assert seen == [(job.id, 1, job.id)]
    assert [e.kind for e in events] == ["claimed", "completed"]


async def test_a_flaky_task_is_retried_and_a_broken_one_dead_lettered(queue: Queue) -> None:
    tries: dict[str, int] = {}

    @task
    async def flaky(input: dict[str, Any]) -> str:
        tries[input["name"]] = tries.get(input["name"], 0) + 1
        if tries[input["name"]] <= input["fail"]:
            raise RuntimeError(f"try {tries[input['name']]} failed")
        return "ok"

    async with _runtime(flaky) as runtime:
        ok = await queue.enqueue("flaky", {"name": "ok", "fail": 2}, max_attempts=3, backoff=0.0)
        dead = await queue.enqueue("flaky", {"name": "dead", "fail": 5}, max_attempts=3, backoff=0.0)
        missing = await queue.enqueue("nobody", max_attempts=3)
        with anyio.fail_after(30):
            await Worker(queue, runtime, poll_interval=0.05).run(drain=True)
    assert (await queue.get(ok.id)).status == JobStatus.COMPLETED
    job = await queue.get(dead.id)
    assert job.status == JobStatus.FAILED and job.attempts == 3
    assert [e["error"] for e in job.errors] == [f"RuntimeError: try {n} failed" for n in (1, 2, 3)]
    lost = await queue.get(missing.id)
    assert lost.status == JobStatus.FAILED and lost.attempts == 1  # no runnable: retrying cannot help
    assert "no runnable named 'nobody'" in lost.errors[0]["error"]


async def test_cancel_reaches_a_running_job(queue: Queue) -> None:
    started = anyio.Event()
    cancelled = anyio.Event()

    @task
    async def forever(input: Any) -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.set()

    async with _runtime(forever) as runtime:
        job = await queue.enqueue("forever")
        worker = Worker(queue, runtime, poll_interval=0.05, lease=0.6)
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            with anyio.fail_after(30):
                await started.wait()
                await queue.cancel(job.id, "no longer needed")
                await cancelled.wait()
                while worker.running:
                    await anyio.sleep(0.05)
            worker.stop()
    assert (await queue.get(job.id)).status == JobStatus.CANCELLED


class _Waiting:
    """A runnable whose execution waits for one signal and returns its payload."""

    name = "approval"
    kind = "test"
    description = "waits for 'approve'"

    def input_schema(self) -> dict[str, Any]:
        return {}

    def output_schema(self) -> dict[str, Any]:
        return {}

    async def start(self, input: Any, *, runtime: keel.Runtime, tenant: str = "default") -> _WaitingExecution:
        return _WaitingExecution(tenant)


class _WaitingExecution:
    kind = "test"

    def __init__(self, tenant: str) -> None:
        self.id = keel.new_id("exe")
        self.tenant = tenant
        self.answer: Any = None
        self.got = anyio.Event()
        self.requests: list[str | None] = []

    @property
    def status(self) -> keel.ExecutionStatus:
        return keel.ExecutionStatus.COMPLETED if self.got.is_set() else keel.ExecutionStatus.WAITING

    async def events(self, since: int = 0) -> AsyncIterator[keel.RuntimeEvent]:
        yield keel.RuntimeEvent(
            kind="execution.waiting", execution_id=self.id, seq=1, payload={"interrupts": [{"name": "approve"}]}
        )
        await self.got.wait()

    async def result(self) -> Any:
        await self.got.wait()
        return self.answer

    async def signal(self, name: str, payload: Any = None, *, request_id: str | None = None) -> None:
        self.requests.append(request_id)
        if name == "approve":
            self.answer = payload
            self.got.set()

    async def cancel(self, reason: str = "cancelled") -> None:
        self.got.set()


class _Collect:
    name = "collect"

    def __init__(self) -> None:
        self.events: list[keel.ProductEvent] = []

    async def send(self, event: keel.ProductEvent) -> None:
        self.events.append(event)

    async def aclose(self) -> None:
        return None


async def test_a_signal_by_correlation_id_resumes_a_waiting_job(queue: Queue) -> None:
    channel = _Collect()
    async with _runtime(_Waiting()) as runtime:
        job = await queue.enqueue("approval", correlation_id="order-42")
        worker = Worker(queue, runtime, poll_interval=0.05, lease=0.6, channels=[channel])
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            with anyio.fail_after(30):
                while not any(e.type == "task.waiting" for e in channel.events):
                    await anyio.sleep(0.05)
                assert (await queue.waiting_for("order-42")).id == job.id  # type: ignore[union-attr]
                await queue.signal("order-42", "approve", {"by": "ana"}, request_id="delivery-1")
                while (await queue.get(job.id)).status != JobStatus.COMPLETED:
                    await anyio.sleep(0.05)
            worker.stop()
    assert (await queue.get(job.id)).result == {"by": "ana"}
    types = [e.type for e in channel.events]
    assert types[0] == "task.started" and "task.waiting" in types and types[-1] == "task.completed"
    waiting = next(e for e in channel.events if e.type == "task.waiting")
    assert waiting.waiting_for is not None and waiting.waiting_for["correlation_id"] == "order-42"
    # each event its own delivery id (<job>.<seq>), which receivers deduplicate by
    assert len({(e.execution_id, e.seq) for e in channel.events}) == len(channel.events)


async def test_a_retried_jobs_product_events_never_share_a_seq(queue: Queue) -> None:
    channel = _Collect()
    tries: list[int] = []

    @task
    async def flaky(input: Any) -> str:
        tries.append(1)
        if len(tries) < 3:
            raise RuntimeError("not yet")
        return "ok"

    async with _runtime(flaky) as runtime:
        job = await queue.enqueue("flaky", max_attempts=3, backoff=0.0)
        with anyio.fail_after(30):
            await Worker(queue, runtime, poll_interval=0.05, channels=[channel]).run(drain=True)
    assert (await queue.get(job.id)).status == JobStatus.COMPLETED
    types = [e.type for e in channel.events]
    assert types.count("task.started") == 3 and types[-1] == "task.completed", types
    seqs = [e.seq for e in channel.events]
    assert len(set(seqs)) == len(seqs) and seqs == sorted(seqs), seqs


@pytest.mark.parametrize("concurrency", [1, 3])
async def test_every_job_runs_once_with_several_workers(backend: Backend, concurrency: int) -> None:
    runs: list[str] = []

    @task
    async def note(input: Any) -> None:
        job = current_job()
        assert job is not None
        runs.append(job.job_id)
        await anyio.sleep(0)

    queues = [backend.queue() for _ in range(3)]
    try:
        async with _runtime(note) as runtime:
            ids = [(await queues[0].enqueue("note", {"n": n})).id for n in range(60)]
            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    for q in queues:
                        tg.start_soon(
                            lambda q=q: Worker(q, runtime, concurrency=concurrency, poll_interval=0.05).run(drain=True)
                        )
        assert sorted(runs) == sorted(ids)
    finally:
        for q in queues:
            await q.aclose()


class _Nap:
    """A third-party runnable whose own task raises on input it trusted (sleep for a string)."""

    name = "nap"
    kind = "nap"
    description = "sleeps for input['seconds']"

    def input_schema(self) -> dict[str, Any]:
        return {"type": "object"}

    def output_schema(self) -> dict[str, Any]:
        return {}

    async def start(self, input: Any, *, runtime: keel.Runtime, tenant: str = "default") -> keel.Execution:
        log: keel.EventLog[keel.RuntimeEvent] = keel.EventLog()
        done = anyio.Event()

        class Nap:
            id, kind = keel.new_id("nap"), "nap"

            def __init__(self) -> None:
                self.tenant = tenant

            @property
            def status(self) -> keel.ExecutionStatus:
                return keel.ExecutionStatus.COMPLETED if done.is_set() else keel.ExecutionStatus.RUNNING

            def events(self, since: int = 0) -> AsyncIterator[keel.RuntimeEvent]:
                return log.follow(since, done.is_set)

            async def result(self) -> Any:
                await done.wait()
                return "rested"

            async def signal(self, name: str, payload: Any = None, *, request_id: str | None = None) -> None:
                raise keel.ConflictError("no signals")

            async def cancel(self, reason: str = "cancelled") -> None:
                done.set()

        async def nap() -> None:
            await anyio.sleep(input["seconds"])
            done.set()

        runtime.task_group.start_soon(nap)
        return Nap()


async def test_a_runnable_whose_task_crashes_fails_its_job_not_the_worker(queue: Queue) -> None:
    async with _runtime(_Nap()) as runtime:
        bad = await queue.enqueue("nap", {"seconds": "forever"}, max_attempts=1)
        good = await queue.enqueue("nap", {"seconds": 0}, max_attempts=1)
        with anyio.fail_after(30):
            await Worker(queue, runtime, poll_interval=0.05).run(drain=True)
        assert runtime.health() == (True, "ok")
    failed = await queue.get(bad.id)
    assert failed.status == JobStatus.FAILED and "TypeError" in failed.errors[0]["error"]
    assert (await queue.get(good.id)).status == JobStatus.COMPLETED


class _Sent(BaseModel):
    sent: int


async def _typed(input: Any) -> _Sent:
    return _Sent(sent=1)


async def _untyped(input):  # type: ignore[no-untyped-def]
    return 1


async def _anything(input: Any) -> Any:
    return 1


def test_a_tasks_output_schema_comes_from_its_return_annotation() -> None:
    assert task(_typed).output_schema()["properties"] == {"sent": {"title": "Sent", "type": "integer"}}
    assert task(_untyped).output_schema() == {} and task(_anything).output_schema() == {}
