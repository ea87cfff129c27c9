"""Channels: where product events go.

- ``sse`` and ``websocket`` are *pull* channels: clients follow an execution through the gateway's
  routes (``/v1/executions/{id}/events`` and ``/ws``), which read the execution's product log, so a
  reconnecting client resumes where it stopped. Their ``send`` does nothing: nothing is pushed.
- ``webhook`` POSTs each event as JSON, signed with HMAC-SHA256, retried with exponential backoff
  and jitter (``stamina``);
  when every attempt failed it raises :class:`DeliveryFailed`, and the dispatcher records the event
  in the store's dead-letter stream.
- ``console`` prints one line per event.

The :class:`ChannelDispatcher` feeds the push channels the stack lists (``channels = [...]``), one
follower per channel and execution, so one slow channel delays no other. A channel that raises is
logged, counted and dead-lettered; the task that produced the event never sees it.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import sys
import time
from typing import TYPE_CHECKING, Any, Literal, TextIO, TypeVar

from pydantic import BaseModel, ConfigDict, Field

import keel
from keel import Channel, ChannelSpec, Execution, KeelError, ProductEvent

if TYPE_CHECKING:
    import httpx

    from keel import Runtime
    from keel_gateway.product import ProductHub, ProductLog

__all__ = [
    "DEAD_LETTERS",
    "ChannelDispatcher",
    "ConsoleChannel",
    "ConsoleOptions",
    "DeliveryFailed",
    "PullChannel",
    "WebhookChannel",
    "WebhookOptions",
    "channel_options",
    "channel_specs",
    "sign",
    "verify",
]

log = logging.getLogger("keel_gateway.channels")
M = TypeVar("M", bound=BaseModel)

#: the store stream (per tenant) that holds events a channel could not deliver.
DEAD_LETTERS = "gateway.dead-letters"
PULL = frozenset({"sse", "websocket"})


class DeliveryFailed(KeelError):
    """A channel gave up on an event; ``attempts`` lists what each try got."""

    code = "gateway.delivery_failed"

    def __init__(self, message: str, attempts: list[dict[str, Any]]):
        super().__init__(message)
        self.attempts = attempts


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header value: ``t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body>``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, header: str, body: bytes, *, tolerance: float = 300.0, now: float | None = None) -> bool:
    """Check a ``X-Keel-Signature`` header (for receivers): right MAC, and not older than ``tolerance``."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    stamp, mac = parts.get("t", ""), parts.get("v1", "")
    if not stamp.isdigit() or abs((now or time.time()) - int(stamp)) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, stamp, body), f"t={stamp},v1={mac}")


ProductType = Literal["task.started", "task.progress", "task.partial", "task.waiting", "task.completed", "task.failed"]


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ConsoleOptions(_Options):
    """``[settings.gateway.channels.console]``."""

    stream: Literal["stdout", "stderr"] = "stdout"
    partials: bool = Field(default=False, description="print task.partial events too")


class WebhookOptions(_Options):
    """``[settings.gateway.channels.webhook]``."""

    url: str | None = Field(default=None, description="where to POST, http:// or https://")
    secret: str | None = Field(default=None, description="the HMAC key (development; prefer secret_env)")
    secret_env: str | None = Field(default=None, description="the environment variable holding the HMAC key")
    max_attempts: int = Field(default=5, ge=1, le=100)
    backoff: float = Field(default=0.5, ge=0, description="first wait in seconds, doubled per attempt")
    max_backoff: float = Field(default=30.0, ge=0, description="the longest wait between two attempts")
    timeout: float = Field(default=10.0, gt=0, description="seconds per attempt")
    types: list[ProductType] | None = Field(default=None, description="default: every type but task.partial")


def channel_options(model: type[M], name: str, options: dict[str, Any] | None) -> M:
    """``options`` of channel ``name`` validated against ``model`` (a typo names the valid keys)."""
    return keel.parse_options(model, options, where=f"[settings.gateway.channels.{name}]", error=KeelError)


