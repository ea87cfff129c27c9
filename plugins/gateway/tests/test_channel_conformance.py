"""keel.testing.conformance.ChannelConformance on each channel this package registers: sse and
websocket (pull), console, and webhook against a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from keel import Channel, ChannelSpec
from keel.testing.conformance import ChannelConformance
from keel_gateway.channels import ConsoleChannel, channel_specs, verify

SECRET = "conformance-secret"


class _Receiver(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        assert verify(SECRET, self.headers["X-Keel-Signature"], body)
        type(self).received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture(scope="module")
def receiver() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(params=["sse", "websocket", "console", "webhook"])
def channel_spec(request: pytest.FixtureRequest) -> ChannelSpec:
    return {spec.name: spec for spec in channel_specs()}[request.param]


@pytest.fixture
async def channel(channel_spec: ChannelSpec, receiver: str) -> AsyncIterator[Channel]:
    if channel_spec.name == "console":
        built: Channel = ConsoleChannel({"partials": True}, stream=io.StringIO())
    elif channel_spec.name == "webhook":
        built = channel_spec.factory({"url": receiver, "secret": SECRET, "types": None, "backoff": 0})
    else:
        built = channel_spec.factory({})
    yield built
    await built.aclose()


class TestGatewayChannels(ChannelConformance):
    pass


async def test_the_webhook_receiver_got_every_type_but_partial(receiver: str) -> None:
    _Receiver.received.clear()
    spec = {s.name: s for s in channel_specs()}["webhook"]
    webhook = spec.factory({"url": receiver, "secret": SECRET})
    await TestGatewayChannels().test_sends_every_product_event_type(webhook)
    await webhook.aclose()
    assert [e["type"] for e in _Receiver.received] == [
        "task.started", "task.progress", "task.waiting", "task.completed", "task.failed",
    ]  # fmt: skip
