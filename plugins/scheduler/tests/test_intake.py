"""Webhook intake on both backends: one execution per delivery id, hostile deliveries enqueue nothing,
a correlated delivery resumes its waiting job; and once through a real uvicorn server on loopback."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import anyio
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keel_scheduler import JobStatus, Queue, Worker
from keel_scheduler.intake import Intake, sign

from .test_worker import _Collect, _runtime, _Waiting

SECRET = "s3cret"
SOURCES = {
    "payments": {"task": "charge", "secret_env": "PAY_SECRET", "max_body": 4096, "tolerance": 300},
    "approvals": {"correlation_field": "order", "signal": "approve", "secret": SECRET},
}
ENV = {"PAY_SECRET": SECRET}


def _post(
    body: bytes, *, delivery: str | None = "d-1", stamp: int | None = None, secret: str = SECRET
) -> dict[str, str]:
    headers = {"X-Keel-Signature": sign(secret, body, stamp), "content-type": "application/json"}
    if delivery is not None:
        headers["X-Keel-Delivery"] = delivery
    return headers


async def _client(queue: Queue) -> tuple[Intake, httpx.AsyncClient]:
    intake = Intake(queue, SOURCES, env=ENV)
    return intake, httpx.AsyncClient(transport=httpx.ASGITransport(app=intake.asgi()), base_url="http://intake")


async def _inbox_rows(queue: Queue) -> int:
    async with queue.db.transaction() as conn:
        return int((await conn.fetch("SELECT COUNT(*) AS n FROM {inbox}"))[0]["n"])


async def test_one_thousand_deliveries_of_one_id_give_one_job(queue: Queue) -> None:
    _, client = await _client(queue)
    body = json.dumps({"amount": 12, "currency": "EUR"}).encode()
    statuses: list[int] = []
    replies: list[dict[str, Any]] = []

    async def deliver(n: int) -> None:
        for _ in range(n):
            reply = await client.post("/hooks/payments", content=body, headers=_post(body, delivery="evt_1"))
            statuses.append(reply.status_code)
            replies.append(reply.json())

    async with client, anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(deliver, 50)
    assert len(statuses) == 1000
    assert statuses.count(202) == 1 and statuses.count(200) == 999
    jobs = await queue.list()
    assert len(jobs) == 1 and jobs[0].input == {"amount": 12, "currency": "EUR"} and jobs[0].task == "charge"
    assert {r["job"] for r in replies} == {jobs[0].id}
    assert await _inbox_rows(queue) == 1


async def test_without_a_delivery_id_the_body_hash_dedups(queue: Queue) -> None:
    _, client = await _client(queue)
    async with client:
        for body in (b'{"a": 1}', b'{"a": 1}', b'{"a": 2}'):
            await client.post("/hooks/payments", content=body, headers=_post(body, delivery=None))
    assert len(await queue.list()) == 2


@pytest.mark.parametrize(
    ("name", "make", "status"),
    [
        ("bad signature", lambda b: (b, _post(b, secret="wrong")), 401),
        ("no signature", lambda b: (b, {"X-Keel-Delivery": "d"}), 401),
        ("malformed signature", lambda b: (b, {"X-Keel-Signature": "v1=abc"}), 401),
        ("stale", lambda b: (b, _post(b, stamp=int(time.time()) - 3600)), 401),
        ("from the future", lambda b: (b, _post(b, stamp=int(time.time()) + 3600)), 401),
        ("tampered body", lambda b: (b + b" ", _post(b)), 401),
        ("oversized", lambda b: (b"[" + b"1," * 4000 + b"1]", _post(b"[" + b"1," * 4000 + b"1]")), 413),
        ("malformed JSON", lambda b: (b"{not json", _post(b"{not json")), 400),
    ],
)
async def test_hostile_deliveries_are_refused_and_enqueue_nothing(
    queue: Queue, name: str, make: Any, status: int
) -> None:
    _, client = await _client(queue)
    body, headers = make(b'{"amount": 1}')
    async with client:
        reply = await client.post("/hooks/payments", content=body, headers=headers)
    assert reply.status_code == status, (name, reply.text)
    assert "error" in reply.json()
    assert await queue.list() == [] and await _inbox_rows(queue) == 0


async def test_unknown_source_wrong_method_and_health(queue: Queue) -> None:
    _, client = await _client(queue)
    async with client:
        assert (await client.post("/hooks/nobody", content=b"{}", headers=_post(b"{}"))).status_code == 404
        assert (await client.get("/hooks/payments")).status_code == 405
        health = await client.get("/healthz")
    assert health.json() == {"ok": True, "sources": ["approvals", "payments"]}


def test_a_source_without_a_secret_is_refused_at_start() -> None:
    from keel_scheduler import SchedulerError

    with pytest.raises(SchedulerError, match="PAY_SECRET"):
        Intake(Queue.__new__(Queue), {"p": {"task": "t", "secret_env": "PAY_SECRET"}}, env={})
    with pytest.raises(SchedulerError, match="no secret"):
        Intake(Queue.__new__(Queue), {"p": {"task": "t"}}, env={})


async def test_a_correlated_delivery_resumes_the_waiting_job(queue: Queue) -> None:
    _, client = await _client(queue)
    channel = _Collect()
    async with _runtime(_Waiting()) as runtime, client:
        job = await queue.enqueue("approval", correlation_id="order-42")
        worker = Worker(queue, runtime, poll_interval=0.05, lease=0.6, channels=[channel])
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            with anyio.fail_after(30):
                while not any(e.type == "task.waiting" for e in channel.events):
                    await anyio.sleep(0.05)
                body = json.dumps({"order": "order-42", "approved_by": "ana"}).encode()
                for _ in range(3):  # redelivered: one signal
                    reply = await client.post("/hooks/approvals", content=body, headers=_post(body, delivery="ap-1"))
                    assert reply.status_code in (200, 202) and reply.json()["job"] == job.id
                while (await queue.get(job.id)).status != JobStatus.COMPLETED:
                    await anyio.sleep(0.05)
            worker.stop()
        unknown = json.dumps({"order": "order-99"}).encode()
        reply = await client.post("/hooks/approvals", content=unknown, headers=_post(unknown, delivery="ap-2"))
    assert (await queue.get(job.id)).result == {"order": "order-42", "approved_by": "ana"}
    assert reply.status_code == 422 and "order-99" in reply.json()["error"]
    assert len(await queue.list()) == 1  # no new work: a signal, not a job


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_through_a_real_server_on_loopback(queue: Queue) -> None:
    import uvicorn

    intake = Intake(queue, SOURCES, env=ENV)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(intake.asgi(), host="127.0.0.1", port=port, log_level="warning"))
    body = json.dumps({"amount": 5}).encode()
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        with anyio.fail_after(30):
            while not server.started:
                await anyio.sleep(0.02)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            ok = await client.post("/hooks/payments", content=body, headers=_post(body, delivery="real-1"))
            again = await client.post("/hooks/payments", content=body, headers=_post(body, delivery="real-1"))
            big = b"[" + b"0," * 5000 + b"0]"
            too_big = await client.post("/hooks/payments", content=big, headers=_post(big, delivery="real-2"))
        server.should_exit = True
    assert (ok.status_code, again.status_code, too_big.status_code) == (202, 200, 413)
    assert [j.input for j in await queue.list()] == [{"amount": 5}]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.binary(max_size=300),
    signature=st.one_of(st.none(), st.text(max_size=120)),
    delivery=st.one_of(st.none(), st.text(min_size=1, max_size=60).filter(lambda t: t.isprintable())),
)
async def test_no_unsigned_delivery_is_ever_recorded(
    tmp_path_factory: pytest.TempPathFactory, body: bytes, signature: str | None, delivery: str | None
) -> None:
    """Whatever the body and headers, without the right MAC nothing is recorded (hostile input)."""
    async with Queue(str(tmp_path_factory.mktemp("h") / "q.db")) as queue:
        intake = Intake(queue, SOURCES, env=ENV)
        headers = {}
        if signature is not None:
            headers["X-Keel-Signature"] = signature
        if delivery is not None:
            headers["X-Keel-Delivery"] = delivery
        reply = await intake.receive("payments", headers, body)
        assert reply.status in (401, 413), reply
        assert await queue.list() == [] and await _inbox_rows(queue) == 0
