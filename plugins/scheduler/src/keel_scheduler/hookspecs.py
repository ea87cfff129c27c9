"""The scheduler's own extension point: broker trigger sources. keel-scheduler adds this spec to the
host through the kernel's ``keel_addhooks`` hook, whichever order plugins load in.

A source plugin (contrib/source-nats) implements the hook in the module its ``keel`` entry point
names, with ``optionalhook=True`` so that it loads (and does nothing) where the scheduler is absent.
It never imports keel_scheduler: a source gets an ``accept`` callable and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pluggy import HookspecMarker

hookspec = HookspecMarker("keel")


@hookspec
def keel_scheduler_sources() -> Iterable[Any]:
    """Register broker trigger sources for ``keel intake``.

    Each item has ``name`` (what ``driver = "..."`` in ``[settings.scheduler.brokers.<name>]``
    names) and ``factory(options: dict) -> source``, where ``source.run(accept)`` is an async
    function that consumes until cancelled. For each message it calls ``await accept(delivery_id,
    payload)``, which commits the inbox row and its job in one transaction and returns ``(status,
    body)`` (202 recorded, 200 a duplicate, 422 nothing to do); the source acknowledges the
    message **only after** ``accept`` returned, and leaves it unacknowledged (for redelivery) when
    ``accept`` raised. ``delivery_id`` must be the same on every redelivery (the broker's message id).

    :returns: source descriptors.

    Example::

        @keel.hookimpl(optionalhook=True)
        def keel_scheduler_sources():
            yield SimpleNamespace(name="nats", factory=lambda options: NatsSource(**options))
    """
    raise NotImplementedError
