"""The observer conformance kit: a well-behaved observer passes it, and each misbehaviour it names
fails it (a kit that cannot fail would prove nothing)."""

from __future__ import annotations

from typing import Any

import pytest

import keel
from keel.stack import Stack
from keel.testing.conformance import ObserverConformance


class Queue:
    def __init__(self) -> None:
        self.events: list[keel.RuntimeEvent] = []

    @keel.hookimpl
    @keel.inline_observer(bind=lambda runtime: None)  # observes nothing: still conforms
    def keel_on_runtime_event(self, event: keel.RuntimeEvent) -> None:
        self.events.append(event)


class Serializing:  # an inline observer that makes each event's JSON: no JSON holds some payloads
    @keel.hookimpl
    @keel.inline_observer
    def keel_on_runtime_event(self, event: keel.RuntimeEvent) -> None:
        event.model_dump_json()


class BadBind:
    @keel.hookimpl
    @keel.inline_observer(bind=lambda runtime: "not callable")
    def keel_on_runtime_event(self, event: keel.RuntimeEvent) -> None:
        pass


class TestAWellBehavedObserver(ObserverConformance):
    @pytest.fixture
    def observer_plugin(self) -> Any:
        return Queue()


async def test_an_observer_that_fails_on_hostile_events_fails_the_kit() -> None:
    with pytest.raises(AssertionError, match="disabled"):
        await ObserverConformance().test_events_no_json_can_hold_never_disable_it(Serializing(), Stack())


async def test_a_bind_that_gives_no_callable_fails_the_kit() -> None:
    with pytest.raises(AssertionError, match="bind"):
        await ObserverConformance().test_an_inline_observer_returns_none_and_binds_to_a_callable_or_none(
            BadBind(), Stack()
        )
