"""Console output and webhook signatures (the real-receiver tests live in tests/test_gateway_webhook.py)."""

from __future__ import annotations

import io
import time

import pytest

from keel import KeelError, ProductEvent
from keel_gateway import ConsoleChannel, WebhookChannel, sign, verify


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
