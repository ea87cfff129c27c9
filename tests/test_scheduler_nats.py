"""NATS JetStream → keel intake's broker source → the scheduler's inbox and queue → a worker.

The two plugins meet only through the scheduler's ``keel_scheduler_sources`` hook. A message
published three times with one ``Nats-Msg-Id`` (and redelivered once because the database refused
it) becomes one job, run once.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

import keel
from keel.testing import make_host
from keel_scheduler import JobStatus, Queue, Worker, task
from keel_scheduler import plugin as scheduler_plugin
from keel_scheduler.brokers import run_brokers, source_specs
from keel_source_nats import plugin as nats_plugin


@pytest.fixture(scope="module")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
    if not Path(binary).exists():
        subprocess.run(["apt-get", "install", "-y", "-q", "nats-server"], capture_output=True, timeout=300)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(tmp_path_factory.mktemp("js"))],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, "nats-server did not start"
            time.sleep(0.1)
    yield f"nats://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=30)


async def test_broker_messages_become_one_job_each_and_run_once(nats_url: str, tmp_path: Path) -> None:
    import nats

    host = make_host(scheduler_plugin, nats_plugin)
    assert source_specs(host)["nats"][0]  # registered through the scheduler's hook
    ran: list[Any] = []

    @task
    async def process_order(input: dict[str, Any]) -> str:
        ran.append(input["order"])
        return "done"

    tag = uuid.uuid4().hex[:8]
    brokers = {
        "orders": {
            "driver": "nats", "task": "process_order", "url": nats_url, "stream": f"O{tag}", "subject": f"o{tag}.>",
            "durable": f"k{tag}", "nak_delay": 0.1,
        }
    }  # fmt: skip
    runtime = keel.Runtime(host)
    runtime.add(process_order)
    async with runtime, Queue(str(tmp_path / "jobs.db")) as queue:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_brokers, queue, host, brokers)
            nc = await nats.connect(nats_url)
            js = nc.jetstream()
            with anyio.fail_after(30):
                while True:  # the source creates the stream when it starts
                    try:
                        await js.stream_info(f"O{tag}")
                        break
                    except Exception:
                        await anyio.sleep(0.05)
            for n in range(10):
                for _ in range(3):  # the publisher retries: one message id
                    await js.publish(
                        f"o{tag}.new", json.dumps({"order": n}).encode(), headers={"Nats-Msg-Id": f"order-{n}"}
                    )
            await nc.close()
            with anyio.fail_after(60):
                while len(await queue.list()) < 10:
                    await anyio.sleep(0.05)
            tg.cancel_scope.cancel()
        await Worker(queue, runtime, poll_interval=0.05).run(drain=True)
        jobs = await queue.list()
    assert sorted(ran) == list(range(10))
    assert len(jobs) == 10 and all(j.status == JobStatus.COMPLETED for j in jobs)
    assert {j.id for j in jobs} == {f"broker:orders:order-{n}" for n in range(10)}
