"""Conformance of the drivers plugins register: models, actions, evaluators, channels, environments."""

from __future__ import annotations

import json
from typing import Any

import pytest

from keel.actions import invoke_action
from keel.errors import ActionInputError, DriverNotFoundError, KeelError
from keel.plugins import PluginHost
from keel.stack import SlotChoice, Stack
from keel.types import (
    ActionSpec,
    Channel,
    ChannelSpec,
    Environment,
    EnvironmentSpec,
    EvalResult,
    EvalSample,
    EvaluatorSpec,
    Message,
    Model,
    ModelDone,
    ModelRequest,
    ModelSpec,
    ProductEvent,
    SlotSpec,
    TextDelta,
    ToolCallEvent,
)


async def _maybe_await(value: Any) -> Any:
    if hasattr(value, "__await__"):
        return await value
    return value


# ----------------------------------------------------------------------------------- models


class ModelConformance:
    """Fixtures: ``model_spec`` (a :class:`keel.ModelSpec`) and ``model`` (an instance built from it).

    Override ``prompt`` to suit a model that needs a particular question.
    """

    pytestmark = [pytest.mark.anyio]

    prompt = "Reply with the single word: hello"

    def test_spec_is_named(self, model_spec: ModelSpec) -> None:
        assert model_spec.name and model_spec.name.strip() == model_spec.name
        assert callable(model_spec.factory)

    async def test_stream_ends_with_exactly_one_done(self, model: Model) -> None:
        events = [e async for e in model.stream(ModelRequest(messages=[Message(role="user", content=self.prompt)]))]
        assert events, "a model stream yielded nothing"
        assert isinstance(events[-1], ModelDone), f"last event must be ModelDone, got {events[-1]!r}"
        assert sum(isinstance(e, ModelDone) for e in events) == 1
        for event in events[:-1]:
            assert isinstance(event, (TextDelta, ToolCallEvent)), f"unexpected event {event!r}"

    async def test_answers_with_text(self, model: Model) -> None:
        request = ModelRequest(messages=[Message(role="user", content=self.prompt)])
        text = "".join([e.text async for e in model.stream(request) if isinstance(e, TextDelta)])
        assert text.strip(), "the model answered with no text"

    async def test_tool_calls_have_object_arguments(self, model: Model) -> None:
        if not model.capabilities.tools:
            pytest.skip("model does not declare tool support")
        request = ModelRequest(messages=[Message(role="user", content=self.prompt)])
        async for event in model.stream(request):
            if isinstance(event, ToolCallEvent):
                assert isinstance(event.call.arguments, dict)
                assert event.call.id and event.call.name

    async def test_aclose_is_idempotent(self, model: Model) -> None:
        await model.aclose()
        await model.aclose()


# ---------------------------------------------------------------------------------- actions


class ActionConformance:
    """Fixtures: ``action_spec`` and ``valid_arguments`` (a dict the action accepts)."""

    pytestmark = [pytest.mark.anyio]

    def test_schema_is_an_object_schema(self, action_spec: ActionSpec) -> None:
        assert action_spec.parameters.get("type") == "object"
        json.dumps(action_spec.parameters)  # serialisable, so a model can receive it
        assert action_spec.description, "describe the action: the model reads the description"

    async def test_valid_arguments_give_a_json_result(
        self, action_spec: ActionSpec, valid_arguments: dict[str, Any]
    ) -> None:
        result = await invoke_action(action_spec, valid_arguments)
        json.dumps(result, default=str)

    async def test_unknown_argument_is_refused(self, action_spec: ActionSpec, valid_arguments: dict[str, Any]) -> None:
        with pytest.raises(ActionInputError, match=action_spec.name):
            await invoke_action(action_spec, {**valid_arguments, "__no_such_argument__": 1})


# ------------------------------------------------------------------------------- evaluators


class EvaluatorConformance:
    """Fixtures: ``evaluator_spec``, ``passing_sample`` and ``failing_sample``."""

    pytestmark = [pytest.mark.anyio]

    async def _run(self, spec: EvaluatorSpec, sample: EvalSample) -> EvalResult:
        result = await _maybe_await(spec.evaluate(sample))
        assert isinstance(result, EvalResult)
        assert result.evaluator == spec.name
        return result

    async def test_passing_sample_passes(self, evaluator_spec: EvaluatorSpec, passing_sample: EvalSample) -> None:
        result = await self._run(evaluator_spec, passing_sample)
        assert result.passed and 0.0 <= result.score <= 1.0

    async def test_failing_sample_fails_with_a_reason(
        self, evaluator_spec: EvaluatorSpec, failing_sample: EvalSample
    ) -> None:
        result = await self._run(evaluator_spec, failing_sample)
        assert not result.passed
        assert result.reason, "a failure must say why"


