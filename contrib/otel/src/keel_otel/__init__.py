"""keel-otel: OpenTelemetry traces of Keel executions, following the GenAI semantic conventions.

    [settings.otel]                      # in keel.toml; or just set OTEL_EXPORTER_OTLP_ENDPOINT
    endpoint = "http://127.0.0.1:4318"   # any OTLP/HTTP collector: Phoenix, Jaeger, Langfuse, ...

Or, in code (tests, custom exporters)::

    observer = keel_otel.OtelObserver(exporter=InMemorySpanExporter())
    runtime = keel.Runtime(keel.testing.make_host(observer))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from keel_otel.plugin import flush, observer_for, shutdown
from keel_otel.settings import OtelSettings, capture_content_from_env

if TYPE_CHECKING:
    from keel_otel.observer import OtelObserver
    from keel_otel.spans import SpanMapper

__all__ = [
    "OtelObserver",
    "OtelSettings",
    "SpanMapper",
    "capture_content_from_env",
    "flush",
    "observer_for",
    "shutdown",
]


def __getattr__(name: str) -> Any:  # OpenTelemetry is imported only when these are used
    if name == "OtelObserver":
        from keel_otel.observer import OtelObserver

        return OtelObserver
    if name == "SpanMapper":
        from keel_otel.spans import SpanMapper

        return SpanMapper
    raise AttributeError(f"module 'keel_otel' has no attribute {name!r}")