class PullChannel:
    """``sse`` / ``websocket``: served by the gateway's routes from the product log; nothing to push."""

    def __init__(self, name: str, options: dict[str, Any] | None = None):
        channel_options(_Options, name, options)  # they take none: a key there is a mistake
        self.name = name

    async def send(self, event: ProductEvent) -> None:
        return None

    async def aclose(self) -> None:
        return None


class ConsoleChannel:
    """One line per event: ``<execution id> #<seq> <type> <message>``."""

    name = "console"

    def __init__(self, options: dict[str, Any] | None = None, stream: TextIO | None = None):
        parsed = channel_options(ConsoleOptions, "console", options)
        self._stream = stream
        self._to_stderr = parsed.stream == "stderr"
        self.partials = parsed.partials

    async def send(self, event: ProductEvent) -> None:
        if event.type == "task.partial" and not self.partials:
            return
        out = self._stream or (sys.stderr if self._to_stderr else sys.stdout)
        extra = f" {event.percent:.0f}%" if event.percent is not None else ""
        out.write(f"{event.execution_id} #{event.seq} {event.type}{extra} {event.message}".rstrip() + "\n")
        out.flush()

    async def aclose(self) -> None:
        return None


class _Retry(Exception):
    """One attempt failed in a way worth another (timeout, connection error, 408, 429, 5xx)."""


class _Final(Exception):
    """One attempt failed for good (another 4xx)."""


