"""``NatsSource``: a durable JetStream pull consumer that hands each message to ``accept``.

Per message: the delivery id is the publisher's ``Nats-Msg-Id`` header, else ``<stream>:<stream
sequence>`` — both the same on every redelivery. ``await accept(delivery_id, payload)`` commits the
inbox row and its job; only then is the message acknowledged. When ``accept`` raises (the database
is down), the message is negatively acknowledged and comes back after ``nak_delay``; when the
process dies between the commit and the ack, JetStream redelivers it after ``ack_wait`` and the
inbox row makes the second delivery a no-op. A body that is not JSON is terminated (never
redelivered) and counted. The client reconnects by itself (``max_reconnect_attempts=-1``).

nats-py runs on asyncio: use this under anyio's asyncio backend (the default).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from pydantic import BaseModel, ConfigDict, Field

from keel import KeelError, parse_options

__all__ = ["NatsSource", "NatsSourceOptions"]

log = logging.getLogger("keel_source_nats")

Accept = Callable[[str, Any], Awaitable[Any]]


class NatsSourceOptions(BaseModel):
    """The source's options (the other keys of ``[settings.scheduler.brokers.<name>]``)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    url: str = Field(default="nats://127.0.0.1:4222", description="NATS server URL(s), comma-separated")
    stream: str = Field(default="KEEL", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    subject: str = Field(default="keel.>", description="the subject(s) the consumer reads")
    durable: str = Field(default="keel-intake", pattern=r"^[A-Za-z0-9_-]{1,64}$", description="consumer name")
    create_stream: bool = Field(default=True, description="create the stream when it does not exist")
    batch: int = Field(default=64, ge=1, le=1000)
    fetch_timeout: float = Field(default=1.0, gt=0)
    ack_wait: float = Field(default=30.0, gt=0, description="seconds before an unacknowledged message comes back")
    nak_delay: float = Field(default=1.0, ge=0)
    reconnect_wait: float = Field(default=0.5, gt=0)


class NatsSource:
    """A JetStream pull consumer feeding ``accept``; ``stats`` counts what happened."""

    def __init__(self, options: NatsSourceOptions | None = None, **kwargs: Any) -> None:
        self.options = options or parse_options(
            NatsSourceOptions, kwargs, where="broker source 'nats'", error=KeelError
        )
        self.stats = {"accepted": 0, "acked": 0, "nacked": 0, "malformed": 0, "reconnects": 0, "disconnects": 0}
        self.connected = anyio.Event()

    async def run(self, accept: Accept) -> None:
        """Consume until cancelled."""
        import nats
        from nats.errors import Error as NatsError
        from nats.errors import TimeoutError as NatsTimeout
        from nats.js.api import AckPolicy, ConsumerConfig
        from nats.js.errors import NotFoundError

        o = self.options

        async def on_disconnect() -> None:
            self.stats["disconnects"] += 1

        async def on_reconnect() -> None:
            self.stats["reconnects"] += 1

        async def on_error(err: Exception) -> None:
            log.warning("nats %s: %s", o.url, err)

        nc = await nats.connect(
            o.url.split(","), name="keel-intake", allow_reconnect=True, max_reconnect_attempts=-1,
            reconnect_time_wait=o.reconnect_wait, connect_timeout=5, disconnected_cb=on_disconnect,
            reconnected_cb=on_reconnect, error_cb=on_error,
        )  # fmt: skip
        try:
            js = nc.jetstream()
            if o.create_stream:
                try:
                    await js.stream_info(o.stream)
                except NotFoundError:
                    await js.add_stream(name=o.stream, subjects=[o.subject])
            sub = await js.pull_subscribe(
                o.subject,
                durable=o.durable,
                stream=o.stream,
                config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=o.ack_wait, max_deliver=-1),
            )
            self.connected.set()
            while True:
                try:
                    messages = await sub.fetch(o.batch, timeout=o.fetch_timeout)
                except NatsTimeout:
                    continue
                except NatsError as err:  # disconnected: the client is reconnecting
                    log.info("nats fetch: %s; retrying", err)
                    await anyio.sleep(o.reconnect_wait)
                    continue
                for msg in messages:
                    await self._one(msg, accept)
        finally:
            with anyio.CancelScope(shield=True):
                await nc.close()

    async def _one(self, msg: Any, accept: Accept) -> None:
        from nats.errors import Error as NatsError

        headers = msg.headers or {}
        delivery = headers.get("Nats-Msg-Id") or f"{self.options.stream}:{msg.metadata.sequence.stream}"
        try:
            payload = json.loads(msg.data)
        except (json.JSONDecodeError, UnicodeDecodeError):
            self.stats["malformed"] += 1
            log.warning("nats message %s is not JSON: terminated", delivery)
            await msg.term()
            return
        try:
            await accept(delivery, payload)
        except Exception as err:  # not committed: let it come back
            self.stats["nacked"] += 1
            log.warning("nats message %s not recorded (%s): redelivering", delivery, err)
            try:
                await msg.nak(delay=self.options.nak_delay)
            except NatsError:
                pass  # not acknowledged either way: JetStream redelivers after ack_wait
            return
        self.stats["accepted"] += 1
        try:
            await msg.ack()
            self.stats["acked"] += 1
        except NatsError as err:  # committed but not acknowledged: redelivered, and the inbox dedups it
            log.info("nats ack of %s failed (%s); the redelivery will be a duplicate", delivery, err)
