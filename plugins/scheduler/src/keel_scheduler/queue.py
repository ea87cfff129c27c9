"""The durable queue: jobs with dedup keys, leases, retries, a dead-letter state, and cancel.

A job names a runnable (``runtime.runnables``) and its input. It is ``queued`` until a worker
claims it: the claim sets ``running``, an owner and a lease (``lease_until``), and counts an
attempt. The worker renews the lease while the work runs; a completion or failure is accepted
only from the owner of the current attempt (a fence), so a worker whose lease expired and whose
job another worker took can no longer overwrite the outcome. A lease that expires (the worker was
killed) puts the job back to ``queued`` — or to ``failed`` (the dead-letter state) once it has
used all its attempts — with the cause kept in ``errors``.
"""

from __future__ import annotations

import builtins
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from keel import new_id
from keel_scheduler._db import Conn, Database, _Unique, open_database
from keel_scheduler.errors import DuplicateJob, JobNotFound, SchedulerError
from keel_scheduler.jobs import FINISHED, Job, JobStatus, delay_for, dumps

__all__ = ["Job", "JobStatus", "Queue"]  # Job and JobStatus live in keel_scheduler.jobs


class Queue:
    """The queue API over one database (``.keel/scheduler.db`` by default, or ``postgresql://...``).

    Producers call :meth:`enqueue`; workers (:class:`keel_scheduler.Worker`) claim; operators list,
    retry, cancel and purge. Every method is one transaction.
    """

    def __init__(self, database: Database | str | None = None, *, schema: str | None = None) -> None:
        self.db: Database = database if not isinstance(database, str | None) else open_database(database, schema=schema)

    async def aclose(self) -> None:
        await self.db.aclose()

    async def __aenter__(self) -> Queue:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    # ---------------------------------------------------------------------------------- enqueue

    async def enqueue(
        self,
        task: str,
        input: Any = None,
        *,
        queue: str = "default",
        id: str | None = None,
        dedup_key: str | None = None,
        on_duplicate: Literal["return", "reject"] = "return",
        debounce: float | None = None,
        priority: int = 0,
        delay: float = 0.0,
        run_at: float | None = None,
        max_attempts: int = 3,
        backoff: float = 1.0,
        backoff_max: float = 300.0,
        concurrency_key: str | None = None,
        correlation_id: str | None = None,
        tenant: str = "default",
    ) -> Job:
        """Add a job (committed when this returns).

        :param dedup_key: at most one job per key, ever (until purged). A second enqueue with the
            key returns the existing job (``on_duplicate="return"``) or raises
            :class:`DuplicateJob` (``"reject"``). An explicit ``id`` dedups the same way.
        :param debounce: with a dedup key: when the existing job has not started yet, move it
            ``debounce`` seconds from now and give it this input (the last of a burst wins).
        :param concurrency_key: jobs with one key run one at a time, across every worker.
        :param correlation_id: a later :meth:`signal` with this id reaches the job's execution.
        """
        async with self.db.transaction() as conn:
            job, created = await self.enqueue_in(
                conn, task, input, queue=queue, id=id, dedup_key=dedup_key, debounce=debounce, priority=priority,
                delay=delay, run_at=run_at, max_attempts=max_attempts, backoff=backoff, backoff_max=backoff_max,
                concurrency_key=concurrency_key, correlation_id=correlation_id, tenant=tenant,
            )  # fmt: skip
        if not created and on_duplicate == "reject":
            raise DuplicateJob(dedup_key or job.id, job.id)
        return job

    async def enqueue_in(
        self,
        conn: Conn,
        task: str,
        input: Any = None,
        *,
        queue: str = "default",
        id: str | None = None,
        dedup_key: str | None = None,
        debounce: float | None = None,
        priority: int = 0,
        delay: float = 0.0,
        run_at: float | None = None,
        max_attempts: int = 3,
        backoff: float = 1.0,
        backoff_max: float = 300.0,
        concurrency_key: str | None = None,
        correlation_id: str | None = None,
        schedule_id: str | None = None,
        scheduled_for: float | None = None,
        tenant: str = "default",
    ) -> tuple[Job, bool]:
        """:meth:`enqueue` inside a caller's transaction (an inbox row and its job commit together).
        Returns the job and whether it was created (``False``: the existing one)."""
        if not task:
            raise SchedulerError("enqueue: task must name a runnable")
        if max_attempts < 1:
            raise SchedulerError(f"enqueue: max_attempts must be at least 1, not {max_attempts}")
        if backoff < 0 or backoff_max < 0 or delay < 0:
            raise SchedulerError("enqueue: backoff, backoff_max and delay must not be negative")
        now = time.time()
        job_id = id or new_id("job")
        rows = await conn.fetch(
            """INSERT INTO {jobs} (id, queue, task, input, tenant, status, priority, run_at, attempts, max_attempts,
                   backoff, backoff_max, dedup_key, concurrency_key, correlation_id, schedule_id, scheduled_for,
                   created_at, errors)
               VALUES ($1, $2, $3, $4, $5, 'queued', $6, $7, 0, $8, $9, $10, $11, $12, $13, $14, $15, $16, '[]')
               ON CONFLICT DO NOTHING RETURNING *""",
            job_id, queue, task, dumps(input), tenant, priority, run_at if run_at is not None else now + delay,
            max_attempts, float(backoff), float(backoff_max), dedup_key, concurrency_key,
            correlation_id or job_id, schedule_id, scheduled_for, now,
        )  # fmt: skip
        if rows:
            await self.db.notify(conn, queue)
            return Job.from_row(rows[0]), True
        found = await conn.fetch("SELECT * FROM {jobs} WHERE id = $1 OR dedup_key = $2", job_id, dedup_key)
        if not found:
            raise SchedulerError(f"enqueue: job {job_id} was refused by the database but no duplicate was found")
        existing = Job.from_row(found[0])
        if debounce is not None and existing.status == JobStatus.QUEUED and existing.attempts == 0:
            moved = await conn.fetch(
                "UPDATE {jobs} SET run_at = $2, input = $3 WHERE id = $1 AND status = 'queued' RETURNING *",
                existing.id, now + debounce, dumps(input),
            )  # fmt: skip
            if moved:
                existing = Job.from_row(moved[0])
        return existing, False

    # ------------------------------------------------------------------------------- operators

    async def get(self, job_id: str) -> Job:
        async with self.db.transaction() as conn:
            rows = await conn.fetch("SELECT * FROM {jobs} WHERE id = $1", job_id)
        if not rows:
            raise JobNotFound(f"no job {job_id!r} (it may have been purged); `keel queue ls` lists the jobs")
        return Job.from_row(rows[0])

    async def list(
        self,
        *,
        status: str | Iterable[str] | None = None,
        queue: str | None = None,
        schedule_id: str | None = None,
        limit: int = 100,
    ) -> builtins.list[Job]:
        """Jobs, newest first, filtered by status(es), queue and schedule."""
        statuses = [status] if isinstance(status, str) else list(status or [])
        for s in statuses:
            if s not in {m.value for m in JobStatus}:
                raise SchedulerError(f"unknown job status {s!r}; one of {', '.join(m.value for m in JobStatus)}")
        clauses, args = [], []
        if statuses:
            args.append(self.db.list_param(statuses))
            clauses.append(f"status {self.db.in_list(len(args))}")
        if queue:
            args.append(queue)
            clauses.append(f"queue = ${len(args)}")
        if schedule_id:
            args.append(schedule_id)
            clauses.append(f"schedule_id = ${len(args)}")
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        args.append(limit)
        async with self.db.transaction() as conn:
            rows = await conn.fetch(
                f"SELECT * FROM {{jobs}} {where} ORDER BY created_at DESC, id DESC LIMIT ${len(args)}", *args
            )
        return [Job.from_row(r) for r in rows]

    async def counts(self) -> dict[str, dict[str, int]]:
        """Jobs per queue and status."""
        async with self.db.transaction() as conn:
            rows = await conn.fetch("SELECT queue, status, COUNT(*) AS n FROM {jobs} GROUP BY queue, status")
        out: dict[str, dict[str, int]] = {}
        for row in rows:
            out.setdefault(row["queue"], {})[row["status"]] = int(row["n"])
        return out

    async def cancel(self, job_id: str, reason: str = "cancelled") -> Job:
        """Cancel a queued or running job. A running job's worker sees it at its next lease
        renewal and cancels the execution; its outcome is then not recorded. A finished job is
        left as it is."""
        async with self.db.transaction() as conn:
            rows = await conn.fetch(
                """UPDATE {jobs} SET status = 'cancelled', finished_at = $2, lease_owner = NULL, lease_until = NULL
                   WHERE id = $1 AND status IN ('queued', 'running') RETURNING *""",
                job_id, time.time(),
            )  # fmt: skip
            if rows:
                job = Job.from_row(rows[0])
                await self._append_error(conn, job, f"cancelled: {reason}", "operator")
                return job
        return await self.get(job_id)

    async def retry(self, job_id: str) -> Job:
        """Queue a failed (dead-lettered) or cancelled job again, with a fresh set of attempts."""
        async with self.db.transaction() as conn:
            rows = await conn.fetch(
                """UPDATE {jobs} SET status = 'queued', attempts = 0, run_at = $2, finished_at = NULL, result = NULL
                   WHERE id = $1 AND status IN ('failed', 'cancelled') RETURNING *""",
                job_id, time.time(),
            )  # fmt: skip
            if rows:
                await self.db.notify(conn, rows[0]["queue"])
                return Job.from_row(rows[0])
        job = await self.get(job_id)
        raise SchedulerError(f"job {job_id} is {job.status.value}: only failed or cancelled jobs can be retried")

    async def purge(
        self, *, status: Iterable[str] = FINISHED, older_than: float = 0.0, queue: str | None = None
    ) -> int:
        """Delete finished jobs (by default every finished one) older than ``older_than`` seconds,
        and the inbox rows and signals that pointed at them. Their dedup keys are free again."""
        statuses = list(status)
        if bad := [s for s in statuses if s not in FINISHED]:
            raise SchedulerError(f"purge: only finished jobs can be purged ({', '.join(FINISHED)}), not {bad}")
        args: builtins.list[Any] = [self.db.list_param(statuses), time.time() - older_than]
        extra = ""
        if queue:
            args.append(queue)
            extra = " AND queue = $3"
        async with self.db.transaction() as conn:
            ids = [
                r["id"]
                for r in await conn.fetch(
                    f"""DELETE FROM {{jobs}} WHERE status {self.db.in_list(1)} AND COALESCE(finished_at, created_at) <= $2
                        {extra} RETURNING id, correlation_id""",
                    *args,
                )
            ]
            if ids:
                await conn.execute(f"DELETE FROM {{inbox}} WHERE job_id {self.db.in_list(1)}", self.db.list_param(ids))
        return len(ids)

    async def signal(
        self, correlation_id: str, name: str, payload: Any = None, *, request_id: str | None = None
    ) -> str:
        """Record a signal for the execution of the job with this correlation id; the worker
        that runs it delivers it with ``execution.signal(name, payload, request_id=...)``."""
        async with self.db.transaction() as conn:
            return await self.signal_in(conn, correlation_id, name, payload, request_id=request_id)

    async def signal_in(
        self, conn: Conn, correlation_id: str, name: str, payload: Any = None, *, request_id: str | None = None
    ) -> str:
        signal_id = new_id("sig")
        await conn.execute(
            """INSERT INTO {signals} (id, correlation_id, name, payload, request_id, created_at)
               VALUES ($1, $2, $3, $4, $5, $6)""",
            signal_id, correlation_id, name, dumps(payload), request_id or signal_id, time.time(),
        )  # fmt: skip
        return signal_id

    async def waiting_for(self, correlation_id: str) -> Job | None:
        """The unfinished job with this correlation id, if any."""
        async with self.db.transaction() as conn:
            rows = await conn.fetch(
                "SELECT * FROM {jobs} WHERE correlation_id = $1 AND status IN ('queued', 'running') LIMIT 1",
                correlation_id,
            )
        return Job.from_row(rows[0]) if rows else None

    # --------------------------------------------------------------------------------- workers

    async def claim(
        self,
        owner: str,
        *,
        queues: Iterable[str] = ("default",),
        limit: int = 1,
        lease: float = 30.0,
        queue_limits: Mapping[str, int] | None = None,
        rate_limits: Mapping[str, float] | None = None,
    ) -> builtins.list[Job]:
        """Claim up to ``limit`` due jobs for ``owner``, highest priority first, then oldest.

        :param queue_limits: per queue, the most jobs running at once across all workers.
        :param rate_limits: per queue, the most jobs started per second across all workers (a
            sliding one-second window over the jobs' start times).
        """
        queue_limits = dict(queue_limits or {})
        rate_limits = dict(rate_limits or {})
        for name, rate in rate_limits.items():
            if rate <= 0:
                raise SchedulerError(f"rate limit of queue {name!r} must be positive, not {rate}")
        names = list(queues)
        limited = set(queue_limits) | set(rate_limits)
        free = [q for q in names if q not in limited]
        claimed: builtins.list[Job] = []
        now = time.time()
        if free:
            claimed += await self._claim_some(None, owner, free, limit, now, lease)
        for queue in [q for q in names if q in limited]:
            if len(claimed) >= limit:
                break
            try:
                async with self.db.transaction() as conn:
                    if self.db.dialect == "postgres":  # serialise the claims of a limited queue, then count
                        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"keel_queue:{queue}")
                    room = limit - len(claimed)
                    if queue in queue_limits:
                        running = await conn.fetch(
                            "SELECT COUNT(*) AS n FROM {jobs} WHERE queue = $1 AND status = 'running'", queue
                        )
                        room = min(room, queue_limits[queue] - int(running[0]["n"]))
                    if queue in rate_limits:  # a window of 1 s, or longer for less than one per second
                        window = max(1.0, 1.0 / rate_limits[queue])
                        recent = await conn.fetch(
                            "SELECT COUNT(*) AS n FROM {jobs} WHERE queue = $1 AND started_at > $2", queue, now - window
                        )
                        allowed = max(1, int(rate_limits[queue] * window))
                        room = min(room, allowed - int(recent[0]["n"]))
                    if room > 0:
                        claimed += await self._claim_some(conn, owner, [queue], room, now, lease)
            except _Unique:  # a concurrency key raced: this queue waits for the next round
                continue
        return claimed

    async def _claim_some(
        self, conn: Conn | None, owner: str, queues: builtins.list[str], limit: int, now: float, lease: float
    ) -> builtins.list[Job]:
        try:
            return await self._claim_statement(conn, owner, queues, limit, now, lease)
        except _Unique:
            # two jobs of one concurrency key in the batch (or another worker took the key first):
            # one at a time then, each claim seeing the key the previous one took
            if conn is not None:
                raise
        claimed: builtins.list[Job] = []
        for _ in range(limit):
            try:
                got = await self._claim_statement(None, owner, queues, 1, now, lease)
            except _Unique:
                break
            if not got:
                break
            claimed += got
        return claimed

    async def _claim_statement(
        self, conn: Conn | None, owner: str, queues: builtins.list[str], limit: int, now: float, lease: float
    ) -> builtins.list[Job]:
        # One statement. Outside a caller's transaction it is a claim whose loss on a database crash
        # only means the job runs again (Database.advisory), so it does not wait for the WAL flush.
        # A job with a concurrency key is due only while no job of its key runs; the unique index on
        # running keys refuses a batch that would start two.
        rows = await (conn.fetch if conn is not None else self.db.advisory)(
            f"""UPDATE {{jobs}} SET status = 'running', lease_owner = $1, lease_until = $2, attempts = attempts + 1,
                   started_at = $3
                WHERE id IN (SELECT j.id FROM {{jobs}} j WHERE j.status = 'queued' AND j.run_at <= $3
                    AND j.queue {self.db.in_list(4)}
                    AND (j.concurrency_key IS NULL OR NOT EXISTS (SELECT 1 FROM {{jobs}} r
                         WHERE r.concurrency_key = j.concurrency_key AND r.status = 'running'))
                    ORDER BY j.priority DESC, j.run_at, j.id LIMIT $5{self.db.skip_locked})
                RETURNING *""",
            owner, now + lease, now, self.db.list_param(queues), limit,
        )  # fmt: skip
        jobs = [Job.from_row(r) for r in rows]
        jobs.sort(key=lambda j: (-j.priority, j.run_at, j.id))
        return jobs

    async def renew(self, owner: str, job_ids: Iterable[str], lease: float = 30.0) -> set[str]:
        """Extend the leases of ``owner``'s running jobs; returns the ids still held (a missing id
        was cancelled, or its lease expired and another worker has it)."""
        ids = list(job_ids)
        if not ids:
            return set()
        rows = await self.db.advisory(  # a lost renewal only shortens a lease
            f"""UPDATE {{jobs}} SET lease_until = $1
                WHERE id {self.db.in_list(2)} AND lease_owner = $3 AND status = 'running' RETURNING id""",
            time.time() + lease, self.db.list_param(ids), owner,
        )  # fmt: skip
        return {r["id"] for r in rows}

    async def complete(self, job: Job, owner: str, result: Any = None) -> bool:
        """Record success; ``False`` when ``owner`` no longer holds this attempt (nothing recorded)."""
        [done] = await self.complete_many([(job, owner, result)])
        return done

    async def complete_many(self, items: Sequence[tuple[Job, str, Any]]) -> builtins.list[bool]:
        """Record several successes in one transaction (one commit, one disk flush for all): each
        is recorded only when its owner still holds that attempt. Returns, per item, whether it was."""
        if not items:
            return []
        now = time.time()
        ids, owners, attempts, results = (
            [j.id for j, _, _ in items], [o for _, o, _ in items], [j.attempts for j, _, _ in items],
            [dumps(r) for _, _, r in items],
        )  # fmt: skip
        async with self.db.transaction() as conn:
            if self.db.dialect == "postgres":
                rows = await conn.fetch(
                    """UPDATE {jobs} AS j SET status = 'completed', finished_at = $5, result = u.result,
                           lease_owner = NULL, lease_until = NULL
                       FROM unnest($1::text[], $2::text[], $3::int[], $4::text[]) AS u(id, owner, attempts, result)
                       WHERE j.id = u.id AND j.lease_owner = u.owner AND j.attempts = u.attempts
                         AND j.status = 'running'
                       RETURNING j.id""",
                    ids, owners, attempts, results, now,
                )  # fmt: skip
                done = {r["id"] for r in rows}
            else:
                done = set()
                for job_id, owner, attempt, result in zip(ids, owners, attempts, results, strict=True):
                    if await conn.execute(
                        """UPDATE {jobs} SET status = 'completed', finished_at = $4, result = $5,
                               lease_owner = NULL, lease_until = NULL
                           WHERE id = $1 AND lease_owner = $2 AND attempts = $3 AND status = 'running'""",
                        job_id, owner, attempt, now, result,
                    ):  # fmt: skip
                        done.add(job_id)
            schedules = sorted({j.schedule_id for j, _, _ in items if j.schedule_id and j.id in done})
            if schedules:
                await conn.execute(
                    f"UPDATE {{schedules}} SET failures = 0 WHERE id {self.db.in_list(1)}",
                    self.db.list_param(schedules),
                )
        return [j.id in done for j, _, _ in items]

    async def fail(self, job: Job, owner: str, error: str, *, retry: bool = True) -> JobStatus | None:
        """Record a failed attempt: queue it again after a backoff, or dead-letter it (``failed``)
        when its attempts are used up or ``retry`` is false. ``None`` when ``owner`` no longer
        holds this attempt."""
        async with self.db.transaction() as conn:
            return await self._fail_in(conn, job, owner, error, retry=retry, fence=True)

    async def _fail_in(
        self, conn: Conn, job: Job, owner: str, error: str, *, retry: bool, fence: bool
    ) -> JobStatus | None:
        now = time.time()
        final = not retry or job.attempts >= job.max_attempts
        status = JobStatus.FAILED if final else JobStatus.QUEUED
        entry = {"attempt": job.attempts, "error": error[:4000], "at": now, "worker": owner}
        fence_sql = " AND lease_owner = $6 AND attempts = $7" if fence else ""
        args: builtins.list[Any] = [
            job.id,
            status.value,
            now if final else now + delay_for(job),
            now if final else None,
        ]
        rows = await conn.fetch(
            f"""UPDATE {{jobs}} SET status = $2, run_at = $3, finished_at = $4, lease_owner = NULL,
                   lease_until = NULL, errors = $5
                WHERE id = $1 AND status = 'running'{fence_sql} RETURNING id""",
            *args, dumps([*job.errors, entry]), *([owner, job.attempts] if fence else []),
        )  # fmt: skip
        if not rows:
            return None
        if final and job.schedule_id:
            await self._count_schedule_failure(conn, job.schedule_id)
        return status

    async def _count_schedule_failure(self, conn: Conn, schedule_id: str) -> None:
        rows = await conn.fetch("SELECT spec, failures FROM {schedules} WHERE id = $1", schedule_id)
        if not rows:
            return
        limit = json.loads(rows[0]["spec"]).get("pause_after_failures")
        failures = int(rows[0]["failures"]) + 1
        pause = 1 if limit and failures >= limit else 0
        await conn.execute(
            "UPDATE {schedules} SET failures = $2, paused = CASE WHEN $3 = 1 THEN 1 ELSE paused END WHERE id = $1",
            schedule_id, failures, pause,
        )  # fmt: skip

    async def _append_error(self, conn: Conn, job: Job, error: str, who: str) -> None:
        entry = {"attempt": job.attempts, "error": error, "at": time.time(), "worker": who}
        await conn.execute("UPDATE {jobs} SET errors = $2 WHERE id = $1", job.id, dumps([*job.errors, entry]))

    async def release_expired(self) -> int:
        """Put the jobs whose lease expired (their worker died) back in the queue, or dead-letter
        them when they have used every attempt; the cause is kept in ``errors``."""
        released = 0
        async with self.db.transaction() as conn:
            rows = await conn.fetch(
                f"""SELECT * FROM {{jobs}} WHERE status = 'running' AND lease_until < $1
                    ORDER BY lease_until LIMIT 100{self.db.skip_locked}""",
                time.time(),
            )
            for row in rows:
                job = Job.from_row(row)
                cause = f"lease expired: worker {job.lease_owner} stopped renewing (killed or hung) during attempt {job.attempts}"
                if await self._fail_in(conn, job, job.lease_owner or "?", cause, retry=True, fence=False):
                    released += 1
            if released:
                await self.db.notify(conn, "*")
        return released

    async def pending_signals(self, correlation_ids: Iterable[str]) -> builtins.list[dict[str, Any]]:
        ids = list(correlation_ids)
        if not ids:
            return []
        async with self.db.transaction() as conn:
            rows = await conn.fetch(
                f"""SELECT * FROM {{signals}} WHERE delivered_at IS NULL AND correlation_id {self.db.in_list(1)}
                    ORDER BY created_at, id""",
                self.db.list_param(ids),
            )
        for row in rows:
            row["payload"] = json.loads(row["payload"])
        return builtins.list(rows)

    async def mark_delivered(self, signal_id: str) -> None:
        async with self.db.transaction() as conn:
            await conn.execute("UPDATE {signals} SET delivered_at = $2 WHERE id = $1", signal_id, time.time())
