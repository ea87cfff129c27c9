"""The desk as a running service, in one process (the seed's "early systems can run these modules in
one process"; each part is its own command in production: `keel serve`, `keel intake`, `keel worker`,
`keel scheduler`):

- the gateway (HTTP, SSE) serving the page at /ui/, its API behind a key made per run (the page gets
  it as ``/ui/?token=``), plus two small routes of the desk's own:
  ``GET /desk/tickets`` (the inbox the page lists) and ``POST /desk/notify`` (a receiver of the signed
  webhook channel, standing in for a chat or IM integration; ``GET /desk/notifications`` shows it);
- webhook intake on its own port (signed deliveries become jobs, once);
- a worker running the ``desk`` flow for each job, sending its product events to the webhook channel;
- the scheduler ticking the SLA reminder.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import uvicorn
from desk_service import (
    SLA_SECONDS,
    TICKETS,
    bind_refunds,
    scripted_answer,
    stack_toml,
)
from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

import keel
import keel_devtools
from keel.draws import now as draw_now
from keel.testing import ScriptedModel
from keel_gateway import create_app, verify
from keel_scheduler import Queue, Scheduler, Schedules, Worker, WorkerEvent, task

#: the helpdesk signs its deliveries with this; Keel's webhook channel signs with OUT_SECRET
IN_SECRET = os.environ.get("DESK_INTAKE_SECRET", "whsec-desk-intake-demo")
OUT_SECRET = os.environ.get("DESK_NOTIFY_SECRET", "whsec-desk-notify-demo")


def free_port(preferred: int = 0) -> int:
    """``preferred`` when it is free on 127.0.0.1, else any free port."""
    for port in (preferred, 0) if preferred else (0,):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise OSError("no free port on 127.0.0.1")


@dataclass
class Desk:
    """What a walk (or a test) needs of the running service."""

    runtime: keel.Runtime
    queue: Queue
    recorder: keel_devtools.Recorder
    state: Path
    url: str  # the gateway: /ui/ is the page
    intake_url: str
    api_key: str = ""  # the gateway's API key ([settings.gateway.api_keys], key_env DESK_API_KEY)
    notifications: list[dict[str, Any]] = field(default_factory=list)
    delivered: set[str] = field(default_factory=set)  # X-Keel-Delivery ids seen: a retried delivery counts once
    worker_log: list[str] = field(default_factory=list)

    @property
    def page(self) -> str:
        """The page's address, with the key the page calls the API with."""
        return f"{self.url}/ui/?token={self.api_key}"

    @property
    def headers(self) -> dict[str, str]:
        """What a script sends to the gateway's API."""
        return {"Authorization": f"Bearer {self.api_key}"}

    async def tickets(self) -> list[dict[str, Any]]:
        return await list_tickets(self.runtime.store())

    async def ticket(self, ticket_id: str) -> dict[str, Any] | None:
        found = await self.runtime.store().get("default", TICKETS, ticket_id)
        return found.value if found else None


async def list_tickets(store: keel.Store) -> list[dict[str, Any]]:
    """Every ticket's record in the store, newest first (what the page lists)."""
    keys = await store.list_keys("default", TICKETS)
    found = [await store.get("default", TICKETS, key) for key in keys]
    return sorted((f.value for f in found if f is not None), key=lambda t: t.get("opened_at", 0), reverse=True)


class Reminders(BaseModel):
    """The SLA check's output contract: which tickets it reminded about."""

    reminded: list[str]


def sla_reminder(runtime: keel.Runtime, channel: Any) -> Any:
    """The scheduled SLA check: each ticket waiting longer than SLA_SECONDS gets one reminder,
    through the webhook channel (a chat message in production). It keeps nothing in memory: what it
    reads and marks (``reminded``) is in the store, so any worker process can run it."""

    async def check(input: Any) -> Reminders:
        store = runtime.store()
        sent = []
        for ticket in await list_tickets(store):
            waited = draw_now() - float(ticket.get("waiting_since") or 0)
            if ticket.get("status") != "waiting" or ticket.get("reminded") or waited < SLA_SECONDS:
                continue
            await channel.send(
                keel.ProductEvent(
                    type="task.progress", task_id=ticket["id"], execution_id=ticket["execution_id"],
                    message=f"SLA: ticket {ticket['id']} has waited {waited:.0f} s for a refund approval",
                )
            )  # fmt: skip
            found = await store.get("default", TICKETS, ticket["id"])
            if found is not None and found.value.get("status") == "waiting":
                try:  # compare-and-set: never write back a status the flow has moved on from
                    await store.put(
                        "default",
                        TICKETS,
                        ticket["id"],
                        {**found.value, "reminded": True},
                        expected_version=found.version,
                    )
                except keel.ConflictError:
                    continue  # the flow moved on meanwhile; the next tick decides again
            sent.append(ticket["id"])
        return Reminders(reminded=sent)

    return task(check, name="sla_reminder")


def _authorized(request: Request, key: str) -> bool:
    """The desk's own read routes want the same key as the gateway's API."""
    given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    return hmac.compare_digest(given.encode(), key.encode())


