"""The NATS source against a real JetStream server: ack only after accept, redelivery dedups by
message id, a cut connection loses nothing.

``accept`` here is a stand-in for the scheduler's: an inbox table in SQLite whose primary key is the
delivery id (the scheduler's own inbox is tested in keel-scheduler and in tests/)."""

from __future__ import annotations

import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest

import keel
from keel.testing import make_host
from keel_source_nats import NatsSource
from keel_source_nats import plugin as nats_plugin

from .conftest import Proxy


class Inbox:
    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path)
        self.conn.execute("CREATE TABLE inbox (delivery TEXT PRIMARY KEY, payload TEXT)")
        self.calls: list[str] = []
        self.fail_first: set[str] = set()
        self.after_commit: Any = None

    async def accept(self, delivery: str, payload: Any) -> tuple[int, dict[str, Any]]:
        self.calls.append(delivery)
        if delivery in self.fail_first:
            self.fail_first.discard(delivery)
            raise OSError("database unavailable")
        with self.conn:
            new = self.conn.execute(
                "INSERT OR IGNORE INTO inbox VALUES (?, ?)", (delivery, json.dumps(payload))
            ).rowcount
        if self.after_commit is not None:
            await self.after_commit(delivery)
        return (202 if new else 200), {"delivery": delivery}

    def payloads(self) -> list[Any]:
        return [json.loads(p) for (p,) in self.conn.execute("SELECT payload FROM inbox")]


def _names() -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    return {"stream": f"T{tag}", "subject": f"t{tag}.>", "durable": f"d{tag}"}


async def _publish(url: str, subject: str, items: list[tuple[str | None, Any]]) -> None:
    import nats

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for msg_id, payload in items:
            body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            await js.publish(subject.replace(">", "x"), body, headers={"Nats-Msg-Id": msg_id} if msg_id else None)
    finally:
        await nc.close()


async def _until(check: Any, timeout: float = 60) -> None:
    with anyio.fail_after(timeout):
        while not check():
            await anyio.sleep(0.05)


def test_registers_through_the_schedulers_hook_and_loads_without_it() -> None:
    host = make_host(nats_plugin)  # keel-scheduler absent: the optional hook registers nothing, no error
    assert host.pm.is_registered(nats_plugin)
    [spec] = list(nats_plugin.keel_scheduler_sources())
    assert spec.name == "nats" and isinstance(spec.factory({"stream": "X"}), NatsSource)
    with pytest.raises(keel.KeelError, match="stream"):
        spec.factory({"stream": "bad name!"})


async def test_ack_only_after_accept_and_redelivery_dedups(nats_url: str, tmp_path: Path) -> None:
    names = _names()
    inbox = Inbox(tmp_path / "inbox.db")
    inbox.fail_first = {"m-3", "m-7"}  # the database is down for their first delivery
    source = NatsSource(url=nats_url, nak_delay=0.1, **names)
    items: list[tuple[str | None, Any]] = [(f"m-{n}", {"n": n}) for n in range(20)]
    items.append((None, b"{not json"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(source.run, inbox.accept)
        await source.connected.wait()
        await _publish(nats_url, names["subject"], items)
        await _until(lambda: len(inbox.payloads()) == 20 and source.stats["malformed"] == 1)
        tg.cancel_scope.cancel()
    assert sorted(p["n"] for p in inbox.payloads()) == list(range(20))
    assert inbox.calls.count("m-3") == 2 and inbox.calls.count("m-7") == 2  # nacked, then redelivered
    assert source.stats["nacked"] == 2 and source.stats["acked"] == 20


async def test_a_crash_between_commit_and_ack_gives_one_inbox_row(nats_url: str, tmp_path: Path) -> None:
    names = _names()
    inbox = Inbox(tmp_path / "inbox.db")
    crashed = anyio.Event()

    async def die_after_commit(delivery: str) -> None:
        crashed.set()
        await anyio.sleep_forever()  # the process "dies" here: committed, never acknowledged

    inbox.after_commit = die_after_commit
    first = NatsSource(url=nats_url, ack_wait=1.0, **names)
    async with anyio.create_task_group() as tg:
        tg.start_soon(first.run, inbox.accept)
        await first.connected.wait()
        await _publish(nats_url, names["subject"], [("order-1", {"order": 1})])
        with anyio.fail_after(30):
            await crashed.wait()
        tg.cancel_scope.cancel()
    assert first.stats["acked"] == 0

    inbox.after_commit = None
    second = NatsSource(url=nats_url, ack_wait=1.0, **names)  # the restarted process, same consumer
    async with anyio.create_task_group() as tg:
        tg.start_soon(second.run, inbox.accept)
        await _until(lambda: second.stats["acked"] >= 1)
        tg.cancel_scope.cancel()
    assert inbox.calls == ["order-1", "order-1"]  # redelivered after ack_wait...
    assert inbox.payloads() == [{"order": 1}]  # ...and recorded once


async def test_a_cut_connection_reconnects_and_loses_nothing(nats_url: str, tmp_path: Path) -> None:
    names = _names()
    inbox = Inbox(tmp_path / "inbox.db")
    total = 300
    async with anyio.create_task_group() as tg:
        proxy = Proxy(int(nats_url.rsplit(":", 1)[1]))
        await tg.start(proxy.serve)
        source = NatsSource(url=f"nats://127.0.0.1:{proxy.port}", reconnect_wait=0.1, ack_wait=2.0, batch=10, **names)
        tg.start_soon(source.run, inbox.accept)
        await source.connected.wait()

        async def publish_all() -> None:
            for start in range(0, total, 50):
                await _publish(nats_url, names["subject"], [(f"p-{n}", {"n": n}) for n in range(start, start + 50)])
                await anyio.sleep(0.05)

        tg.start_soon(publish_all)
        for cut_at in (60, 150):  # kill the connection twice, mid-stream
            await _until(lambda cut_at=cut_at: len(inbox.payloads()) >= cut_at)
            proxy.cut()
        await _until(lambda: len(inbox.payloads()) == total)
        tg.cancel_scope.cancel()
    assert sorted(p["n"] for p in inbox.payloads()) == list(range(total))
    assert proxy.connections >= 3 and source.stats["reconnects"] >= 2