class WebhookChannel:
    """POST each product event to ``url``, signed, retried with capped exponential backoff and jitter.

    Options (:class:`WebhookOptions`, ``[settings.gateway.channels.webhook]``): ``url``; ``secret``
    or ``secret_env`` (the HMAC key); ``max_attempts`` (5); ``backoff`` (0.5 s, doubled per attempt,
    plus up to ``backoff`` of random jitter, capped by ``max_backoff`` 30 s; retries by ``stamina``);
    ``timeout`` (10 s per attempt); ``types`` (default: every type but ``task.partial``). Headers:
    ``X-Keel-Signature`` (see :func:`sign`), ``X-Keel-Delivery`` (the same on every retry of one
    event: receivers deduplicate by it), ``X-Keel-Attempt``.
    A 2xx is delivered; a 408, 429 or 5xx, a timeout or a connection error is retried; another 4xx
    is final.
    """

    name = "webhook"

    def __init__(self, options: dict[str, Any]):
        parsed = channel_options(WebhookOptions, "webhook", options)
        url = parsed.url
        if not url or not url.startswith(("http://", "https://")):
            raise KeelError("the webhook channel needs url = 'https://...' in [settings.gateway.channels.webhook]")
        self.url = url
        secret = parsed.secret
        if parsed.secret_env:
            secret = os.environ.get(parsed.secret_env) or secret
        if not secret:
            raise KeelError("the webhook channel needs secret_env (or secret) in [settings.gateway.channels.webhook]")
        self.secret = secret
        self.max_attempts = parsed.max_attempts
        self.backoff = parsed.backoff
        self.max_backoff = parsed.max_backoff
        self.timeout = parsed.timeout
        self.types = frozenset(parsed.types) if parsed.types else None
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False)
        return self._client

    async def send(self, event: ProductEvent) -> None:
        if (event.type not in self.types) if self.types is not None else event.type == "task.partial":
            return
        import stamina

        body = event.model_dump_json().encode()
        delivery = f"{event.execution_id}.{event.seq}"
        attempts: list[dict[str, Any]] = []
        retrying = stamina.retry_context(
            on=_Retry,
            attempts=self.max_attempts,
            timeout=None,  # bounded by attempts and timeout per attempt
            wait_initial=self.backoff,
            wait_max=self.max_backoff,
            wait_jitter=self.backoff,
            wait_exp_base=2,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    await self._attempt(attempt.num, event, body, delivery, attempts)
                    return
        except (_Retry, _Final):
            pass
        raise DeliveryFailed(
            f"webhook {self.url}: event {delivery} not delivered after {len(attempts)} attempt(s)", attempts
        )

    async def _attempt(
        self, number: int, event: ProductEvent, body: bytes, delivery: str, attempts: list[dict[str, Any]]
    ) -> None:
        """One POST; returns when delivered, raises :class:`_Retry` or :class:`_Final` (noted in ``attempts``)."""
        import httpx

        headers = {
            "Content-Type": "application/json",
            "X-Keel-Signature": sign(self.secret, str(int(time.time())), body),
            "X-Keel-Delivery": delivery,
            "X-Keel-Attempt": str(number),
            "X-Keel-Event": event.type,
        }
        try:
            response = await self._http().post(self.url, content=body, headers=headers)
        except httpx.TimeoutException:
            attempts.append({"attempt": number, "error": "timeout"})
            raise _Retry from None
        except httpx.HTTPError as err:
            attempts.append({"attempt": number, "error": f"{type(err).__name__}"})
            raise _Retry from None
        if response.is_success:
            return
        attempts.append({"attempt": number, "status": response.status_code})
        if response.status_code in (408, 429) or response.status_code >= 500:
            raise _Retry
        raise _Final

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()


def channel_specs() -> list[ChannelSpec]:
    return [
        ChannelSpec(
            name="sse",
            description="server-sent events from the gateway (pull)",
            factory=lambda o: PullChannel("sse", o),
        ),
        ChannelSpec(
            name="websocket",
            description="WebSocket from the gateway (pull)",
            factory=lambda o: PullChannel("websocket", o),
        ),
        ChannelSpec(
            name="webhook", description="signed POST per event, retried, dead-lettered", factory=WebhookChannel
        ),
        ChannelSpec(name="console", description="one line per event on stdout", factory=ConsoleChannel),
    ]


class ChannelDispatcher:
    """Sends every product event of the executions it is given to each push channel."""

    def __init__(self, runtime: Runtime, hub: ProductHub, channels: list[Channel]):
        self.runtime = runtime
        self.hub = hub
        self.channels = [c for c in channels if c.name not in PULL]
        self.delivered = 0
        self.failures = 0

    @classmethod
    def from_stack(cls, runtime: Runtime, hub: ProductHub, options: dict[str, dict[str, Any]]) -> ChannelDispatcher:
        specs = runtime.host.channels()
        built: list[Channel] = []
        for name in runtime.stack.config.channels or []:
            if name not in specs:
                names = ", ".join(sorted(specs)) or "none"
                raise KeelError(f"gateway: unknown channel {name!r} in the stack's channels; available: {names}")
            built.append(specs[name].spec.factory(dict(options.get(name, {}))))
        return cls(runtime, hub, built)

    def follow(self, execution: Execution, *, resumed: bool = False) -> None:
        """Start delivering this execution's product events to every push channel; ``resumed``
        (one a previous process started): only the events after those it kept, which that process
        delivered (or dead-lettered) already, unless it died while delivering them."""
        if not self.channels:
            return
        product = self.hub.log(execution)
        for channel in self.channels:
            self.runtime.task_group.start_soon(
                self._deliver, channel, product, resumed, name=f"keel gateway channel {channel.name} {execution.id}"
            )

    async def _deliver(self, channel: Channel, product: ProductLog, resumed: bool = False) -> None:
        since = 0
        if resumed:
            await product.ready.wait()
            since = product.restored
        async for frame in product.follow(since):
            event = frame.event
            try:
                await channel.send(event)
                self.delivered += 1
            except Exception as err:  # a channel never fails the task
                self.failures += 1
                attempts = err.attempts if isinstance(err, DeliveryFailed) else []
                log.warning("channel %r failed on %s #%s: %s", channel.name, event.execution_id, event.seq, err)
                await self._dead_letter(product.tenant, channel.name, event, err, attempts)

    async def _dead_letter(
        self, tenant: str, channel: str, event: ProductEvent, err: Exception, attempts: list[dict[str, Any]]
    ) -> None:
        record = {
            "channel": channel,
            "event": event.model_dump(mode="json"),
            "error": f"{type(err).__name__}: {err}",
            "attempts": attempts,
            "time": time.time(),
        }
        try:
            await self.runtime.store().append(tenant, DEAD_LETTERS, [record])
        except Exception:
            log.exception("could not record a dead letter for channel %r", channel)

    async def aclose(self) -> None:
        for channel in self.channels:
            try:
                await channel.aclose()
            except Exception:
                log.exception("closing channel %r failed", channel.name)
