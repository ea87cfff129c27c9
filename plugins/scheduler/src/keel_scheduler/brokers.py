"""Broker trigger sources, run by ``keel intake``: each message becomes one inbox row and one job.

``[settings.scheduler.brokers.<name>]`` picks a source registered through ``keel_scheduler_sources``
(``driver = "nats"``) and says what a message enqueues (``task``, ``queue``) or resumes
(``correlation_field``); every other key is the source's own option (``url``, ``subject``...).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import anyio
from pydantic import BaseModel, ConfigDict, Field

from keel import DriverNotFoundError, PluginConflictError, parse_options
from keel_scheduler import hookspecs
from keel_scheduler.errors import SchedulerError
from keel_scheduler.intake import NoTarget, record_delivery
from keel_scheduler.queue import Queue

if TYPE_CHECKING:
    from keel import PluginHost

__all__ = ["Accept", "BrokerSettings", "make_accept", "run_brokers", "source_specs"]

log = logging.getLogger("keel_scheduler.brokers")

Accept = Callable[[str, Any], Awaitable[tuple[int, dict[str, Any]]]]


class BrokerSettings(BaseModel):
    model_config = ConfigDict(extra="allow")

    driver: str = Field(description="a source registered by a plugin (keel-source-nats: 'nats')")
    task: str | None = Field(default=None, description="the runnable each message enqueues")
    queue: str = "default"
    max_attempts: int = Field(default=5, ge=1)
    correlation_field: str | None = None
    signal: str = "message"


def source_specs(host: PluginHost) -> dict[str, tuple[str, Any]]:
    """Every registered broker source by name, with the plugin that registered it."""
    pm = host.pm
    caller = getattr(pm.hook, "keel_scheduler_sources", None)
    if caller is None or caller.spec is None:
        pm.add_hookspecs(hookspecs)
    found: dict[str, tuple[str, Any]] = {}
    for impl in pm.hook.keel_scheduler_sources.get_hookimpls():
        produced: Any = impl.function() or ()
        for spec in produced:
            if spec.name in found and found[spec.name][0] != impl.plugin_name:
                raise PluginConflictError("broker source", spec.name, found[spec.name][0], impl.plugin_name)
            found[spec.name] = (impl.plugin_name, spec)
    return found


def make_accept(queue: Queue, name: str, settings: BrokerSettings) -> Accept:
    """The ``accept`` a source calls per message: committed when it returns."""

    async def accept(delivery_id: str, payload: Any) -> tuple[int, dict[str, Any]]:
        if not delivery_id or len(delivery_id) > 200:
            raise SchedulerError(f"broker {name!r}: a delivery id must be 1 to 200 characters, got {delivery_id!r}")
        field = settings.correlation_field
        correlation = payload.get(field) if field and isinstance(payload, dict) else None
        try:
            return await record_delivery(
                queue, f"broker:{name}", delivery_id, payload, task=settings.task, job_queue=settings.queue,
                max_attempts=settings.max_attempts, correlation=correlation if isinstance(correlation, str) else None,
                signal=settings.signal,
            )  # fmt: skip
        except NoTarget as err:
            log.warning("broker %s: message %s: %s", name, delivery_id, err)
            return 422, {"error": str(err)}

    return accept


async def run_brokers(queue: Queue, host: PluginHost, brokers: Mapping[str, Mapping[str, Any]]) -> None:
    """Run every configured source until cancelled."""
    specs = source_specs(host)
    sources = []
    for name, raw in brokers.items():
        settings = parse_options(
            BrokerSettings, dict(raw), where=f"[settings.scheduler.brokers.{name}]", error=SchedulerError
        )
        if settings.driver not in specs:
            raise DriverNotFoundError(
                "broker source", settings.driver, specs, f"[settings.scheduler.brokers.{name}]",
                "install the source's plugin (pip install keel-source-nats)",
            )  # fmt: skip
        options = dict(settings.model_extra or {})
        sources.append((specs[settings.driver][1].factory(options), make_accept(queue, name, settings)))
    async with anyio.create_task_group() as tg:
        for source, accept in sources:
            tg.start_soon(source.run, accept)
