"""keel.testing.ScriptedModel: the test double passes the model conformance kit and streams faithfully."""

from __future__ import annotations

import pytest

import keel
from keel.testing import Reply, ScriptedModel, make_host
from keel.testing.conformance import ModelConformance


class TestScriptedModel(ModelConformance):
    @pytest.fixture
    def model_spec(self) -> keel.ModelSpec:
        return make_host().models()["scripted"].spec

    @pytest.fixture
    def model(self, model_spec: keel.ModelSpec) -> keel.Model:
        return model_spec.factory(keel.ModelConfig(provider="scripted", replies=["hello"] * 5))


def _request(text: str = "hi") -> keel.ModelRequest:
    return keel.ModelRequest(messages=[keel.Message(role="user", content=text)])


async def _collect(model: ScriptedModel) -> list[keel.ModelEvent]:
    return [e async for e in model.stream(_request())]


async def test_chunks_of_any_size() -> None:
    model = ScriptedModel(['{"a": 1}', '{"a": 1}', '{"a": 1}'])
    model._chunks = 1
    one = await _collect(model)
    assert [e.text for e in one if isinstance(e, keel.TextDelta)] == list('{"a": 1}')
    model._chunks = [2, 3]
    pieces = [e.text for e in await _collect(model) if isinstance(e, keel.TextDelta)]
    assert pieces == ['{"', 'a":', " 1", "}"]


async def test_tool_calls_then_done() -> None:
    call = keel.ToolCall(id="c1", name="word_count", arguments={"text": "a b"})
    model = ScriptedModel([Reply(tool_calls=[call])])
    events = await _collect(model)
    assert events[0] == keel.ToolCallEvent(call=call)
    assert isinstance(events[-1], keel.ModelDone) and events[-1].finish_reason == "tool_calls"


async def test_function_responder_sees_the_request() -> None:
    model = ScriptedModel(lambda request: request.messages[-1].content.upper())
    events = await _collect(model)
    assert "".join(e.text for e in events if isinstance(e, keel.TextDelta)) == "HI"
    assert model.requests[0].messages[0].content == "hi"


async def test_running_out_of_replies_says_how_to_fix() -> None:
    model = ScriptedModel(["only one"])
    await _collect(model)
    with pytest.raises(keel.KeelError, match=r"ran out of replies after 2 request"):
        await _collect(model)


def test_respond_option_imports_a_function() -> None:
    spec = make_host().models()["scripted"].spec
    with pytest.raises(keel.KeelError, match="respond = .nope_module:fn. could not be loaded: there is no module"):
        spec.factory(keel.ModelConfig(provider="scripted", respond="nope_module:fn"))
    model = spec.factory(keel.ModelConfig(provider="scripted", respond="json:dumps"))
    assert isinstance(model, ScriptedModel)
