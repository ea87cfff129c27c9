"""NATS JetStream as a trigger source for keel-scheduler (see plugin.py and source.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keel_source_nats.source import NatsSource, NatsSourceOptions

__all__ = ["NatsSource", "NatsSourceOptions"]

#: loaded on first use: the entry point (keel_source_nats.plugin) imports this package, and
#: discovery (`keel plugins`, every `keel` start) must not import the source and its options model
_LAZY = {"NatsSource": "keel_source_nats.source", "NatsSourceOptions": "keel_source_nats.source"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'keel_source_nats' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
