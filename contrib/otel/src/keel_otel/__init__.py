"""keel-otel: OpenTelemetry traces of Keel executions, following the GenAI semantic conventions.

    [settings.otel]                      # in keel.toml; or just set OTEL_EXPORTER_OTLP_ENDPOINT
    endpoint = "http://127.0.0.1:4318"   # any OTLP/HTTP collector: Phoenix, Jaeger, Langfuse, ...

Or, in code (tests, custom exporters)::

    observer = keel_otel.OtelObserver(exporter=InMemorySpanExporter())
    runtime = keel.Runtime(keel.testing.make_host(observer))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from keel import lazy_exports
from keel_otel.plugin import flush, observer_for, otel_wanted, shutdown

if TYPE_CHECKING:
    from keel_otel.observer import OtelObserver
    from keel_otel.settings import OtelSettings, capture_content_from_env
    from keel_otel.spans import SpanMapper

__all__ = [
    "OtelObserver",
    "OtelSettings",
    "SpanMapper",
    "capture_content_from_env",
    "flush",
    "observer_for",
    "otel_wanted",
    "shutdown",
]

#: loaded on first use: the entry point imports this package, and discovery must stay cheap
_LAZY = {
    "OtelObserver": "keel_otel.observer",
    "SpanMapper": "keel_otel.spans",
    "OtelSettings": "keel_otel.settings",
    "capture_content_from_env": "keel_otel.settings",
}


def __getattr__(name: str) -> Any:  # OpenTelemetry and pydantic models load on first use
    return _lazy(name)


_lazy = lazy_exports(globals(), _LAZY)
