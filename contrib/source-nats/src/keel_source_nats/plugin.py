"""The entry point ``source-nats`` (group ``keel``): registers the ``nats`` broker source with the
scheduler's ``keel_scheduler_sources`` hook. Cheap to import: nats-py loads when a source runs.

``optionalhook=True``: the hook is the scheduler's own; without keel-scheduler installed this
plugin loads and registers nothing."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import keel


def create_source(options: dict[str, Any]) -> Any:
    from keel_source_nats.source import NatsSource

    return NatsSource(**options)


@keel.hookimpl(optionalhook=True)
def keel_scheduler_sources() -> Iterator[Any]:
    yield SimpleNamespace(name="nats", description="NATS JetStream pull consumer", factory=create_source)
