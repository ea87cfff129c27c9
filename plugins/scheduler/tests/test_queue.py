"""The queue on both backends: dedup, claims and leases, retries and the dead-letter state, delays,
priorities, concurrency limits, cancel, debounce."""

from __future__ import annotations

import anyio
import pytest

from keel_scheduler import DuplicateJob, JobNotFound, JobStatus, Queue, SchedulerError


async def test_dedup_key_returns_the_existing_job_or_rejects(queue: Queue) -> None:
    first = await queue.enqueue("t", {"n": 1}, dedup_key="order-7")
    again = await queue.enqueue("t", {"n": 2}, dedup_key="order-7")
    assert again.id == first.id and again.input == {"n": 1}
    with pytest.raises(DuplicateJob) as caught:
        await queue.enqueue("t", {"n": 3}, dedup_key="order-7", on_duplicate="reject")
    assert caught.value.existing_id == first.id
    same_id = await queue.enqueue("t", id=first.id)
    assert same_id.id == first.id
    assert len(await queue.list()) == 1


async def test_claim_complete_and_the_fence(queue: Queue) -> None:
    job = await queue.enqueue("t", {"x": 1})
    [claimed] = await queue.claim("w1", limit=5)
    assert claimed.id == job.id and claimed.status == JobStatus.RUNNING and claimed.attempts == 1
    assert await queue.claim("w2", limit=5) == []  # nobody else gets it
    assert not await queue.complete(claimed, "w2", "stolen")  # not the owner: nothing recorded
    assert await queue.complete(claimed, "w1", {"ok": True})
    done = await queue.get(job.id)
    assert done.status == JobStatus.COMPLETED and done.result == {"ok": True}
    assert not await queue.complete(claimed, "w1", "twice")


async def test_retries_with_backoff_then_dead_letter_with_every_cause(queue: Queue) -> None:
    job = await queue.enqueue("t", max_attempts=3, backoff=0.0)
    for attempt in (1, 2, 3):
        [claimed] = await queue.claim("w", limit=1)
        assert claimed.attempts == attempt
        status = await queue.fail(claimed, "w", f"boom {attempt}")
        assert status == (JobStatus.FAILED if attempt == 3 else JobStatus.QUEUED)
    dead = await queue.get(job.id)
    assert dead.status == JobStatus.FAILED
    assert [e["error"] for e in dead.errors] == ["boom 1", "boom 2", "boom 3"]
    assert await queue.claim("w", limit=1) == []
    again = await queue.retry(job.id)
    assert again.status == JobStatus.QUEUED and again.attempts == 0


async def test_backoff_delays_the_next_attempt(queue: Queue) -> None:
    await queue.enqueue("t", max_attempts=2, backoff=3600.0, backoff_max=7200.0)
    [claimed] = await queue.claim("w")
    assert await queue.fail(claimed, "w", "later") == JobStatus.QUEUED
    assert await queue.claim("w") == []  # due in about an hour, not now
    [waiting] = await queue.list(status="queued")
    assert waiting.run_at > claimed.started_at + 1800  # type: ignore[operator]


async def test_delayed_work_and_priorities(queue: Queue) -> None:
    await queue.enqueue("t", {"n": "later"}, delay=3600)
    await queue.enqueue("t", {"n": "low"}, priority=0)
    await queue.enqueue("t", {"n": "high"}, priority=10)
    await queue.enqueue("t", {"n": "mid"}, priority=5)
    claimed = await queue.claim("w", limit=10)
    assert [j.input["n"] for j in claimed] == ["high", "mid", "low"]


async def test_queues_are_separate(queue: Queue) -> None:
    await queue.enqueue("t", queue="emails")
    assert await queue.claim("w", queues=["default"]) == []
    assert len(await queue.claim("w", queues=["emails", "default"])) == 1


async def test_one_running_job_per_concurrency_key(queue: Queue) -> None:
    a = await queue.enqueue("t", {"n": 1}, concurrency_key="customer-1")
    await queue.enqueue("t", {"n": 2}, concurrency_key="customer-1")
    await queue.enqueue("t", {"n": 3}, concurrency_key="customer-2")
    first = await queue.claim("w1", limit=10)
    assert sorted(j.input["n"] for j in first) == [1, 3]
    assert await queue.claim("w2", limit=10) == []  # customer-1 is busy
    [job_a] = [j for j in first if j.id == a.id]
    await queue.complete(job_a, "w1")
    [second] = await queue.claim("w2", limit=10)
    assert second.input == {"n": 2}


