"""keel.inline_observer: observers the bus calls from publish, in order, each failure contained."""

from __future__ import annotations

import logging

import anyio
import pytest

import keel
from keel.events import EventBus
from keel.stack import Stack
from keel.testing import ScriptedModel, make_host


class Queue:
    """An inline observer as the contract wants it: one append, and return."""

    def __init__(self) -> None:
        self.events: list[keel.RuntimeEvent] = []

    @keel.hookimpl
    @keel.inline_observer
    def keel_on_runtime_event(self, event: keel.RuntimeEvent, runtime: keel.Runtime) -> None:
        self.events.append(event)


class Raising:
    def __init__(self) -> None:
        self.calls = 0

    @keel.hookimpl
    @keel.inline_observer
    def keel_on_runtime_event(self, event: keel.RuntimeEvent) -> None:
        self.calls += 1
        raise RuntimeError("the sink is broken")


class Awaiting:
    @keel.hookimpl
    @keel.inline_observer
    async def keel_on_runtime_event(self, event: keel.RuntimeEvent) -> None:
        pass  # pragma: no cover - never awaited: an inline observer must not await


class Dispatched:
    def __init__(self) -> None:
        self.kinds: list[str] = []

    @keel.hookimpl
    def keel_on_runtime_event(self, event: keel.RuntimeEvent) -> None:
        self.kinds.append(event.kind)


async def test_an_inline_observer_has_each_event_when_publish_returns_in_order() -> None:
    queue = Queue()
    async with keel.Runtime(make_host(queue), Stack()) as runtime:
        for kind in ("a", "b", "c"):
            runtime.publish(keel.RuntimeEvent(kind=kind))
            assert queue.events[-1].kind == kind  # no loop turn needed: it ran inside publish
        assert runtime.bus.has_listeners
    assert [e.kind for e in queue.events] == ["a", "b", "c"]


async def test_a_raising_inline_observer_is_disabled_and_reported_and_the_execution_succeeds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    raising, queue, dispatched = Raising(), Queue(), Dispatched()
    host = make_host(raising, queue, dispatched)
    name = next(plugin for plugin, _ in host.observers() if plugin == host.pm.get_name(raising))
    agent = keel.Agent("inline", "Answer.", output={"text": str})
    with caplog.at_level(logging.ERROR, logger="keel.events"):
        async with keel.Runtime(host, Stack()) as runtime:
            runtime.use_model(ScriptedModel(lambda request: '{"text": "fine"}', chunks=4))
            execution = await agent.start("go", runtime=runtime)
            assert (await execution.result()).text == "fine"
            published = runtime.bus.published
    assert raising.calls == 1  # disabled after its first failure, not called per event
    assert runtime.bus.disabled == {name: "raised RuntimeError: the sink is broken"}
    assert runtime.bus.dropped == {f"observer:{name}": 1}
    assert "disabled for this runtime" in caplog.text and "the sink is broken" in caplog.text
    assert len(queue.events) == published == len(dispatched.kinds)  # the others had every event
    assert [e.seq for e in queue.events if e.execution_id == execution.id] == sorted(
        e.seq for e in queue.events if e.execution_id == execution.id
    )


async def test_an_inline_observer_that_returns_an_awaitable_is_disabled_with_the_reason() -> None:
    host = make_host(Awaiting())
    async with keel.Runtime(host, Stack()) as runtime:
        runtime.publish(keel.RuntimeEvent(kind="a"))
        runtime.publish(keel.RuntimeEvent(kind="b"))
    [(plugin, why)] = runtime.bus.disabled.items()
    assert "returned coroutine, not None" in why
    assert runtime.bus.dropped == {f"observer:{plugin}": 1}


async def test_without_the_mark_an_observer_still_goes_through_the_dispatcher() -> None:
    dispatched = Dispatched()
    bus = EventBus(make_host(dispatched).observers())
    bus.publish(keel.RuntimeEvent(kind="a"))
    assert dispatched.kinds == []  # queued for the dispatcher task, not called inline
    async with anyio.create_task_group() as group:
        group.start_soon(bus.run_observers)
        with anyio.fail_after(2):
            while not dispatched.kinds:
                await anyio.sleep(0)
        bus.close()
    assert dispatched.kinds == ["a"]


