"""keel-model-openai's own tests: the conformance kit and every fault, against a real HTTP server on
127.0.0.1 (the package's fault-injecting server), never a mocked SDK."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest

import keel
from keel.testing import make_host
from keel.testing.conformance import ModelConformance
from keel_model_openai import (
    ModelAuthError,
    ModelConfigError,
    ModelConnectionError,
    ModelNotFoundError,
    ModelRateLimitError,
    ModelServerError,
    ModelStreamError,
    ModelTimeoutError,
    plugin,
)
from keel_model_openai.driver import OpenAIModel, extract_json
from keel_model_openai.testing import Cut, FakeOpenAI, Hang, RejectResponseFormat, Reply, Slow, Status

SCHEMA = {
    "type": "object",
    "properties": {"number": {"type": "string"}, "total_eur": {"type": "number"}},
    "required": ["number", "total_eur"],
}


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


def make(server: FakeOpenAI, **options: Any) -> OpenAIModel:
    config = keel.ModelConfig(provider="openai", model="fake-model", base_url=server.url, alias="fake", options=options)
    return OpenAIModel(config)


@pytest.fixture
async def model(server: FakeOpenAI) -> AsyncIterator[OpenAIModel]:
    model = make(server, max_retries=0, timeout=10)
    yield model
    await model.aclose()


def ask(text: str = "hi", **fields: Any) -> keel.ModelRequest:
    return keel.ModelRequest(messages=[keel.Message(role="user", content=text)], **fields)


async def collect(model: keel.Model, request: keel.ModelRequest) -> list[keel.ModelEvent]:
    return [event async for event in model.stream(request)]


def text_of(events: list[keel.ModelEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, keel.TextDelta))


class TestConformance(ModelConformance):
    @pytest.fixture
    def model_spec(self) -> keel.ModelSpec:
        return make_host(plugin).models()["openai"].spec


# ------------------------------------------------------------------------------- behaviour


async def test_registered_through_the_hook_and_built_by_the_factory(server: FakeOpenAI) -> None:
    spec = make_host(plugin).models()["openai"].spec
    model = spec.factory(keel.ModelConfig(provider="openai", model="fake-model", base_url=server.url))
    try:
        assert isinstance(model, keel.Model) and model.capabilities.json_schema and model.capabilities.tools
    finally:
        await model.aclose()


async def test_streams_text_then_usage(model: OpenAIModel, server: FakeOpenAI) -> None:
    server.script.append(Reply("Hello there, friend", chunks=4))
    events = await collect(model, ask())
    assert sum(isinstance(e, keel.TextDelta) for e in events) >= 3
    assert text_of(events) == "Hello there, friend"
    done = events[-1]
    assert isinstance(done, keel.ModelDone) and done.usage == keel.Usage(input_tokens=7, output_tokens=3)
    assert done.model == "fake-model" and done.finish_reason == "stop"
    sent = server.requests[-1]["body"]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert model.last_timing.total_s is not None and model.last_timing.first_event_s is not None


async def test_one_http_client_per_model_instance(model: OpenAIModel, server: FakeOpenAI) -> None:
    await collect(model, ask())
    client = model.client()
    await collect(model, ask())
    assert model.client() is client
    await model.aclose()
    assert model._client is None


async def test_parallel_tool_calls_are_assembled_from_deltas(model: OpenAIModel, server: FakeOpenAI) -> None:
    server.script.append(Reply("", tool_calls=[("lookup", {"q": "nordlys", "n": 2}), ("total", {"items": [1, 2]})]))
    tool = keel.ToolSchema(name="lookup", parameters={"type": "object", "properties": {"q": {"type": "string"}}})
    events = await collect(model, ask(tools=[tool]))
    calls = [e.call for e in events if isinstance(e, keel.ToolCallEvent)]
    assert [(c.id, c.name, c.arguments) for c in calls] == [
        ("call_0", "lookup", {"q": "nordlys", "n": 2}),
        ("call_1", "total", {"items": [1, 2]}),
    ]
    assert isinstance(events[-1], keel.ModelDone) and events[-1].finish_reason == "tool_calls"
    assert server.requests[-1]["body"]["tools"][0]["function"]["name"] == "lookup"


async def test_messages_with_tool_results_go_out_in_openai_shape(model: OpenAIModel, server: FakeOpenAI) -> None:
    call = keel.ToolCall(id="c1", name="lookup", arguments={"q": "x"})
    request = keel.ModelRequest(
        messages=[
            keel.Message(role="user", content="find x"),
            keel.Message(role="assistant", tool_calls=[call]),
            keel.Message(role="tool", tool_call_id="c1", content='{"found": true}'),
        ]
    )
    await collect(model, request)
    sent = server.requests[-1]["body"]["messages"]
    assert sent[1]["tool_calls"][0]["function"] == {"name": "lookup", "arguments": '{"q": "x"}'}
    assert sent[2] == {"role": "tool", "tool_call_id": "c1", "content": '{"found": true}'}


async def test_output_schema_goes_as_response_format(model: OpenAIModel, server: FakeOpenAI) -> None:
    server.script.append(Reply('{"number": "7", "total_eur": 1.5}'))
    events = await collect(model, ask(output_schema=SCHEMA, output_name="Invoice"))
    assert json.loads(text_of(events)) == {"number": "7", "total_eur": 1.5}
    response_format = server.requests[-1]["body"]["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["name"] == "Invoice" and response_format["json_schema"]["schema"] == SCHEMA


async def test_rejected_response_format_falls_back_to_prompt_and_parse(model: OpenAIModel, server: FakeOpenAI) -> None:
    server.default = RejectResponseFormat(Reply('Sure! ```json\n{"number": "7", "total_eur": 2}\n``` done', chunks=5))
    events = await collect(model, ask(output_schema=SCHEMA))
    assert json.loads(text_of(events)) == {"number": "7", "total_eur": 2}
    kinds = [(r["body"].get("response_format") or {}).get("type") for r in server.requests]
    assert kinds == ["json_schema", "json_object", None]
    assert '"total_eur"' in server.requests[-1]["body"]["messages"][0]["content"]  # the schema went into the prompt
    # remembered: the next structured request goes straight to the prompt
    await collect(model, ask(output_schema=SCHEMA))
    assert len(server.requests) == 4 and model.json_mode == "prompt"


async def test_json_object_with_schema_when_json_schema_is_refused_with_a_500(server: FakeOpenAI) -> None:
    # what llama-cpp-python's server does: 500 to json_schema, grammar-constrained json_object + schema
    server.default = RejectResponseFormat(Reply('{"number": "7", "total_eur": 2}'), types=("json_schema",), status=500)
    model = make(server, max_retries=0)
    try:
        events = await collect(model, ask(output_schema=SCHEMA))
    finally:
        await model.aclose()
    assert json.loads(text_of(events)) == {"number": "7", "total_eur": 2}
    assert server.requests[-1]["body"]["response_format"] == {"type": "json_object", "schema": SCHEMA}
    assert model.json_mode == "json_object"


async def test_a_500_about_something_else_is_not_a_format_refusal(model: OpenAIModel, server: FakeOpenAI) -> None:
    server.script.append(Status(500, "out of memory"))
    with pytest.raises(ModelServerError, match="out of memory"):
        await collect(model, ask(output_schema=SCHEMA))
    assert model.json_mode == "json_schema"


async def test_options_go_to_the_request_body(server: FakeOpenAI) -> None:
    model = make(server, temperature=0, seed=3, max_retries=0)
    try:
        await collect(model, ask(options={"max_tokens": 5}))
    finally:
        await model.aclose()
    body = server.requests[-1]["body"]
    assert (body["temperature"], body["seed"], body["max_tokens"]) == (0, 3, 5)
    assert "max_retries" not in body and "alias" not in body


def test_extract_json() -> None:
    assert extract_json('x {"a": [1, {"b": 2}]} y {"c": 3}') == '{"a": [1, {"b": 2}]}'
    assert extract_json("no json {here") is None


# ---------------------------------------------------------------------------------- faults


async def test_429_is_retried_honouring_retry_after(server: FakeOpenAI) -> None:
    server.script.append(Status(429, "slow down", headers={"Retry-After": "1"}))
    model = make(server, max_retries=2)
    try:
        events = await collect(model, ask())
    finally:
        await model.aclose()
    assert text_of(events) == "hello"
    first, second = server.requests
    assert second["time"] - first["time"] >= 0.9  # waited as told, not the SDK's 0.5 s first backoff


async def test_500_then_success(server: FakeOpenAI) -> None:
    server.script.append(Status(500, "boom"))
    model = make(server, max_retries=2)
    try:
        assert text_of(await collect(model, ask())) == "hello"
    finally:
        await model.aclose()
    assert len(server.requests) == 2


async def test_429_every_time_gives_up_with_a_rate_limit_error(server: FakeOpenAI) -> None:
    server.default = Status(429, "quota", headers={"Retry-After": "0"})
    model = make(server, max_retries=1)
    try:
        with pytest.raises(ModelRateLimitError, match=r"'fake'.*429.*max_retries"):
            await collect(model, ask())
    finally:
        await model.aclose()
    assert len(server.requests) == 2


async def test_500_every_time_is_a_server_error(model: OpenAIModel, server: FakeOpenAI) -> None:
    server.default = Status(503, "overloaded")
    with pytest.raises(ModelServerError, match="503"):
        await collect(model, ask())


async def test_stream_cut_in_the_middle(model: OpenAIModel, server: FakeOpenAI) -> None:
    server.script.append(Cut(after=2))
    seen: list[keel.ModelEvent] = []
    with pytest.raises(ModelStreamError, match=r"broke off after \d+ chunks") as caught:
        async for event in model.stream(ask()):
            seen.append(event)
    assert seen and not any(isinstance(e, keel.ModelDone) for e in seen)
    assert server.url in str(caught.value) and "'fake'" in str(caught.value)


async def test_hang_past_the_timeout(server: FakeOpenAI) -> None:
    server.default = Hang(30)
    model = make(server, timeout=0.5, max_retries=0)
    try:
        with anyio.fail_after(10), pytest.raises(ModelTimeoutError, match=r"no answer within 0.5s.*options.timeout"):
            await collect(model, ask())
    finally:
        await model.aclose()


async def test_cancellation_closes_the_http_stream(model: OpenAIModel, server: FakeOpenAI) -> None:
    server.script.append(Slow(chunks=400, delay=0.02))
    got = 0
    with anyio.move_on_after(0.3):
        async for event in model.stream(ask()):
            got += isinstance(event, keel.TextDelta)
    assert got >= 1
    # the server notices the hang-up at its next write, long before its 400 chunks are sent
    assert await anyio.to_thread.run_sync(server.disconnected.wait, 5)


async def test_a_model_the_server_does_not_list_is_refused_before_asking(server: FakeOpenAI) -> None:
    model = OpenAIModel(keel.ModelConfig(provider="openai", model="gpt-5", base_url=server.url, alias="fake"))
    try:
        with pytest.raises(ModelNotFoundError, match=r"'fake'.*does not serve the model 'gpt-5'.*lists: fake-model"):
            await collect(model, ask())
    finally:
        await model.aclose()
    assert server.requests == []  # no chat request was sent


async def test_unknown_model_names_the_served_ones(model: OpenAIModel, server: FakeOpenAI) -> None:
    server.script.append(Status(404, "The model `fake-model` does not exist", error_code="model_not_found"))
    with pytest.raises(ModelNotFoundError, match=r"does not know the model 'fake-model'.*it serves: fake-model"):
        await collect(model, ask())


async def test_wrong_base_url_path(server: FakeOpenAI) -> None:
    config = keel.ModelConfig(provider="openai", model="m", base_url=f"http://127.0.0.1:{server.port}", alias="x")
    model = OpenAIModel(config)
    try:
        with pytest.raises(ModelNotFoundError, match=r"no chat completions route.*/v1"):
            await collect(model, ask())
    finally:
        await model.aclose()


async def test_401_names_the_key_variable(server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_KEY", "wrong")
    server.script.append(Status(401, "Incorrect API key provided"))
    config = keel.ModelConfig(
        provider="openai", model="fake-model", base_url=server.url, api_key_env="FAKE_KEY", alias="fake"
    )
    model = OpenAIModel(config)
    try:
        with pytest.raises(
            ModelAuthError, match=r"'fake' at http://127.0.0.1:\d+/v1.*FAKE_KEY.*401.*Fix: put a valid key"
        ):
            await collect(model, ask())
    finally:
        await model.aclose()
    assert server.requests[-1]["headers"]["authorization"] == "Bearer wrong"


def test_missing_key_is_refused_before_any_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    config = keel.ModelConfig(provider="openai", model="m", api_key_env="NO_SUCH_KEY_VAR", alias="cloud")
    with pytest.raises(
        ModelConfigError, match=r"'cloud'.*NO_SUCH_KEY_VAR is not set.*export NO_SUCH_KEY_VAR="
    ) as caught:
        OpenAIModel(config)
    assert isinstance(caught.value, keel.KeelError)


def test_openai_without_a_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ModelConfigError, match=r"api.openai.com.*OPENAI_API_KEY is not set"):
        OpenAIModel(keel.ModelConfig(provider="openai", model="gpt-4o-mini"))


def test_no_model_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_MODEL", raising=False)
    with pytest.raises(ModelConfigError, match=r"no model name.*add model ="):
        OpenAIModel(keel.ModelConfig(provider="openai", base_url="http://127.0.0.1:9/v1"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_refused_connection() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    model = OpenAIModel(keel.ModelConfig(provider="openai", model="m", base_url=url, alias="down", max_retries=0))
    try:
        with pytest.raises(
            ModelConnectionError, match=r"'down' at http://127.0.0.1:\d+/v1: cannot connect.*start the server"
        ):
            await collect(model, ask())
    finally:
        await model.aclose()


async def test_a_server_that_is_not_openai_compatible(server: FakeOpenAI) -> None:
    # /v1/models answers JSON; pointing chat at it through a path that answers JSON, not events
    server.script.append(Status(200, "not a stream"))
    model = make(server, max_retries=0)
    try:
        with pytest.raises(ModelConnectionError, match="not a server-sent event stream"):
            await collect(model, ask())
    finally:
        await model.aclose()
