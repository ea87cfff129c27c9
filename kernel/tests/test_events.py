"""The event bus: fan-out, bounded buffers that drop and count, isolated observers."""

from __future__ import annotations

import anyio
import pytest

import keel
from keel.events import EventBus
from keel.stack import Stack
from keel.testing import ScriptedModel, make_host


async def test_subscription_receives_published_events() -> None:
    bus = EventBus()
    sub = bus.subscribe("ui")
    for i in range(3):
        bus.publish(keel.RuntimeEvent(kind="t", seq=i))
    bus.close()
    assert [e.seq async for e in sub] == [0, 1, 2]


async def test_a_slow_subscriber_drops_and_counts_never_blocks() -> None:
    bus = EventBus(buffer=4)
    slow = bus.subscribe("slow")
    with anyio.fail_after(1):
        for i in range(10):
            bus.publish(keel.RuntimeEvent(kind="t", seq=i))
    assert bus.dropped == {"slow": 6}
    bus.close()
    assert [e.seq async for e in slow] == [0, 1, 2, 3]


def test_drain_takes_what_was_delivered_without_waiting() -> None:
    bus = EventBus()
    sub = bus.subscribe("late")
    assert sub.drain() == []  # nothing yet: returns at once
    for i in range(3):
        bus.publish(keel.RuntimeEvent(kind="t", seq=i))
    assert [e.seq for e in sub.drain()] == [0, 1, 2]
    assert sub.drain() == []  # taken once
    sub.close()
    assert sub.drain() == []  # closed: nothing, no error


class Recorder:
    def __init__(self) -> None:
        self.kinds: list[str] = []

    @keel.hookimpl
    def keel_on_runtime_event(self, event: keel.RuntimeEvent) -> None:
        self.kinds.append(event.kind)


class Exploder:
    @keel.hookimpl
    def keel_on_runtime_event(self, event: keel.RuntimeEvent) -> None:
        raise RuntimeError("observer bug")


class AsyncObserver:
    def __init__(self) -> None:
        self.kinds: list[str] = []

    @keel.hookimpl
    async def keel_on_runtime_event(self, event: keel.RuntimeEvent) -> None:
        await anyio.sleep(0)
        self.kinds.append(event.kind)


async def test_observers_get_every_event_and_a_failing_one_is_isolated() -> None:
    recorder, async_observer = Recorder(), AsyncObserver()
    host = make_host(Exploder(), recorder, async_observer)
    async with keel.Runtime(host, Stack()) as runtime:
        for kind in ("a", "b", "c"):
            runtime.publish(keel.RuntimeEvent(kind=kind))
        await anyio.sleep(0.05)
    assert recorder.kinds == ["a", "b", "c"]
    assert async_observer.kinds == ["a", "b", "c"]
    assert runtime.bus.dropped["observer:" + host.observers()[0][0]] == 3


async def test_a_stalled_observer_does_not_stall_publishing() -> None:
    gate = anyio.Event()

    class Stuck:
        @keel.hookimpl
        async def keel_on_runtime_event(self, event: keel.RuntimeEvent) -> None:
            await gate.wait()

    async with keel.Runtime(make_host(Stuck()), Stack(), buffer=8) as runtime:
        with anyio.fail_after(1):
            for _ in range(100):
                runtime.publish(keel.RuntimeEvent(kind="x"))
        assert runtime.bus.dropped["observers"] >= 90
        gate.set()


async def test_an_observer_that_asks_for_the_runtime_gets_the_one_whose_events_it_sees(tmp_path) -> None:
    (tmp_path / "keel.toml").write_text('[settings.probe]\nlabel = "from the stack"\n')
    seen: list[tuple[str, str]] = []

    class Probe:
        @keel.hookimpl
        def keel_on_runtime_event(self, event: keel.RuntimeEvent, runtime: keel.Runtime) -> None:
            seen.append((event.kind, runtime.stack.settings("probe")["label"]))

    recorder = Recorder()  # an observer without the parameter still gets the event alone
    host = make_host(Probe(), recorder)
    async with keel.Runtime(host, keel.load_stack(tmp_path / "keel.toml")) as runtime:
        runtime.publish(keel.RuntimeEvent(kind="a"))
        with anyio.fail_after(2):
            while not seen or not recorder.kinds:
                await anyio.sleep(0.01)
    assert seen == [("a", "from the stack")]
    assert recorder.kinds == ["a"]


async def test_a_fast_observer_keeps_up_with_executions_that_emit_in_bursts() -> None:
    """An execution emits many events per turn of the event loop; the dispatcher must take every
    queued event per turn, not one, or an instant observer still loses most of them."""
    seen: list[str] = []

    class Counter:
        @keel.hookimpl
        def keel_on_runtime_event(self, event: keel.RuntimeEvent) -> None:
            seen.append(event.kind)

    agent = keel.Agent("burst", "Answer.", output={"text": str})
    answer = '{"text": "' + "x" * 400 + '"}'
    async with keel.Runtime(make_host(Counter()), Stack()) as runtime:
        runtime.use_model(ScriptedModel(lambda request: answer, chunks=8))
        for _ in range(100):  # about 60 events each, 6,000 in all, through a 1,024-event buffer
            await (await agent.start("go", runtime=runtime)).result()
        published = runtime.bus.published
    assert runtime.bus.dropped == {}
    assert len(seen) == published > 5000


def test_the_unchecked_builder_equals_a_validated_event() -> None:
    fields = {
        "id": "ev_1", "kind": "model.delta", "time": 1.5, "execution_id": "ex_1", "seq": 3, "trace_id": "t",
        "span_id": "s", "parent_span_id": None, "source": "keel", "level": "info", "tenant": "acme",
        "payload": {"text": "hi"},
    }  # fmt: skip
    fast = keel.RuntimeEvent.unchecked(dict(fields))
    assert fast == keel.RuntimeEvent.model_validate(fields)
    assert fast.model_dump() == fields and fast.model_fields_set == set(fields)
    fast.level = "warning"  # an ordinary model afterwards
    assert keel.RuntimeEvent.model_validate_json(fast.model_dump_json()).level == "warning"
    with pytest.raises(keel.KeelError, match=r"needs every field; missing \['tenant'\]"):
        keel.RuntimeEvent.unchecked({k: v for k, v in fields.items() if k != "tenant"})
