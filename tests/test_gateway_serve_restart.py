"""`keel serve` restarted with durable executions in flight, as an operator does it (issue 23):
a real `keel serve` subprocess over SQLite, SIGTERM, and `keel serve` again in the same folder.

- SSE and WebSocket followers get a last ``reconnect`` event when the server shuts down;
- after the restart, the events route replays the execution's product events from the store,
  ``Last-Event-ID`` from the first process works in the second, and ``seq`` goes on;
- the execution still shows its runnable's name, its Idempotency-Key still finds it, and an
  answer's request id sent again after the restart is delivered once;
- the webhook channel delivers the adopted execution's new events, numbered on, none twice.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from conftest import clean_env
from test_gateway_support import sse_events
from websockets.sync.client import connect

FLOW = """
from keel_triggerflow import TriggerFlow


async def draft(ctx):
    return {"draft": "about " + ctx.value["topic"]}


async def gate(ctx):
    return await ctx.pause_for("approve", {"message": "ship it?"})


async def ship(ctx):
    return {"shipped": ctx.value}


flow = TriggerFlow("review")
flow.to(draft).to(gate).to(ship)
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Serve:
    """`keel serve` in ``folder`` on a free port, until :meth:`stop`."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = clean_env(KEEL_LOAD_PLUGINS="sqlite,triggerflow,gateway")
        env["PYTHONPATH"] = str(folder) + os.pathsep + env.get("PYTHONPATH", "")
        self.log = open(folder / "serve.log", "ab")  # noqa: SIM115
        keel = str(Path(sys.executable).parent / "keel")
        command = [keel, "serve", "--port", str(self.port), "--log-level", "warning", "--grace", "2"]
        self.proc = subprocess.Popen(command, cwd=folder, env=env, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert self.proc.poll() is None, (folder / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "keel serve did not start"
            time.sleep(0.1)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=30)
        self.log.close()
        return code


class _Hooks(BaseHTTPRequestHandler):
    """The webhook receiver: records (X-Keel-Delivery, event type) of each POST."""

    received: ClassVar[list[tuple[str, str]]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        type(self).received.append((self.headers["X-Keel-Delivery"], self.headers["X-Keel-Event"]))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def hooks() -> Iterator[str]:
    _Hooks.received.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hooks)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()


def _stack(folder: Path, hook: str) -> Path:
    (folder / "reviewflow.py").write_text(FLOW)
    (folder / "keel.toml").write_text(
        f'runnables = ["reviewflow:flow"]\nchannels = ["sse", "websocket", "webhook"]\n'
        f'[store]\ndriver = "sqlite"\npath = "{folder / "s.db"}"\n'
        f'[settings.gateway.channels.webhook]\nurl = "{hook}"\nsecret = "s"\nbackoff = 0.05\n'
    )
    return folder


def _wait_status(http: httpx.Client, execution_id: str, status: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        view: dict[str, Any] = http.get(f"/v1/executions/{execution_id}").json()
        if view.get("status") == status:
            return view
        assert time.monotonic() < deadline, view
        time.sleep(0.05)


def test_followers_are_told_to_reconnect_and_the_events_go_on_after_a_restart(tmp_path: Path, hooks: str) -> None:
    folder = _stack(tmp_path, hooks)
    first = Serve(folder)
    with httpx.Client(base_url=first.url, timeout=30) as http:
        keyed = {"Idempotency-Key": "order-7"}
        started = http.post("/v1/runnables/review/executions", json={"topic": "cats"}, headers=keyed)
        assert started.status_code == 202, started.text
        execution_id = started.json()["id"]
        assert started.json()["runnable"] == "review"
        before = _wait_status(http, execution_id, "waiting")
    # an SSE and a WebSocket follower are connected when the server is told to stop
    sse_text: list[str] = []
    ws_messages: list[Any] = []
    ws_close: list[Any] = []
    sse_ready, ws_ready = threading.Event(), threading.Event()

    def follow_sse() -> None:
        with httpx.stream("GET", f"{first.url}/v1/executions/{execution_id}/events", timeout=30) as response:
            assert response.status_code == 200
            for chunk in response.iter_text():
                sse_text.append(chunk)
                if "task.waiting" in "".join(sse_text):
                    sse_ready.set()

    def follow_ws() -> None:
        with connect(f"ws://127.0.0.1:{first.port}/v1/executions/{execution_id}/ws", open_timeout=30) as ws:
            while True:
                try:
                    text = ws.recv(timeout=30)
                except Exception:  # closed by the server: the close code tells how
                    ws_close.append(ws.close_code)
                    return
                ws_messages.append(json.loads(text))
                if ws_messages[-1].get("type") == "task.waiting":
                    ws_ready.set()

    readers = [threading.Thread(target=follow_sse), threading.Thread(target=follow_ws)]
    for reader in readers:
        reader.start()
    assert sse_ready.wait(30) and ws_ready.wait(30), (sse_text, ws_messages)
    assert first.stop() == 0
    for reader in readers:
        reader.join(timeout=30)
        assert not reader.is_alive()

    frames = sse_events("".join(sse_text))
    assert [f["event"] for f in frames][-2:] == ["task.waiting", "reconnect"], frames
    assert "id" not in frames[-1], "the reconnect event leaves Last-Event-ID at the last seq"
    last_seq = int(frames[-2]["id"])
    assert json.loads(frames[-1]["data"])["after"] == last_seq
    assert ws_messages[-1]["type"] == "reconnect" and ws_messages[-1]["after"] == last_seq, ws_messages
    assert ws_close == [1012], "1012: service restart"

    second = Serve(folder)
    try:
        with httpx.Client(base_url=second.url, timeout=30) as http:
            view = _wait_status(http, execution_id, "waiting")
            assert view["runnable"] == "review", "the runnable's name survives the restart"
            again = http.post("/v1/runnables/review/executions", json={"topic": "cats"}, headers=keyed)
            assert again.status_code == 202 and again.json()["id"] == execution_id, "the key survives too"
            assert view["last_seq"] >= before["last_seq"]
            # the first process's events, replayed from the store, with their seqs
            replay = sse_events(_read_until(second.url, execution_id, "task.waiting", after=0, last_seq=last_seq))
            assert [int(f["id"]) for f in replay][:last_seq] == list(range(1, last_seq + 1))
            assert [f["data"] for f in replay][:last_seq] == [f["data"] for f in frames[:last_seq]]
            # an answer, and the same answer again: delivered once
            answer = {"payload": {"ok": True}, "request_id": "answer-1"}
            assert http.post(f"/v1/executions/{execution_id}/signals/approve", json=answer).status_code == 202
            assert http.post(f"/v1/executions/{execution_id}/signals/approve", json=answer).status_code == 202
            other = {"payload": {"ok": False}, "request_id": "answer-1"}
            conflict = http.post(f"/v1/executions/{execution_id}/signals/approve", json=other)
            assert conflict.status_code == 409, conflict.text
            done = _wait_status(http, execution_id, "completed")
            assert done["output"] == {"shipped": {"ok": True}}
            # Last-Event-ID of the first process: the rest, numbered on from there
            rest = sse_events(
                httpx.get(
                    f"{second.url}/v1/executions/{execution_id}/events",
                    headers={"Last-Event-ID": str(last_seq)},
                    timeout=30,
                ).text
            )
            seqs = [int(f["id"]) for f in rest]
            assert seqs and seqs[0] == last_seq + 1 and seqs == list(range(last_seq + 1, last_seq + 1 + len(seqs)))
            assert rest[-1]["event"] == "task.completed"
            assert json.loads(rest[-1]["data"])["data"] == {"shipped": {"ok": True}}
            assert sum(1 for f in rest if f["event"] == "task.completed") == 1
            # the webhook goes on too: the adopted execution's new events, numbered on, each once
            deadline = time.monotonic() + 30
            while (f"{execution_id}.{seqs[-1]}", "task.completed") not in _Hooks.received:
                assert time.monotonic() < deadline, _Hooks.received
                time.sleep(0.05)
            deliveries = [d for d, _ in _Hooks.received]
            assert len(deliveries) == len(set(deliveries)), "no event delivered twice across the restart"
            assert (f"{execution_id}.{last_seq}", "task.waiting") in _Hooks.received, "the first process's"
    finally:
        assert second.stop() == 0


def _read_until(url: str, execution_id: str, event: str, *, after: int, last_seq: int) -> str:
    """An SSE stream's text up to the first ``event`` past ``last_seq`` (a live stream does not end)."""
    text = ""
    with httpx.stream("GET", f"{url}/v1/executions/{execution_id}/events?after={after}", timeout=30) as response:
        assert response.status_code == 200
        for chunk in response.iter_text():
            text += chunk
            frames = sse_events(text)
            if any(f.get("event") == event and int(f.get("id", "0")) > last_seq for f in frames):
                return text
    return text