class Bound:
    """keel.inline_observer(bind=...): per runtime, the callable the bus calls, or None."""

    def __init__(self, want: str | None = "yes", fail: bool = False) -> None:
        self.binds: list[keel.Runtime] = []
        self.sinks: dict[int, list[keel.RuntimeEvent]] = {}
        self.want, self.fail = want, fail

        def bind(runtime: keel.Runtime) -> object:
            self.binds.append(runtime)
            if self.fail:
                raise ValueError("no queue for this runtime")
            if runtime.stack.settings("bound").get("record", self.want) != "yes":
                return None
            return self.sinks.setdefault(id(runtime), []).append  # a builtin: one C call an event

        self.hook_calls = 0

        @keel.hookimpl
        @keel.inline_observer(bind=bind)
        def keel_on_runtime_event(event: keel.RuntimeEvent, runtime: keel.Runtime) -> None:
            self.hook_calls += 1

        self.keel_on_runtime_event = keel_on_runtime_event


def bound_stack(record: str) -> Stack:
    from keel.stack import StackConfig, _Layer

    return Stack([_Layer("test", StackConfig(settings={"bound": {"record": record}}))])


async def test_a_bound_inline_observer_is_bound_once_per_runtime_and_called_directly() -> None:
    bound = Bound()
    host = make_host(bound)
    agent = keel.Agent("inline", "Answer.", output={"text": str})
    async with keel.Runtime(host, bound_stack("yes")) as first, keel.Runtime(host, bound_stack("no")) as second:
        assert bound.binds == [first, second]  # once each, when the bus is built
        assert not second.bus.has_listeners  # bind said None: nothing is called for its events
        for runtime in (first, second):
            runtime.use_model(ScriptedModel(lambda request: '{"text": "fine"}', chunks=4))
            execution = await agent.start("go", runtime=runtime)
            assert (await execution.result()).text == "fine"
        first.publish(keel.RuntimeEvent(kind="a"))
        assert bound.sinks[id(first)][-1].kind == "a"  # inside publish, no loop turn
    assert list(bound.sinks) == [id(first)]
    events = bound.sinks[id(first)]
    assert len(events) == first.bus.published
    mine = [e.seq for e in events if e.execution_id is not None]
    assert mine == sorted(mine) and len(mine) >= 4
    assert bound.hook_calls == 0  # the bus never went through the hook function
    host.pm.hook.keel_on_runtime_event(event=keel.RuntimeEvent(kind="direct"), runtime=first)
    assert bound.hook_calls == 1  # which stays the hook for a plain call


async def test_a_bind_that_raises_leaves_the_observer_out_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    bound, queue = Bound(fail=True), Queue()
    host = make_host(bound, queue)
    name = host.pm.get_name(bound)
    agent = keel.Agent("inline", "Answer.", output={"text": str})
    with caplog.at_level(logging.ERROR):
        async with keel.Runtime(host, Stack()) as runtime:
            runtime.use_model(ScriptedModel(lambda request: '{"text": "fine"}', chunks=4))
            execution = await agent.start("go", runtime=runtime)
            assert (await execution.result()).text == "fine"
    assert "could not bind to a runtime" in caplog.text and "no queue for this runtime" in caplog.text
    assert runtime.bus.disabled == {
        name: "raised KeelError: binding to this runtime failed (ValueError: no queue for this runtime)"
    }
    assert runtime.bus.dropped == {f"observer:{name}": 1}
    assert len(queue.events) == runtime.bus.published  # the others had every event


async def test_a_bound_callable_that_raises_is_disabled_like_any_inline_observer() -> None:
    def bind(runtime: keel.Runtime) -> object:
        return [].index  # ValueError on every event: not in the list

    class Plugin:
        @keel.hookimpl
        @keel.inline_observer(bind=bind)
        def keel_on_runtime_event(self, event: keel.RuntimeEvent) -> None:
            pass

    plugin = Plugin()
    host = make_host(plugin)
    async with keel.Runtime(host, Stack()) as runtime:
        runtime.publish(keel.RuntimeEvent(kind="a"))
        runtime.publish(keel.RuntimeEvent(kind="b"))
    [(name, why)] = runtime.bus.disabled.items()
    assert name == host.pm.get_name(plugin) and why.startswith("raised ValueError")
    assert runtime.bus.dropped == {f"observer:{name}": 1}