def _add_desk_routes(app: Any, desk_box: list[Desk]) -> None:
    denied = JSONResponse({"error": "send the desk's key: Authorization: Bearer <key>"}, status_code=401)

    @app.get("/desk/tickets", include_in_schema=False)
    async def tickets(request: Request) -> JSONResponse:
        if not _authorized(request, desk_box[0].api_key):
            return denied
        return JSONResponse(await desk_box[0].tickets())

    @app.get("/desk/notifications", include_in_schema=False)
    async def notifications(request: Request) -> JSONResponse:
        if not _authorized(request, desk_box[0].api_key):
            return denied
        return JSONResponse(desk_box[0].notifications)

    @app.post("/desk/notify", include_in_schema=False)
    async def notify(request: Request) -> JSONResponse:
        body = await request.body()
        if not verify(OUT_SECRET, request.headers.get("x-keel-signature", ""), body):
            return JSONResponse({"error": "bad signature"}, status_code=401)
        event = json.loads(body)
        # deliveries are at least once: a retry (its first attempt timed out on a busy machine, but
        # arrived) carries the same X-Keel-Delivery, and a receiver keeps one of each
        delivery = request.headers.get("x-keel-delivery", "")
        if delivery and delivery in desk_box[0].delivered:
            return JSONResponse({"ok": True, "duplicate": True})
        desk_box[0].delivered.add(delivery)
        desk_box[0].notifications.append(
            {"type": event["type"], "message": event.get("message", ""), "task_id": event.get("task_id")}
        )
        return JSONResponse({"ok": True})


async def serve_app(app: Any, port: int, started: anyio.Event, server_box: list[Any]) -> None:
    """Serve an ASGI app with uvicorn on 127.0.0.1:port in the current task group, until cancelled."""
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    server_box.append(server)
    config.load()
    server.lifespan = config.lifespan_class(config)
    await server.startup()  # no signal handlers of its own: Ctrl-C belongs to the demo
    if server.should_exit:
        raise OSError(f"could not serve on 127.0.0.1:{port} (see the log above)")
    started.set()
    try:
        await server.main_loop()
    finally:
        with anyio.CancelScope(shield=True):
            await server.shutdown()


@asynccontextmanager
async def open_desk(state: Path, *, scripted: bool = False, port: int = 0) -> AsyncIterator[Desk]:
    """Start the whole service on the embedded defaults; ``scripted``: the scripted test model."""
    state = state.resolve()
    state.mkdir(parents=True, exist_ok=True)
    web_port, intake_port = free_port(port), free_port()
    url, intake_url = f"http://127.0.0.1:{web_port}", f"http://127.0.0.1:{intake_port}"
    api_key = os.environ.get("DESK_API_KEY") or secrets.token_urlsafe(24)
    os.environ["DESK_API_KEY"] = api_key  # the stack names the variables, never the secrets
    os.environ.setdefault("DESK_NOTIFY_SECRET", OUT_SECRET)
    (state / "keel.toml").write_text(stack_toml(state, url), encoding="utf-8")
    recorder = keel_devtools.configure(state / "devtools.db")
    runtime = keel.Runtime.from_stack(state / "keel.toml")
    if scripted:
        runtime.use_model(ScriptedModel(scripted_answer, chunks=6))
    bind_refunds(runtime)  # issue_refund and the stack's approver (desk_service:approver) use this store
    # the worker sends tickets' product events through the stack's webhook channel, as the gateway does
    webhook = runtime.host.channels()["webhook"].spec.factory(runtime.stack.settings("gateway")["channels"]["webhook"])
    box: list[Desk] = []
    runtime.add(sla_reminder(runtime, webhook))
    gateway = create_app(runtime)  # [settings.gateway]: the page, the API key, the webhook channel
    _add_desk_routes(gateway, box)
    try:
        async with runtime, Queue(str(state / "scheduler.db")) as queue:
            from keel_scheduler.intake import Intake

            desk = Desk(runtime, queue, recorder, state, url, intake_url, api_key)
            box.append(desk)
            intake = Intake(queue, {"helpdesk": {"task": "desk", "secret": IN_SECRET}})
            await Schedules(queue).add(
                {
                    "id": "sla-reminder",
                    "task": "sla_reminder",
                    "queue": "maintenance",
                    "every": 2,
                    "overlap": "skip",
                    "catchup_window": 5,
                },
                replace=True,
            )
            log = desk.worker_log.append
            # tickets' product events go to the webhook channel; the SLA checks' own do not
            worker = Worker(
                queue, runtime, poll_interval=0.1, channels=[webhook], on_event=lambda e: log(_worker_line(e))
            )
            maintenance = Worker(queue, runtime, queues=["maintenance"], concurrency=1, poll_interval=0.25)
            scheduler = Scheduler(queue, poll_interval=0.5)
            servers: list[uvicorn.Server] = []
            async with anyio.create_task_group() as tg:
                web_up, intake_up = anyio.Event(), anyio.Event()
                tg.start_soon(serve_app, gateway, web_port, web_up, servers)
                tg.start_soon(serve_app, intake.asgi(), intake_port, intake_up, servers)
                await tg.start(worker.run)
                await tg.start(maintenance.run)
                tg.start_soon(scheduler.run)
                with anyio.fail_after(30):
                    await web_up.wait()
                    await intake_up.wait()
                try:
                    yield desk
                finally:
                    scheduler.stop()
                    worker.stop()
                    maintenance.stop()
                    for server in servers:
                        server.should_exit = True
                    tg.cancel_scope.cancel()
    finally:
        recorder.flush()
        recorder.close()


def _worker_line(event: WorkerEvent) -> str:
    detail = f" ({event.detail})" if event.detail else ""
    return f"worker: {event.kind} {event.job.task} {event.job.id}{detail}"
