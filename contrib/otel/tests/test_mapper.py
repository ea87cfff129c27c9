"""The mapper on its own: flows, environments, bounded memory, hostile event streams."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import keel
from keel.events import new_trace_id
from keel.testing import make_host
from keel_otel import OtelObserver
from keel_otel import semconv as sc
from keel_otel.spans import PinnedIds, SpanMapper


def make_mapper(**options: Any) -> tuple[SpanMapper, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    ids = PinnedIds()
    provider = TracerProvider(id_generator=ids)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return SpanMapper(provider.get_tracer("test"), ids, **options), exporter


class FlowEvents:
    """Events shaped as TriggerFlow publishes them: a trace id, no span id, source triggerflow."""

    def __init__(self, execution_id: str = "flow_1", t0: float = 1_000.0):
        self.execution_id = execution_id
        self.trace_id = new_trace_id()
        self.t = t0

    def __call__(self, kind: str, dt: float = 0.01, **payload: Any) -> keel.RuntimeEvent:
        self.t += dt
        return keel.RuntimeEvent(
            kind=kind, time=self.t, execution_id=self.execution_id, trace_id=self.trace_id,
            source="triggerflow", payload=payload,
        )  # fmt: skip


def one(spans: tuple[ReadableSpan, ...], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


def test_a_flow_is_an_invoke_workflow_span_with_a_step_span_per_attempt() -> None:
    mapper, exporter = make_mapper()
    ev = FlowEvents()
    for event in (
        ev("execution.started", flow="triage", resumed=False),
        ev("flow.step.started", path="0", step="classify", attempt=1),
        ev("flow.step.retry", path="0", step="classify", attempt=1, error={"type": "TimeoutError", "message": "slow"}),
        ev("flow.step.started", path="0", step="classify", attempt=2),
        ev("flow.step.completed", path="0", step="classify"),
        ev("execution.waiting", interrupts=[{"id": "i1", "name": "approval"}]),
        ev("flow.signal", interrupt="i1", request_id="r1"),
        ev("flow.step.started", path="1", step="reply", attempt=1),
        ev("flow.step.completed", path="1", step="reply"),
        ev("execution.completed", flow="triage", steps=3),
    ):
        mapper.handle(event)
    spans = exporter.get_finished_spans()
    root = one(spans, "invoke_workflow triage")
    assert root.kind is SpanKind.INTERNAL and root.parent is None
    assert format(root.context.trace_id, "032x") == ev.trace_id
    assert root.attributes is not None
    assert root.attributes[sc.GEN_AI_OPERATION_NAME] == "invoke_workflow"
    assert root.attributes[sc.GEN_AI_WORKFLOW_NAME] == "triage"
    assert root.attributes["keel.steps"] == 3
    assert [e.name for e in root.events] == ["waiting", "signal"]
    assert root.events[0].attributes is not None and root.events[0].attributes["keel.waits"] == ("approval",)
    steps = sorted((s for s in spans if s.name.startswith("step ")), key=lambda s: s.start_time or 0)
    assert [s.name for s in steps] == ["step classify", "step classify", "step reply"]
    assert all(s.parent is not None and s.parent.span_id == root.context.span_id for s in steps)
    assert all(s.context.trace_id == root.context.trace_id for s in steps)
    assert steps[0].status.status_code is StatusCode.ERROR
    assert steps[0].attributes is not None and steps[0].attributes[sc.ERROR_TYPE] == "TimeoutError"
    assert steps[1].attributes is not None and steps[1].attributes[sc.KEEL_ATTEMPT] == 2
    assert steps[1].status.status_code is StatusCode.UNSET
    assert mapper.open_spans == 0 and mapper.abandoned == 0


def test_a_flows_span_id_is_derived_so_another_observer_derives_the_same() -> None:
    ev = FlowEvents()
    events = [ev("execution.started", flow="f"), ev("flow.step.started", path="0", step="a", attempt=1)]
    ids = []
    for _ in range(2):
        mapper, exporter = make_mapper()
        for event in events:
            mapper.handle(event)
        mapper.close_all(ev.t)
        ids.append(one(exporter.get_finished_spans(), "invoke_workflow f").context.span_id)
    assert ids[0] == ids[1]


def test_a_failed_flow_ends_its_open_steps_with_the_error() -> None:
    mapper, exporter = make_mapper()
    ev = FlowEvents()
    mapper.handle(ev("execution.started", flow="f"))
    mapper.handle(ev("flow.step.started", path="0", step="hang", attempt=1))
    mapper.handle(ev("execution.failed", flow="f", steps=0, error="FlowError: lease lost"))
    spans = exporter.get_finished_spans()
    step, root = one(spans, "step hang"), one(spans, "invoke_workflow f")
    for span in (step, root):
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes is not None and span.attributes[sc.ERROR_TYPE] == "FlowError"
    assert mapper.open_spans == 0 and mapper.abandoned == 0


def test_spans_that_never_end_are_bounded_in_number() -> None:
    mapper, exporter = make_mapper(max_open=3)
    for i in range(10):
        ev = FlowEvents(f"flow_{i}", t0=1_000.0 + i * 0.001)
        mapper.handle(ev("execution.started", flow="stuck"))
    assert mapper.open_spans == 3
    assert mapper.abandoned == 7
    abandoned = exporter.get_finished_spans()
    assert len(abandoned) == 7
    for span in abandoned:
        assert span.attributes is not None and span.attributes[sc.KEEL_OTEL_ABANDONED] is True
        assert span.status.status_code is StatusCode.ERROR


def test_spans_that_never_end_are_bounded_in_age() -> None:
    mapper, exporter = make_mapper(ttl=60.0)
    old = FlowEvents("flow_old", t0=1_000.0)
    mapper.handle(old("execution.started", flow="stuck"))
    mapper.handle(old("flow.step.started", path="0", step="forever", attempt=1))
    young = FlowEvents("flow_young", t0=1_030.0)
    mapper.handle(young("execution.started", flow="live"))
    assert mapper.open_spans == 3
    mapper.handle(young("flow.step.started", dt=40.0, path="0", step="a", attempt=1))  # now 1070: old is 70 s old
    assert mapper.open_spans == 2  # the young flow and its step
    assert sorted(s.name for s in exporter.get_finished_spans()) == ["invoke_workflow stuck", "step forever"]
    assert mapper.abandoned == 2
    mapper.handle(young("execution.completed", flow="live"))
    assert mapper.open_spans == 0


class Flaky:
    """An environment that fails its first start, then comes up; its health fails when told."""

    starts = 0

    def __init__(self, options: dict[str, Any]):
        self.name = options["name"]
        self.healthy = True

    @property
    def status(self) -> str:
        return "ready"

    async def start(self) -> None:
        Flaky.starts += 1
        if Flaky.starts == 1:
            raise OSError("port 9999 is taken")

    async def stop(self) -> None:
        pass

    async def health(self) -> keel.Health:
        return keel.Health(ok=self.healthy, detail="" if self.healthy else "no pong")


class FlakyPlugin:
    @keel.hookimpl
    def keel_environments(self) -> list[keel.EnvironmentSpec]:
        restart = keel.RestartPolicy(backoff_seconds=0.01)
        return [keel.EnvironmentSpec(name="flaky", kind="test", factory=Flaky, restart=restart)]


async def test_environment_starts_restarts_and_stops_are_spans(tmp_path) -> None:
    Flaky.starts = 0
    exporter = InMemorySpanExporter()
    observer = OtelObserver(exporter=exporter)
    (tmp_path / "keel.toml").write_text('[environments.box]\ndriver = "flaky"\nhealth_interval = 30\n')
    async with keel.Runtime(make_host(observer, FlakyPlugin()), keel.load_stack(tmp_path / "keel.toml")) as runtime:
        env = await runtime.environments.ensure("box")
        env.healthy = False  # type: ignore[attr-defined]
        await runtime.environments.check("box")
    observer.force_flush()
    spans = exporter.get_finished_spans()
    start = one(spans, "environment start box")
    assert start.status.status_code is StatusCode.UNSET
    assert start.attributes is not None and start.attributes[sc.KEEL_ENVIRONMENT_RESTARTS] == 1
    assert start.attributes[sc.KEEL_ENVIRONMENT_DRIVER] == "flaky"
    assert [e.name for e in start.events] == ["restarting", "attempt"]
    assert "port 9999 is taken" in str(start.events[0].attributes)
    health = one(spans, "environment health box")
    assert health.status.status_code is StatusCode.ERROR and "no pong" in (health.status.description or "")
    one(spans, "environment stop box")
    observer.shutdown()


async def test_the_entry_point_exports_only_for_a_stack_that_asks(tmp_path, monkeypatch) -> None:
    import keel_otel.plugin as entry

    plain = keel.Runtime(make_host(entry), keel.Stack())
    assert entry.observer_for(plain) is None
    (tmp_path / "keel.toml").write_text('[settings.otel]\nexporter = "none"\nservice_name = "billing"\n')
    configured = keel.Runtime(make_host(entry), keel.load_stack(tmp_path / "keel.toml"))
    observer = entry.observer_for(configured)
    assert observer is not None
    assert observer.provider.resource.attributes["service.name"] == "billing"
    twin = keel.Runtime(make_host(entry), keel.load_stack(tmp_path / "keel.toml"))
    assert entry.observer_for(twin) is observer  # one exporter per configuration, not per runtime
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    assert entry.observer_for(keel.Runtime(make_host(entry), keel.Stack())) is not None
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert entry.observer_for(keel.Runtime(make_host(entry), keel.Stack())) is None
    entry.shutdown()


async def test_the_entry_point_maps_a_runtimes_events(tmp_path, monkeypatch) -> None:
    import keel_otel.plugin as entry
    from keel.testing import ScriptedModel

    exporter = InMemorySpanExporter()
    (tmp_path / "keel.toml").write_text('[settings.otel]\nexporter = "none"\n')
    async with keel.Runtime(make_host(entry), keel.load_stack(tmp_path / "keel.toml")) as runtime:
        observer = entry.observer_for(runtime)
        assert observer is not None
        observer.provider.add_span_processor(SimpleSpanProcessor(exporter))
        runtime.use_model(ScriptedModel(["hi"]))
        await keel.Agent("greeter", "Greet.").run("x", runtime=runtime)
    assert sorted(s.name for s in exporter.get_finished_spans()) == ["chat scripted", "invoke_agent greeter"]
    entry.shutdown()


async def test_bad_settings_say_which_key_and_export_nothing(tmp_path, caplog) -> None:
    import keel_otel.plugin as entry

    (tmp_path / "keel.toml").write_text('[settings.otel]\nendpoint = "127.0.0.1:4318"\nexporterr = "otlp"\n')
    runtime = keel.Runtime(make_host(entry), keel.load_stack(tmp_path / "keel.toml"))
    with pytest.raises(keel.StackError) as info:
        entry.observer_for(runtime)
    message = str(info.value)
    assert "[settings.otel]" in message and "exporterr" in message and "http://127.0.0.1:4318" in message
    async with runtime:
        for _ in range(3):
            runtime.publish(keel.RuntimeEvent(kind="execution.started", payload={"agent": "a"}))
        with anyio.fail_after(5):
            while runtime.bus.published < 3:
                await anyio.sleep(0.01)
    errors = [r for r in caplog.records if r.name == "keel_otel"]
    assert len(errors) == 1  # said once, not once per event
    assert runtime.bus.dropped == {}  # the observer did not raise
    entry.shutdown()


def test_a_wrong_content_capture_value_is_an_error_naming_the_variable(monkeypatch) -> None:
    monkeypatch.setenv(sc.CAPTURE_CONTENT_ENV, "maybe")
    with pytest.raises(keel.StackError, match=sc.CAPTURE_CONTENT_ENV):
        OtelObserver(exporter=InMemorySpanExporter())
    for value, expected in (("SPAN_ONLY", True), ("no_content", False), ("1", True), ("", False)):
        monkeypatch.setenv(sc.CAPTURE_CONTENT_ENV, value)
        assert keel_otel_capture() is expected


def keel_otel_capture() -> bool:
    from keel_otel import capture_content_from_env

    return capture_content_from_env()


# --------------------------------------------------------------------- hostile event streams

KINDS = [
    "execution.started", "execution.completed", "execution.failed", "execution.cancelled", "execution.waiting",
    "model.request", "model.delta", "model.tool_call", "model.response", "output.parsed", "output.retry",
    "action.requested", "action.approved", "action.started", "action.completed", "action.failed",
    "action.denied", "flow.step.started", "flow.step.completed", "flow.step.failed", "flow.step.retry", "flow.signal",
    "environment.starting", "environment.ready", "environment.failed", "environment.restarting",
    "environment.unhealthy", "environment.stopped", "something.else",
]  # fmt: skip

junk = st.one_of(st.none(), st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=2))
events = st.builds(
    lambda kind, execution, span, trace, t, payload, source: keel.RuntimeEvent(
        kind=kind, execution_id=execution, span_id=span, trace_id=trace, time=t, payload=payload, source=source
    ),
    st.sampled_from(KINDS),
    st.sampled_from([None, "exe_a", "exe_b"]),
    st.sampled_from([None, "00f067aa0ba902b7", "zz", "0000000000000000"]),
    st.sampled_from([None, "4bf92f3577b34da6a3ce929d0e0e4736", "short"]),
    st.floats(min_value=0, max_value=10_000, allow_nan=False),
    st.dictionaries(
        st.sampled_from(
            [
                "agent",
                "flow",
                "model",
                "call_id",
                "action",
                "path",
                "step",
                "name",
                "usage",
                "error",
                "attempt",
                "errors",
                "text",
                "id",
                "finish_reason",
                "interrupts",
                "restarts",
                "arguments",
                "content",
                "input",
                "output",
                "request",
                "result",
            ]
        ),
        junk,
        max_size=6,
    ),
    st.sampled_from(["keel", "triggerflow"]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(events, max_size=40), st.booleans())
def test_any_event_stream_maps_without_raising_and_stays_bounded(
    stream: list[keel.RuntimeEvent], content: bool
) -> None:
    mapper, exporter = make_mapper(max_open=4, ttl=100.0, capture_content=content)
    for event in stream:
        mapper.handle(event)
        assert mapper.open_spans <= 4
    mapper.close_all(time.time())
    assert mapper.open_spans == 0
    for span in exporter.get_finished_spans():
        assert span.end_time is not None and span.start_time is not None
        assert span.end_time >= span.start_time


def test_a_flow_that_carries_span_ids_nests_an_agent_run_in_its_step() -> None:
    mapper, exporter = make_mapper()
    trace, root, step = new_trace_id(), "1111111111111111", "2222222222222222"

    def event(kind: str, t: float, span: str | None, parent: str | None = None, **payload: Any) -> keel.RuntimeEvent:
        source = "keel" if "agent" in payload else "triggerflow"
        return keel.RuntimeEvent(
            kind=kind, time=t, execution_id="flow_1" if source == "triggerflow" else "exe_1", trace_id=trace,
            span_id=span, parent_span_id=parent, source=source, payload=payload,
        )  # fmt: skip

    for ev in (
        event("execution.started", 1.0, root, flow="f"),
        event("flow.step.started", 1.1, step, root, path="0", step="writer", attempt=1),
        event("execution.started", 1.2, "3333333333333333", step, agent="writer", model="scripted"),
        event("execution.completed", 1.3, "3333333333333333", step, agent="writer"),
        event("flow.step.completed", 1.4, step, root, path="0", step="writer"),
        event("execution.completed", 1.5, root, flow="f", steps=1),
    ):
        mapper.handle(ev)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert format(spans["invoke_workflow f"].context.span_id, "016x") == root
    assert format(spans["step writer"].context.span_id, "016x") == step
    assert spans["step writer"].parent is not None and format(spans["step writer"].parent.span_id, "016x") == root
    agent = spans["invoke_agent writer"]
    assert agent.parent is not None and format(agent.parent.span_id, "016x") == step
    assert {s.context.trace_id for s in spans.values()} == {int(trace, 16)}


def test_a_flow_resumed_in_another_process_is_a_child_of_its_first_run_in_the_same_trace() -> None:
    mapper, exporter = make_mapper()
    trace, first_span, second_span = new_trace_id(), "1" * 16, "2" * 16

    def event(kind: str, t: float, span: str, parent: str | None = None, **payload: Any) -> keel.RuntimeEvent:
        return keel.RuntimeEvent(
            kind=kind, time=t, execution_id="flow_9", trace_id=trace, span_id=span, parent_span_id=parent,
            source="triggerflow", payload=payload,
        )  # fmt: skip

    # the first process ran until a wait; the second (a new mapper would do the same) resumes it
    mapper.handle(event("execution.started", 1.0, first_span, flow="approve", resumed=False))
    mapper.handle(event("execution.waiting", 1.1, first_span, interrupts=[]))
    mapper.close_all(1.2)
    mapper.handle(event("execution.started", 5.0, second_span, first_span, flow="approve", resumed=True))
    mapper.handle(event("execution.completed", 5.5, second_span, first_span))
    first, second = sorted(exporter.get_finished_spans(), key=lambda s: s.start_time or 0)
    assert first.context.trace_id == second.context.trace_id == int(trace, 16)
    assert first.parent is None
    assert second.parent is not None and second.parent.span_id == int(first_span, 16)
    assert second.context.span_id == int(second_span, 16)


def test_a_signal_answer_is_content_and_stays_off_the_span() -> None:
    mapper, exporter = make_mapper()
    ev = FlowEvents()
    for event in (
        ev("execution.started", flow="approve", resumed=False),
        ev("flow.signal", interrupt="i1", request_id="r1", value="approved by Ada, card 4111"),
        ev("execution.completed", output="done"),
    ):
        mapper.handle(event)
    (span,) = exporter.get_finished_spans()
    (signal,) = [e for e in span.events if e.name == "signal"] or [None]
    assert signal is not None and signal.attributes.get("keel.request_id") == "r1"
    assert "4111" not in str(span.attributes) + str([dict(e.attributes or {}) for e in span.events])
