"""The desk as a running service, in two processes (the seed's early "one process" is what doctor
warns about: a deploy or a traffic spike of the web tier stops or starves the jobs); each part is its
own command in production: `keel serve`, `keel intake`, `keel worker`, `keel scheduler`:

- this process: the gateway (HTTP, SSE) serving the page at /ui/, its API behind a key made per run
  (the page gets it as ``/ui/?token=``), plus two small routes of the desk's own:
  ``GET /desk/tickets`` (the inbox the page lists) and ``POST /desk/notify`` (a receiver of the signed
  webhook channel, standing in for a chat or IM integration; ``GET /desk/notifications`` shows it);
  and webhook intake on its own port (signed deliveries become jobs, once);
- the worker process (``worker.py``, started and stopped by :func:`open_desk`): a worker running the
  ``desk`` flow for each job, sending its product events to the webhook channel, and the scheduler
  ticking the SLA reminder. The gateway finds the flows it runs in the shared store and follows them
  live (TriggerFlow follows an execution another process runs); answers go to the worker's inbox.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
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
from keel_scheduler import Queue, WorkerEvent, task

HERE = Path(__file__).resolve().parent
#: the scheduled SLA check: every 2 s on the maintenance queue (the worker process keeps it)
SLA_SCHEDULE = {
    "id": "sla-reminder",
    "task": "sla_reminder",
    "queue": "maintenance",
    "every": 2,
    "overlap": "skip",
    "catchup_window": 5,
}
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
    worker_log: list[str] = field(default_factory=list)  # the worker process's lines, read from its stdout
    worker_pid: int = 0  # the worker process (stopped with the desk)

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


def webhook_channel(runtime: keel.Runtime) -> Any:
    """The stack's webhook channel (``[settings.gateway.channels.webhook]``), as the gateway builds it."""
    options = runtime.stack.settings("gateway")["channels"]["webhook"]
    return runtime.host.channels()["webhook"].spec.factory(options)


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
    box: list[Desk] = []
    runtime.add(sla_reminder(runtime, webhook_channel(runtime)))  # its eval dataset runs here
    # [settings.gateway]: the page, the API key; its webhook channel pushes only what the gateway
    # starts (nothing here): the worker process sends the tickets' events, each once
    gateway = create_app(runtime)
    _add_desk_routes(gateway, box)
    try:
        async with runtime, Queue(str(state / "scheduler.db")) as queue:
            from keel_scheduler.intake import Intake

            desk = Desk(runtime, queue, recorder, state, url, intake_url, api_key)
            box.append(desk)
            intake = Intake(queue, {"helpdesk": {"task": "desk", "secret": IN_SECRET}})
            servers: list[uvicorn.Server] = []
            async with anyio.create_task_group() as tg:
                web_up, intake_up = anyio.Event(), anyio.Event()
                tg.start_soon(serve_app, gateway, web_port, web_up, servers)
                tg.start_soon(serve_app, intake.asgi(), intake_port, intake_up, servers)
                with anyio.fail_after(30):
                    await web_up.wait()
                    await intake_up.wait()
                try:
                    async with worker_process(desk, scripted):  # posts to /desk/notify: after the gateway is up
                        yield desk
                finally:
                    for server in servers:
                        server.should_exit = True
                    tg.cancel_scope.cancel()
    finally:
        recorder.flush()
        recorder.close()


@asynccontextmanager
async def worker_process(desk: Desk, scripted: bool) -> AsyncIterator[None]:
    """``worker.py`` in a process of its own, its log read through a pipe into ``desk.worker_log``;
    stopped on every way out of the block (SIGTERM, then SIGKILL after 20 s). Killed itself, this
    process closes the worker's stdin on its way out, which stops the worker too."""
    command = [sys.executable, str(HERE / "worker.py"), "--state", str(desk.state), *(["--scripted"] * scripted)]
    process = await anyio.open_process(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None)
    desk.worker_pid = process.pid
    ready = anyio.Event()

    async def read_log() -> None:
        assert process.stdout is not None
        buffered = b""
        async for chunk in process.stdout:
            buffered += chunk
            *lines, buffered = buffered.split(b"\n")
            for line in lines:
                text = line.decode(errors="replace")
                desk.worker_log.append(text)
                if text.startswith("ready pid "):
                    ready.set()
        ready.set()  # it ended: the check below says so

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(read_log)
            with anyio.fail_after(120):  # it starts the stack's environments (the MCP server, the sandbox)
                await ready.wait()
            if process.returncode is not None or not any(x.startswith("ready pid ") for x in desk.worker_log):
                raise RuntimeError("the desk's worker process did not start:\n" + "\n".join(desk.worker_log[-20:]))
            try:
                yield
            finally:
                tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await _stop(process)


async def _stop(process: anyio.abc.Process) -> None:
    if process.stdin is not None:
        await process.stdin.aclose()  # its reader of stdin returns (end of file): it stops
    if process.returncode is None:
        process.terminate()
        with anyio.move_on_after(20):
            await process.wait()
    if process.returncode is None:
        process.kill()
        await process.wait()
    await process.aclose()


def worker_line(event: WorkerEvent) -> str:
    detail = f" ({event.detail})" if event.detail else ""
    return f"worker: {event.kind} {event.job.task} {event.job.id}{detail}"
