"""Conformance for ``keel_on_runtime_event`` observers (DevTools, OpenTelemetry, a log shipper):
whatever the events hold, an observer never fails, never stalls and is never disabled; an inline
one (``@keel.inline_observer``) returns ``None`` from every call; one that binds per runtime
(``@keel.inline_observer(bind=...)``) gives a callable or ``None`` for each runtime.

Example::

    from keel.testing.conformance import ObserverConformance

    class TestMyObserver(ObserverConformance):
        @pytest.fixture
        def observer_plugin(self):
            return my_plugin_module

        @pytest.fixture
        def observer_stack(self, tmp_path):  # optional: the stack the runtimes use
            return keel.load_stack(write_settings(tmp_path))
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from keel.events import RuntimeEvent
from keel.runtime import Runtime
from keel.stack import Stack

__all__ = ["ObserverConformance"]


def _hostile_payloads() -> list[dict[str, Any]]:
    loop: dict[str, Any] = {}
    loop["self"] = loop

    class Opaque:
        def __repr__(self) -> str:
            return "<opaque>"

    return [
        {"text": "x" * 1_000_000},  # a megabyte of text
        {"loop": loop},  # no JSON can hold it
        {"big": 2**200, "nan": float("nan"), "inf": float("-inf")},
        {"surrogate": "\ud800", "nul": "\x00", "keys": {1: "int", (1, 2): "tuple", None: "none"}},
        {"thing": Opaque(), "type": Opaque, "bytes": b"\xff\xfe"},
        {"deep": _nested(400)},
    ]


def _nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = {"d": [value]}
    return value


class ObserverConformance:
    """Fixtures: ``observer_plugin`` (an object or module implementing ``keel_on_runtime_event``);
    ``observer_stack`` (default: an empty stack) for the runtimes it observes."""

    pytestmark = [pytest.mark.anyio]

    @pytest.fixture
    def observer_stack(self) -> Stack:
        return Stack()

    def _host(self, observer_plugin: Any) -> Any:
        from keel.testing import make_host

        host = make_host(observer_plugin)
        assert not host.problems, host.problems
        assert host.pm.hook.keel_on_runtime_event.get_hookimpls(), "the plugin implements no keel_on_runtime_event"
        return host

    @staticmethod
    def _assert_not_disabled(runtime: Runtime) -> None:
        assert runtime.bus.disabled == {}, f"the observer was disabled: {runtime.bus.disabled}"
        failed = {key: n for key, n in runtime.bus.dropped.items() if key.startswith("observer:")}
        assert not failed, f"the observer failed on events: {failed}"

    async def test_it_observes_a_real_execution_and_is_never_disabled(
        self, observer_plugin: Any, observer_stack: Stack
    ) -> None:
        import keel
        from keel.testing import Reply, ScriptedModel

        @keel.action
        def look_up(name: str) -> dict[str, Any]:
            """Look a name up."""
            return {"name": name, "found": True}

        call = keel.ToolCall(id="c1", name="look_up", arguments={"name": "Nordlys"})
        agent = keel.Agent("observed", "Answer.", actions=["look_up"], output={"text": str})
        async with Runtime(self._host(observer_plugin), observer_stack) as runtime:
            runtime.actions.add(look_up)
            runtime.use_model(ScriptedModel([Reply(tool_calls=[call]), '{"text": "found"}'], chunks=3))
            execution = await agent.start("find Nordlys", runtime=runtime)
            assert (await execution.result()).text == "found"
            self._assert_not_disabled(runtime)

    async def test_events_no_json_can_hold_never_disable_it(self, observer_plugin: Any, observer_stack: Stack) -> None:
        async with Runtime(self._host(observer_plugin), observer_stack) as runtime:
            for seq, payload in enumerate(_hostile_payloads(), start=1):
                runtime.publish(RuntimeEvent(kind="test.hostile", execution_id="exe_hostile", seq=seq, payload=payload))
            await anyio.sleep(0)  # one turn for a dispatched observer
            self._assert_not_disabled(runtime)

    async def test_a_burst_of_events_returns_and_closes(self, observer_plugin: Any, observer_stack: Stack) -> None:
        # publish never waits for an observer: 20,000 events in a row, then the runtime closes
        with anyio.fail_after(120):  # a hang guard, not a timing
            async with Runtime(self._host(observer_plugin), observer_stack) as runtime:
                for seq in range(1, 20_001):
                    runtime.publish(
                        RuntimeEvent(kind="model.delta", execution_id="exe_burst", seq=seq, payload={"text": "x"})
                    )
                self._assert_not_disabled(runtime)

    async def test_an_inline_observer_returns_none_and_binds_to_a_callable_or_none(
        self, observer_plugin: Any, observer_stack: Stack
    ) -> None:
        host = self._host(observer_plugin)
        async with Runtime(host, observer_stack) as runtime:
            for impl in host.pm.hook.keel_on_runtime_event.get_hookimpls():
                if not getattr(impl.function, "keel_inline", False):
                    continue
                bind = getattr(impl.function, "keel_bind", None)
                if bind is not None:
                    bound = bind(runtime)
                    assert bound is None or callable(bound), f"bind(runtime) gave {bound!r}"
                    if bound is not None:
                        assert bound(RuntimeEvent(kind="test.bound", execution_id="exe_b", seq=1)) is None
                kwargs: dict[str, Any] = {"event": RuntimeEvent(kind="test.inline", execution_id="exe_i", seq=1)}
                if "runtime" in impl.argnames:
                    kwargs["runtime"] = runtime
                assert impl.function(**kwargs) is None, "an inline observer must return None (it must not await)"
