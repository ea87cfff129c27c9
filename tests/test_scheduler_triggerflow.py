"""A TriggerFlow flow run by keel-scheduler's worker, reached as a runnable like any other: its
result is the job's, its wait is a ``task.waiting`` product event, and a signal matched by the
job's correlation id (a later webhook, say) continues it."""

from __future__ import annotations

import anyio

import keel
from keel.testing import make_host
from keel_scheduler import JobStatus, Queue, Worker
from keel_triggerflow import TriggerFlow
from keel_triggerflow import plugin as triggerflow_plugin


class Collect:
    name = "collect"

    def __init__(self) -> None:
        self.events: list[keel.ProductEvent] = []

    async def send(self, event: keel.ProductEvent) -> None:
        self.events.append(event)

    async def aclose(self) -> None:
        return None


async def test_a_flow_job_waits_and_a_correlated_signal_finishes_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    drafts: list[str] = []

    async def draft(ctx):  # type: ignore[no-untyped-def]
        drafts.append(ctx.value)
        return f"draft of {ctx.value}"

    review = TriggerFlow("review")
    review.to(draft).pause_for("approve", "approve the draft?").to(lambda ctx: {"published": ctx.value})
    runtime = keel.Runtime(make_host(triggerflow_plugin))
    runtime.use_store(keel.MemoryStore())
    runtime.add(review)
    channel = Collect()
    async with runtime, Queue(str(tmp_path / "jobs.db")) as queue:
        job = await queue.enqueue("review", "the tides report", correlation_id="report-7")
        worker = Worker(queue, runtime, poll_interval=0.05, lease=1.0, channels=[channel])
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            with anyio.fail_after(60):
                while not any(e.type == "task.waiting" for e in channel.events):
                    await anyio.sleep(0.05)
                await queue.signal("report-7", "approve", "approved by ana", request_id="mail-1")
                while (await queue.get(job.id)).status != JobStatus.COMPLETED:
                    await anyio.sleep(0.05)
            worker.stop()
        done = await queue.get(job.id)
    assert done.result == {"published": "approved by ana"} and drafts == ["the tides report"]
    assert [e.type for e in channel.events][-1] == "task.completed"


async def test_a_signal_that_comes_before_the_wait_is_kept_until_the_flow_waits(tmp_path) -> None:  # type: ignore[no-untyped-def]
    reached = anyio.Event()

    async def slow_draft(ctx):  # type: ignore[no-untyped-def]
        reached.set()
        await anyio.sleep(0.5)  # the approval arrives while this still runs
        return ctx.value

    review = TriggerFlow("slow_review")
    review.to(slow_draft).pause_for("approve").to(lambda ctx: {"published": ctx.value})
    runtime = keel.Runtime(make_host(triggerflow_plugin))
    runtime.use_store(keel.MemoryStore())
    runtime.add(review)
    async with runtime, Queue(str(tmp_path / "jobs.db")) as queue:
        job = await queue.enqueue("slow_review", "x", correlation_id="early")
        worker = Worker(queue, runtime, poll_interval=0.05, lease=1.0)
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            with anyio.fail_after(60):
                await reached.wait()
                await queue.signal("early", "approve", "yes", request_id="r1")
                while (await queue.get(job.id)).status != JobStatus.COMPLETED:
                    await anyio.sleep(0.05)
            worker.stop()
        assert (await queue.get(job.id)).result == {"published": "yes"}
