"""Webhook intake: verify the sender, record the delivery once, enqueue, answer fast.

``POST /hooks/<source>`` with a JSON body, signed as Keel's own webhook channel signs
(``X-Keel-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body>``). Per delivery:

1. unknown source → 404; body over ``max_body`` → 413 (read no further);
2. missing or malformed signature, a timestamp outside ``tolerance``, or a wrong MAC (compared in
   constant time) → 401; the body is not parsed before the signature is checked;
3. a body that is not JSON → 400;
4. one transaction: the inbox row (source + delivery id — the sender's header, else a SHA-256 of
   the body) and the job it enqueues — or, when ``correlation_field`` names a waiting job, the
   signal that resumes it. A delivery id seen before → 200 with the first delivery's job, and
   nothing new. Accepted → 202.

The work never runs here: a worker picks the job up.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from keel_scheduler.errors import SchedulerError
from keel_scheduler.jobs import delivery_hash
from keel_scheduler.queue import Queue
from keel_scheduler.settings import SourceSettings

__all__ = ["Intake", "NoTarget", "Reply", "record_delivery", "sign"]


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The signature header value for ``body`` (what a sender puts in ``X-Keel-Signature``)."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    mac = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={mac}"


@dataclass
class Reply:
    status: int
    body: dict[str, Any]


class _Source:
    def __init__(self, name: str, settings: SourceSettings, env: Mapping[str, str]):
        self.name = name
        self.settings = settings
        secret = settings.secret
        if settings.secret_env:
            secret = env.get(settings.secret_env)
            if not secret:
                raise SchedulerError(
                    f"intake source {name!r}: the environment variable {settings.secret_env} (secret_env) is not set; "
                    "set it to the sender's signing secret"
                )
        if not secret:
            raise SchedulerError(
                f"intake source {name!r} has no secret: set secret_env = 'VAR' in [settings.scheduler.sources.{name}] "
                "(unsigned deliveries are never accepted)"
            )
        if not settings.task and not settings.correlation_field:
            raise SchedulerError(
                f"intake source {name!r}: set task = '<runnable>' (what a delivery enqueues) or correlation_field"
            )
        self.secret = secret.encode()

    def verify(self, header: str | None, body: bytes, now: float) -> str | None:
        """``None`` when the signature is good, else why it is not."""
        if not header:
            return f"missing {self.settings.signature_header} header"
        parts = dict(p.strip().split("=", 1) for p in header.split(",") if "=" in p)
        stamp, mac = parts.get("t", ""), parts.get("v1", "")
        if not stamp.isdigit() or not mac:
            return "malformed signature header (expected t=<unix seconds>,v1=<hex>)"
        if abs(now - int(stamp)) > self.settings.tolerance:
            return f"stale or future timestamp (more than {self.settings.tolerance:g}s off): a replay is refused"
        expected = hmac.new(self.secret, stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode(), mac.encode()):
            return "signature does not match the body"
        return None


class Intake:
    """Webhook intake over a :class:`Queue`: :meth:`receive` per delivery, :meth:`asgi` to serve."""

    def __init__(
        self,
        queue: Queue,
        sources: Mapping[str, SourceSettings | dict[str, Any]],
        *,
        env: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if env is None else env
        self.queue = queue
        self.sources = {
            name: _Source(name, s if isinstance(s, SourceSettings) else SourceSettings.model_validate(s), env)
            for name, s in sources.items()
        }
        self.counts: dict[int, int] = {}

    async def receive(self, source: str, headers: Mapping[str, str], body: bytes) -> Reply:
        reply = await self._receive(source, {k.lower(): v for k, v in headers.items()}, body)
        self.counts[reply.status] = self.counts.get(reply.status, 0) + 1
        return reply

    async def _receive(self, name: str, headers: Mapping[str, str], body: bytes) -> Reply:
        source = self.sources.get(name)
        if source is None:
            return Reply(404, {"error": f"no webhook source {name!r}"})
        s = source.settings
        if len(body) > s.max_body:
            return Reply(413, {"error": f"body over {s.max_body} bytes"})
        problem = source.verify(headers.get(s.signature_header.lower()), body, time.time())
        if problem is not None:
            return Reply(401, {"error": problem})
        try:
            payload = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            return Reply(400, {"error": f"body is not JSON: {err}"})
        delivery = headers.get(s.delivery_header.lower()) or delivery_hash(name, body)
        if len(delivery) > 200:
            return Reply(400, {"error": f"{s.delivery_header} is longer than 200 characters"})
        correlation = payload.get(s.correlation_field) if s.correlation_field and isinstance(payload, dict) else None
        try:
            return await self._record(source, delivery, payload, correlation if isinstance(correlation, str) else None)
        except NoTarget as err:
            return Reply(422, {"error": str(err)})
        except (SchedulerError, OSError) as err:
            return Reply(503, {"error": f"the queue is unavailable; retry later ({type(err).__name__})"})

    async def _record(self, source: _Source, delivery: str, payload: Any, correlation: str | None) -> Reply:
        s = source.settings
        status, body = await record_delivery(
            self.queue, source.name, delivery, payload, task=s.task, job_queue=s.queue, max_attempts=s.max_attempts,
            correlation=correlation, signal=s.signal,
        )  # fmt: skip
        return Reply(status, body)

    # ---------------------------------------------------------------------------------- ASGI

    def asgi(self) -> Callable[[dict[str, Any], Any, Any], Awaitable[None]]:
        """A bare ASGI app: ``POST /hooks/<source>``, ``GET /healthz``."""

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "lifespan":
                while True:
                    message = await receive()
                    if message["type"] == "lifespan.startup":
                        await send({"type": "lifespan.startup.complete"})
                    elif message["type"] == "lifespan.shutdown":
                        await send({"type": "lifespan.shutdown.complete"})
                        return
            if scope["type"] != "http":
                return
            path: str = scope["path"]
            if path == "/healthz" and scope["method"] == "GET":
                return await _respond(send, Reply(200, {"ok": True, "sources": sorted(self.sources)}))
            if not path.startswith("/hooks/"):
                return await _respond(send, Reply(404, {"error": "not found; POST /hooks/<source>"}))
            if scope["method"] != "POST":
                return await _respond(send, Reply(405, {"error": "use POST"}))
            name = path[len("/hooks/") :]
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            limit = self.sources[name].settings.max_body if name in self.sources else 0
            declared = headers.get("content-length", "")
            if name in self.sources and declared.isdigit() and int(declared) > limit:
                return await _respond(send, await self._count(Reply(413, {"error": f"body over {limit} bytes"})))
            chunks, size = [], 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                size += len(chunk)
                if name in self.sources and size > limit:
                    return await _respond(send, await self._count(Reply(413, {"error": f"body over {limit} bytes"})))
                chunks.append(chunk)
                if not message.get("more_body"):
                    break
            await _respond(send, await self.receive(name, headers, b"".join(chunks)))

        return app

    async def _count(self, reply: Reply) -> Reply:
        self.counts[reply.status] = self.counts.get(reply.status, 0) + 1
        return reply


class NoTarget(SchedulerError):
    """A delivery names no waiting job and its source enqueues no task: nothing was recorded."""

    code = "scheduler.no_target"


async def _respond(send: Any, reply: Reply) -> None:
    body = json.dumps(reply.body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": reply.status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def record_delivery(
    queue: Queue,
    source: str,
    delivery: str,
    payload: Any,
    *,
    task: str | None,
    job_queue: str = "default",
    max_attempts: int = 5,
    correlation: str | None = None,
    signal: str = "webhook",
) -> tuple[int, dict[str, Any]]:
    """Record one delivery of ``source`` once: its inbox row and its job — or, when ``correlation``
    names a waiting job, the signal for it — in one transaction. ``(202, ...)`` when recorded now,
    ``(200, {"duplicate": True, ...})`` when this delivery id was recorded before. Committed when it
    returns: a broker source acknowledges its message only after that."""
    async with queue.db.transaction() as conn:
        inserted = await conn.fetch(
            """INSERT INTO {inbox} (source, delivery_id, job_id, received_at) VALUES ($1, $2, NULL, $3)
               ON CONFLICT DO NOTHING RETURNING delivery_id""",
            source, delivery, time.time(),
        )  # fmt: skip
        if not inserted:
            rows = await conn.fetch(
                "SELECT job_id FROM {inbox} WHERE source = $1 AND delivery_id = $2", source, delivery
            )
            return 200, {"duplicate": True, "delivery": delivery, "job": rows[0]["job_id"] if rows else None}
        if correlation is not None:
            waiting = await conn.fetch(
                """SELECT id FROM {jobs} WHERE correlation_id = $1 AND status IN ('queued', 'running')
                   ORDER BY created_at LIMIT 1""",
                correlation,
            )
            if waiting:
                await queue.signal_in(conn, correlation, signal, payload, request_id=f"{source}:{delivery}")
                await conn.execute(
                    "UPDATE {inbox} SET job_id = $3 WHERE source = $1 AND delivery_id = $2",
                    source, delivery, waiting[0]["id"],
                )  # fmt: skip
                return 202, {"delivery": delivery, "job": waiting[0]["id"], "signal": signal}
        if not task:
            raise NoTarget(f"no waiting job has correlation id {correlation!r}, and source {source!r} enqueues no task")
        job, _ = await queue.enqueue_in(
            conn, task, payload, queue=job_queue, id=f"{source}:{delivery}", max_attempts=max_attempts,
            correlation_id=correlation,
        )  # fmt: skip
        await conn.execute(
            "UPDATE {inbox} SET job_id = $3 WHERE source = $1 AND delivery_id = $2", source, delivery, job.id
        )
    return 202, {"delivery": delivery, "job": job.id}
