"""``[settings.otel]``: where spans go and what they may carry. Cheap to import (no OpenTelemetry).

Every key is optional; what a key leaves unset comes from the standard OpenTelemetry environment
variables (``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``,
``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_BSP_*``,
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``), as any OpenTelemetry SDK would read them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

import keel
from keel_otel.semconv import CAPTURE_CONTENT_ENV

__all__ = ["OtelSettings", "capture_content_from_env"]

_TRUE = {"1", "true", "yes", "on", "span_only", "span_and_event"}
_FALSE = {"", "0", "false", "no", "off", "no_content", "event_only"}


class OtelSettings(BaseModel):
    """The ``[settings.otel]`` table of a stack."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="false turns the exporter off for this stack")
    exporter: Literal["otlp", "console", "none"] | None = Field(
        default=None,
        description="otlp (OTLP over HTTP/protobuf), console (stdout), or none; default: $OTEL_TRACES_EXPORTER, else otlp",
    )
    endpoint: str | None = Field(
        default=None,
        description="OTLP/HTTP base URL, e.g. http://127.0.0.1:4318 (/v1/traces is appended); "
        "default: $OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, $OTEL_EXPORTER_OTLP_ENDPOINT, http://localhost:4318",
    )
    headers: dict[str, str] | None = Field(
        default=None, description="HTTP headers for the collector; default: $OTEL_EXPORTER_OTLP_HEADERS"
    )
    timeout: float | None = Field(default=None, gt=0, description="seconds per export request (default 10)")
    service_name: str | None = Field(default=None, description="service.name; default $OTEL_SERVICE_NAME, else keel")
    resource: dict[str, str] = Field(default_factory=dict, description="extra resource attributes")
    capture_content: bool | None = Field(
        default=None,
        description="record model output, tool arguments and results on spans; "
        f"default: ${CAPTURE_CONTENT_ENV} (off when unset)",
    )
    max_content_chars: int = Field(default=16_384, ge=0, description="longest content value kept per attribute")
    max_open_spans: int = Field(
        default=10_000, ge=1, description="spans kept open at once; past it the oldest is ended as abandoned"
    )
    open_span_ttl: float = Field(
        default=3600.0, gt=0, description="seconds a span may stay open; then it is ended as abandoned"
    )
    max_queue_size: int | None = Field(
        default=None, ge=1, description="spans waiting for export before new ones are dropped (default 2048)"
    )
    schedule_delay: float | None = Field(default=None, gt=0, description="seconds between exports (default 5)")
    metrics: bool | None = Field(
        default=None,
        description="export the GenAI client metrics (token usage, operation duration); "
        "default: on unless $OTEL_METRICS_EXPORTER is none",
    )
    metrics_interval: float | None = Field(
        default=None, gt=0, description="seconds between metric exports; default $OTEL_METRIC_EXPORT_INTERVAL, else 60"
    )

    @field_validator("endpoint")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http(s) URL; write e.g. http://127.0.0.1:4318")
        return value

    @classmethod
    def parse(cls, table: Mapping[str, Any] | None, *, where: str = "[settings.otel]") -> OtelSettings:
        """Validate a settings table; every problem is named with the valid keys."""
        return keel.parse_options(cls, dict(table or {}), where=where, error=keel.StackError)

    def traces_endpoint(self) -> str | None:
        """The full URL spans are posted to, or ``None`` to let the exporter read the environment."""
        if self.endpoint is None:
            return None
        base = self.endpoint.rstrip("/")
        return base if base.endswith("/v1/traces") else base + "/v1/traces"

    def metrics_endpoint(self) -> str | None:
        """The full URL metrics are posted to, or ``None`` to let the exporter read the environment."""
        if self.endpoint is None:
            return None
        base = self.endpoint.rstrip("/")
        base = base.removesuffix("/v1/traces")
        return base if base.endswith("/v1/metrics") else base + "/v1/metrics"

    def metrics_wanted(self) -> bool:
        """Whether metrics are exported: the setting, else not when ``OTEL_METRICS_EXPORTER=none``."""
        if self.metrics is not None:
            return self.metrics
        return os.environ.get("OTEL_METRICS_EXPORTER", "").strip().lower() != "none"

    def metrics_interval_ms(self) -> float:
        if self.metrics_interval is not None:
            return self.metrics_interval * 1000
        raw = os.environ.get("OTEL_METRIC_EXPORT_INTERVAL", "").strip()
        try:
            return float(raw) if raw else 60_000.0
        except ValueError:
            raise keel.StackError(
                f"OTEL_METRIC_EXPORT_INTERVAL={raw!r} is not a number of milliseconds; set e.g. 60000, "
                "or metrics_interval = 60 (seconds) in [settings.otel]"
            ) from None

    def exporter_name(self) -> str:
        """The exporter to build: the setting, else ``OTEL_TRACES_EXPORTER``, else ``otlp``."""
        if self.exporter is not None:
            return self.exporter
        value = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() or "otlp"
        if value not in ("otlp", "console", "none"):
            raise keel.StackError(
                f"OTEL_TRACES_EXPORTER={value!r}: keel-otel exports with otlp (over HTTP), console or none; "
                "set one of those, or exporter = ... in [settings.otel]"
            )
        return value

    def content(self) -> bool:
        """Whether content is captured: the setting, else the standard environment variable."""
        return self.capture_content if self.capture_content is not None else capture_content_from_env()


def capture_content_from_env(environ: Mapping[str, str] | None = None) -> bool:
    """Read ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``; an unknown value is an error."""
    value = (environ if environ is not None else os.environ).get(CAPTURE_CONTENT_ENV, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise keel.StackError(
        f"{CAPTURE_CONTENT_ENV}={value!r} is not understood; set it to true or false "
        "(or SPAN_ONLY / SPAN_AND_EVENT / NO_CONTENT)"
    )
