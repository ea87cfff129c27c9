"""The GenAI client metrics, read with the SDK's InMemoryMetricReader from real agent executions."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from test_agent_spans import _call, run_agent

import keel
from keel.testing import Reply, ScriptedModel
from keel_otel import OtelObserver, OtelSettings
from keel_otel import semconv as sc
from keel_otel.metrics import DURATION_BUCKETS, TOKEN_BUCKETS


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def metered(reader: InMemoryMetricReader) -> Iterator[OtelObserver]:
    observer = OtelObserver(exporter=InMemorySpanExporter(), metric_reader=reader)
    yield observer
    observer.shutdown()


def points(reader: InMemoryMetricReader) -> dict[str, tuple[str, list[HistogramDataPoint]]]:
    """Metric name -> (unit, data points) of everything the reader holds."""
    data = reader.get_metrics_data()
    out: dict[str, tuple[str, list[HistogramDataPoint]]] = {}
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                out[metric.name] = (metric.unit or "", list(metric.data.data_points))  # type: ignore[arg-type]
    return out


async def test_each_model_request_records_its_tokens_and_duration(
    metered: OtelObserver, reader: InMemoryMetricReader
) -> None:
    agent = keel.Agent("calc", "Use the tools.", actions=["add"])
    model = ScriptedModel(
        [
            Reply(tool_calls=_call("add", a=2, b=3).tool_calls, usage=keel.Usage(input_tokens=120, output_tokens=9)),
            Reply(text="5", usage=keel.Usage(input_tokens=150, output_tokens=1)),
        ]
    )
    await run_agent(metered, agent, model)
    found = points(reader)
    unit, tokens = found[sc.GEN_AI_CLIENT_TOKEN_USAGE]
    assert unit == "{token}"
    by_type = {p.attributes[sc.GEN_AI_TOKEN_TYPE]: p for p in tokens}
    assert by_type["input"].sum == 270 and by_type["input"].count == 2
    assert by_type["output"].sum == 10 and by_type["output"].count == 2
    for point in tokens:
        assert point.attributes[sc.GEN_AI_OPERATION_NAME] == "chat"
        assert point.attributes[sc.GEN_AI_PROVIDER_NAME] == "scripted"
        assert point.attributes[sc.GEN_AI_REQUEST_MODEL] == "scripted"
        assert point.attributes[sc.GEN_AI_RESPONSE_MODEL] == "scripted"
        assert tuple(point.explicit_bounds) == TOKEN_BUCKETS  # the conventions' advice is honoured
    unit, durations = found[sc.GEN_AI_CLIENT_OPERATION_DURATION]
    assert unit == "s"
    (duration,) = durations
    assert duration.count == 2 and sc.ERROR_TYPE not in duration.attributes
    assert tuple(duration.explicit_bounds) == DURATION_BUCKETS
    assert 0 <= duration.sum < 60


async def test_a_request_whose_answer_never_came_records_its_duration_with_the_error(
    metered: OtelObserver, reader: InMemoryMetricReader
) -> None:
    agent = keel.Agent("calc", "Answer.")
    await run_agent(metered, agent, ScriptedModel([]))  # no reply scripted: the request fails
    found = points(reader)
    assert sc.GEN_AI_CLIENT_TOKEN_USAGE not in found  # no answer, no tokens
    (duration,) = found[sc.GEN_AI_CLIENT_OPERATION_DURATION][1]
    assert duration.count == 1
    assert duration.attributes[sc.ERROR_TYPE] not in ("", None)
    assert duration.attributes[sc.GEN_AI_OPERATION_NAME] == "chat"


def test_metrics_follow_the_settings_and_the_standard_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    settings: Any = OtelSettings.parse({"endpoint": "http://127.0.0.1:4318"})
    assert settings.metrics_wanted() and settings.metrics_endpoint() == "http://127.0.0.1:4318/v1/metrics"
    assert settings.metrics_interval_ms() == 60_000
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    assert not settings.metrics_wanted()
    assert OtelSettings.parse({"metrics": True}).metrics_wanted()  # the table wins over the variable
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "soon")
    with pytest.raises(keel.StackError, match="OTEL_METRIC_EXPORT_INTERVAL"):
        settings.metrics_interval_ms()
    observer = OtelObserver({"exporter": "none"})
    assert observer.metrics is None  # nothing to export to: no meter at all
    observer.shutdown()
