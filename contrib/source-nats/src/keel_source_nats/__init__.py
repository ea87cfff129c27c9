"""NATS JetStream as a trigger source for keel-scheduler (see plugin.py and source.py)."""

from keel_source_nats.source import NatsSource, NatsSourceOptions

__all__ = ["NatsSource", "NatsSourceOptions"]
