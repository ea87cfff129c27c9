"""``OtelObserver``: a ``keel_on_runtime_event`` observer that exports spans through its own
TracerProvider (so that the spans can carry the kernel's ids) and a BatchSpanProcessor (so that
exporting happens on the SDK's worker thread, never on the event loop)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

import keel
from keel_otel.metrics import MetricsMapper
from keel_otel.settings import OtelSettings
from keel_otel.spans import PinnedIds, SpanMapper

__all__ = ["OtelObserver"]

_SCOPE = "keel-otel"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("keel-otel")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0"


class OtelObserver:
    """Exports a runtime's executions as OpenTelemetry spans.

    Register an instance as a plugin (``make_host(OtelObserver(...))``, or ``host.register``), or
    let the ``otel`` entry point build one from the stack's ``[settings.otel]``.

    :param settings: the ``[settings.otel]`` table (a dict or :class:`OtelSettings`).
    :param exporter: export to this instead of what the settings name (an ``InMemorySpanExporter``
        in tests, any SDK exporter otherwise); still batched.
    :param processor: a span processor of your own instead (then ``exporter`` is ignored).
    :param metric_reader: read the GenAI client metrics with this (an ``InMemoryMetricReader`` in
        tests) instead of exporting them as the settings say.
    """

    def __init__(
        self,
        settings: OtelSettings | Mapping[str, Any] | None = None,
        *,
        exporter: SpanExporter | None = None,
        processor: SpanProcessor | None = None,
        metric_reader: MetricReader | None = None,
    ):
        self.settings = settings if isinstance(settings, OtelSettings) else OtelSettings.parse(settings)
        self._ids = PinnedIds()
        attributes: dict[str, Any] = {**self.settings.resource}
        if self.settings.service_name:
            attributes[SERVICE_NAME] = self.settings.service_name
        resource = Resource.create(attributes)  # merges OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME
        if resource.attributes.get(SERVICE_NAME) == "unknown_service":
            resource = resource.merge(Resource({SERVICE_NAME: "keel"}))
        self.provider = TracerProvider(resource=resource, id_generator=self._ids)
        if processor is None:
            exporter = exporter if exporter is not None else self._exporter()
            if exporter is not None:
                processor = BatchSpanProcessor(
                    exporter,
                    max_queue_size=self.settings.max_queue_size,
                    max_export_batch_size=(
                        min(512, self.settings.max_queue_size) if self.settings.max_queue_size is not None else None
                    ),
                    schedule_delay_millis=(
                        self.settings.schedule_delay * 1000 if self.settings.schedule_delay is not None else None
                    ),
                )
        if processor is not None:
            self.provider.add_span_processor(processor)
        self.mapper = SpanMapper(
            self.provider.get_tracer(_SCOPE, _version()),
            self._ids,
            capture_content=self.settings.content(),
            max_content_chars=self.settings.max_content_chars,
            max_open=self.settings.max_open_spans,
            ttl=self.settings.open_span_ttl,
        )
        self.meter_provider: MeterProvider | None = None
        self.metrics: MetricsMapper | None = None
        if metric_reader is None and exporter is None and processor is None and self.settings.metrics_wanted():
            metric_reader = self._metric_reader()
        if metric_reader is not None:
            self.meter_provider = MeterProvider(metric_readers=[metric_reader], resource=resource)
            meter = self.meter_provider.get_meter(_SCOPE, _version())
            self.metrics = MetricsMapper(meter, max_open=self.settings.max_open_spans)

    def _metric_reader(self) -> MetricReader | None:
        name = self.settings.exporter_name()
        if name == "none":
            return None
        interval = self.settings.metrics_interval_ms()
        if name == "console":
            return PeriodicExportingMetricReader(ConsoleMetricExporter(), export_interval_millis=interval)
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        exporter = OTLPMetricExporter(
            endpoint=self.settings.metrics_endpoint(), headers=self.settings.headers, timeout=self.settings.timeout
        )
        return PeriodicExportingMetricReader(exporter, export_interval_millis=interval)

    def _exporter(self) -> SpanExporter | None:
        name = self.settings.exporter_name()
        if name == "none":
            return None
        if name == "console":
            return ConsoleSpanExporter(service_name=self.settings.service_name)
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(
            endpoint=self.settings.traces_endpoint(),
            headers=self.settings.headers,
            timeout=self.settings.timeout,
        )

    @keel.hookimpl
    def keel_on_runtime_event(self, event: keel.RuntimeEvent) -> None:
        self.handle(event)

    def handle(self, event: keel.RuntimeEvent) -> None:
        """Map one event to spans and metric points (what the hook does)."""
        self.mapper.handle(event)
        if self.metrics is not None:
            self.metrics.handle(event)

    def force_flush(self, timeout: float = 30.0) -> bool:
        """Export every ended span (and the metrics) now; ``False`` if that did not finish within
        ``timeout`` seconds."""
        done = self.provider.force_flush(int(timeout * 1000))
        if self.meter_provider is not None:
            done = self.meter_provider.force_flush(timeout * 1000) and done
        return done

    def shutdown(self) -> None:
        """End the spans still open (as abandoned), export everything, and stop the exporters."""
        self.mapper.close_all(time.time())
        self.provider.shutdown()
        if self.meter_provider is not None:
            self.meter_provider.shutdown()

    @property
    def abandoned(self) -> int:
        """Spans keel-otel ended itself because their end never came."""
        return self.mapper.abandoned