# --------------------------------------------------------------------------------- channels


class ChannelConformance:
    """Fixtures: ``channel_spec`` and ``channel`` (an instance)."""

    pytestmark = [pytest.mark.anyio]

    def test_spec_builds_channels(self, channel_spec: ChannelSpec) -> None:
        assert channel_spec.name and callable(channel_spec.factory)

    async def test_sends_every_product_event_type(self, channel: Channel) -> None:
        assert isinstance(channel, Channel)
        for seq, kind in enumerate(
            ["task.started", "task.progress", "task.partial", "task.waiting", "task.completed", "task.failed"], 1
        ):
            await channel.send(ProductEvent(type=kind, task_id="t1", execution_id="x1", seq=seq))  # type: ignore[arg-type]

    async def test_aclose_is_idempotent(self, channel: Channel) -> None:
        await channel.aclose()
        await channel.aclose()


# ----------------------------------------------------------------------------- environments


class EnvironmentConformance:
    """Fixtures: ``environment_spec`` and ``environment`` (an instance, not started)."""

    pytestmark = [pytest.mark.anyio]

    def test_spec_declares_kind_and_permissions(self, environment_spec: EnvironmentSpec) -> None:
        assert environment_spec.kind
        assert environment_spec.permissions is not None

    async def test_lifecycle(self, environment: Environment) -> None:
        assert isinstance(environment, Environment)
        assert environment.status == "stopped"
        await environment.start()
        try:
            status: str = environment.status
            assert status == "ready"
            assert (await environment.health()).ok
        finally:
            await environment.stop()
        assert environment.status == "stopped"
        await environment.stop()  # idempotent


# ------------------------------------------------------------------------------------ stack slots


class SlotConformance:
    """A stack slot a plugin declares with ``keel_stack_slots`` (TriggerFlow's ``runner``).

    Fixture: ``slot_host``, a :class:`keel.PluginHost` with the plugin registered. Class
    attributes: ``slot`` (the slot's name), ``good`` (a driver that is always there, with
    ``good_options``) and ``bad_options`` (options of ``good`` the check must refuse; ``None``
    when the driver takes none). The checks start nothing.
    """

    slot = ""
    good = ""
    good_options: dict[str, Any] = {}
    bad_options: dict[str, Any] | None = None

    def _check(self, host: PluginHost, name: str, options: dict[str, Any]) -> str:
        spec = host.stack_slots()[self.slot].spec
        return spec.check(SlotChoice(self.slot, name, options, "keel.toml (conformance)"), host)

    def test_the_slot_is_declared(self, slot_host: PluginHost) -> None:
        assert self.slot and self.good, "set the class attributes slot and good"
        spec = slot_host.stack_slots()[self.slot].spec
        assert isinstance(spec, SlotSpec) and spec.name == self.slot and callable(spec.check)

    def test_a_good_choice_passes_and_names_its_provider(self, slot_host: PluginHost) -> None:
        provider = self._check(slot_host, self.good, dict(self.good_options))
        assert isinstance(provider, str) and provider, "check() returns the plugin that provides the driver"

    def test_an_unknown_driver_is_refused_with_the_available_ones(self, slot_host: PluginHost) -> None:
        with pytest.raises(DriverNotFoundError) as caught:
            self._check(slot_host, "no-such-driver-xyz", {})
        assert self.good in caught.value.available and caught.value.source == "keel.toml (conformance)"

    def test_bad_options_are_refused(self, slot_host: PluginHost) -> None:
        if self.bad_options is None:
            pytest.skip("the driver takes no options")
        with pytest.raises(KeelError):
            self._check(slot_host, self.good, dict(self.bad_options))

    def test_keel_stack_shows_the_slot_checked(self, slot_host: PluginHost) -> None:
        rows = {row["slot"]: row for row in Stack().check(slot_host)}
        if self.slot in rows and rows[self.slot]["name"] == self.good:
            assert rows[self.slot]["status"] == "ok", rows[self.slot]
        else:
            assert self.slot in rows, f"keel stack does not list the slot {self.slot!r}"