async def test_queue_limit_holds_across_workers(queue: Queue) -> None:
    for n in range(5):
        await queue.enqueue("t", {"n": n}, queue="slow")
    limits = {"slow": 2}
    got = await queue.claim("w1", queues=["slow"], limit=1, queue_limits=limits)
    got += await queue.claim("w2", queues=["slow"], limit=5, queue_limits=limits)
    assert len(got) == 2
    assert await queue.claim("w3", queues=["slow"], limit=5, queue_limits=limits) == []


async def test_rate_limit_holds_across_workers(queue: Queue) -> None:
    for n in range(4):
        await queue.enqueue("t", {"n": n}, queue="api")
    limits = {"api": 0.1}  # one start per ten seconds, whoever claims
    got = await queue.claim("w1", queues=["api"], limit=5, rate_limits=limits)
    got += await queue.claim("w2", queues=["api"], limit=5, rate_limits=limits)
    assert len(got) == 1
    assert len(await queue.claim("w3", queues=["api"], limit=5)) == 3  # without the limit: the rest
    with pytest.raises(SchedulerError, match="positive"):
        await queue.claim("w", queues=["api"], rate_limits={"api": 0})


async def test_an_expired_lease_releases_the_job_with_the_cause(queue: Queue) -> None:
    job = await queue.enqueue("t", max_attempts=2, backoff=0.0)
    await queue.claim("dead-worker", lease=0.2)
    with anyio.fail_after(10):
        while not await queue.release_expired():
            await anyio.sleep(0.1)
    back = await queue.get(job.id)
    assert back.status == JobStatus.QUEUED
    assert "lease expired" in back.errors[0]["error"] and "dead-worker" in back.errors[0]["error"]
    [again] = await queue.claim("w2", lease=0.2)
    assert again.attempts == 2
    assert not await queue.complete(job.model_copy(update={"attempts": 1}), "dead-worker")  # the old attempt is fenced
    with anyio.fail_after(10):
        while not await queue.release_expired():
            await anyio.sleep(0.1)
    assert (await queue.get(job.id)).status == JobStatus.FAILED  # both attempts used: dead-lettered


async def test_cancel_queued_and_running(queue: Queue) -> None:
    queued = await queue.enqueue("t")
    assert (await queue.cancel(queued.id)).status == JobStatus.CANCELLED
    running = await queue.enqueue("t")
    [claimed] = await queue.claim("w")
    assert await queue.renew("w", [claimed.id]) == {claimed.id}
    await queue.cancel(running.id, "operator said so")
    assert await queue.renew("w", [claimed.id]) == set()  # the worker learns it lost the job
    assert not await queue.complete(claimed, "w", "late")
    job = await queue.get(running.id)
    assert job.status == JobStatus.CANCELLED and "operator said so" in job.errors[-1]["error"]


async def test_debounce_moves_the_pending_job_and_keeps_the_last_input(queue: Queue) -> None:
    first = await queue.enqueue("t", {"v": 1}, dedup_key="user-9", debounce=3600)
    second = await queue.enqueue("t", {"v": 2}, dedup_key="user-9", debounce=3600)
    assert second.id == first.id and second.input == {"v": 2} and second.run_at >= first.run_at


async def test_purge_frees_dedup_keys(queue: Queue) -> None:
    job = await queue.enqueue("t", dedup_key="k")
    [claimed] = await queue.claim("w")
    await queue.complete(claimed, "w")
    assert await queue.purge() == 1
    with pytest.raises(JobNotFound):
        await queue.get(job.id)
    assert (await queue.enqueue("t", dedup_key="k")).id != job.id


async def test_bad_input_is_a_clear_error(queue: Queue) -> None:
    with pytest.raises(SchedulerError, match="max_attempts"):
        await queue.enqueue("t", max_attempts=0)
    with pytest.raises(SchedulerError, match="JSON"):
        await queue.enqueue("t", {"x": object()})
    with pytest.raises(SchedulerError, match="unknown job status"):
        await queue.list(status="done")
    with pytest.raises(SchedulerError, match="only failed or cancelled"):
        await queue.retry((await queue.enqueue("t")).id)
