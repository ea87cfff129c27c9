"""NATS JetStream as a trigger source for keel-scheduler (see plugin.py and source.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from keel import lazy_exports

if TYPE_CHECKING:
    from keel_source_nats.source import NatsSource, NatsSourceOptions

__all__ = ["NatsSource", "NatsSourceOptions"]

#: loaded on first use: the entry point (keel_source_nats.plugin) imports this package, and
#: discovery (`keel plugins`, every `keel` start) must not import the source and its options model
_LAZY = {"NatsSource": "keel_source_nats.source", "NatsSourceOptions": "keel_source_nats.source"}


def __getattr__(name: str) -> Any:
    return _lazy(name)


_lazy = lazy_exports(globals(), _LAZY)
