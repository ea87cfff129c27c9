"""Console output and webhook signatures (the real-receiver tests live in tests/test_gateway_webhook.py)."""

from __future__ import annotations

import io
import time

import httpx
import pytest

from keel import KeelError, ProductEvent
from keel_gateway import ConsoleChannel, DeliveryFailed, WebhookChannel, sign, verify
from keel_gateway.channels import PullChannel


async def test_console_prints_one_line_per_event_and_skips_partials() -> None:
    out = io.StringIO()
    channel = ConsoleChannel({}, stream=out)
    await channel.send(
        ProductEvent(type="task.progress", task_id="e", execution_id="e", seq=2, message="half", percent=50)
    )
    await channel.send(ProductEvent(type="task.partial", task_id="e", execution_id="e", seq=3, data={"field": "t"}))
    assert out.getvalue() == "e #2 task.progress 50% half\n"


def test_signatures_verify_and_expire() -> None:
    now = int(time.time())
    header = sign("s3cret", str(now), b"{}")
    assert verify("s3cret", header, b"{}")
    assert not verify("s3cret", header, b"{ }")
    assert not verify("s3cret", header, b"{}", now=now + 3600), "a replay an hour later is refused"
    assert not verify("s3cret", "garbage", b"{}")


def test_webhook_needs_a_url_and_a_secret() -> None:
    with pytest.raises(KeelError, match="url"):
        WebhookChannel({})
    with pytest.raises(KeelError, match="secret"):
        WebhookChannel({"url": "https://example.invalid/hook"})


def test_channel_options_are_checked_and_a_typo_names_the_valid_keys() -> None:
    hook = {"url": "https://example.invalid/hook", "secret": "s"}
    with pytest.raises(KeelError, match=r"channels\.webhook.*max_attempt.*Valid options: url, secret"):
        WebhookChannel({**hook, "max_attempt": 3})
    with pytest.raises(KeelError, match="types"):
        WebhookChannel({**hook, "types": ["task.complete"]})
    with pytest.raises(KeelError, match="max_attempts"):
        WebhookChannel({**hook, "max_attempts": 0})
    with pytest.raises(KeelError, match="channels.console.*colour"):
        ConsoleChannel({"colour": True})
    with pytest.raises(KeelError, match="channels.sse"):
        PullChannel("sse", {"retry": 1})


def _recording(statuses: list[int], seen: list[httpx.Request]) -> httpx.AsyncClient:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(statuses[min(len(seen), len(statuses)) - 1])

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


async def test_webhook_retries_a_5xx_then_delivers_once_with_one_delivery_id() -> None:
    channel = WebhookChannel({"url": "https://example.invalid/hook", "secret": "s", "backoff": 0, "max_attempts": 4})
    seen: list[httpx.Request] = []
    channel._client = _recording([503, 429, 200], seen)
    await channel.send(ProductEvent(type="task.completed", task_id="e", execution_id="e", seq=4, data=1))
    assert [r.headers["X-Keel-Attempt"] for r in seen] == ["1", "2", "3"]
    assert {r.headers["X-Keel-Delivery"] for r in seen} == {"e.4"}
    assert all(verify("s", r.headers["X-Keel-Signature"], r.content) for r in seen)
    await channel.aclose()


async def test_webhook_gives_up_on_a_4xx_at_once_and_after_max_attempts_on_5xx() -> None:
    event = ProductEvent(type="task.completed", task_id="e", execution_id="e", seq=1, data=1)
    channel = WebhookChannel({"url": "https://example.invalid/hook", "secret": "s", "backoff": 0, "max_attempts": 3})
    seen: list[httpx.Request] = []
    channel._client = _recording([400], seen)
    with pytest.raises(DeliveryFailed) as failed:
        await channel.send(event)
    assert failed.value.attempts == [{"attempt": 1, "status": 400}]
    seen.clear()
    channel._client = _recording([500], seen)
    with pytest.raises(DeliveryFailed) as failed:
        await channel.send(event)
    assert [a["status"] for a in failed.value.attempts] == [500, 500, 500]
    await channel.aclose()
