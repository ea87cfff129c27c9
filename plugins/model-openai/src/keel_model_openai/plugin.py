"""The plugin module the ``openai`` entry point names: cheap to import (the SDK loads in the factory)."""

from __future__ import annotations

from collections.abc import Iterator

import keel

CAPABILITIES = keel.ModelCapabilities(streaming=True, tools=True, json_schema=True)


def build(config: keel.ModelConfig) -> keel.Model:
    """``ModelSpec.factory``: one :class:`~keel_model_openai.driver.OpenAIModel` (one HTTP client)."""
    from keel_model_openai.driver import OpenAIModel

    return OpenAIModel(config)


@keel.hookimpl
def keel_models() -> Iterator[keel.ModelSpec]:
    yield keel.ModelSpec(
        name="openai",
        description="any OpenAI-compatible chat completions endpoint (OpenAI, DeepSeek, vLLM, Ollama, llama.cpp server)",
        factory=build,
        capabilities=CAPABILITIES,
    )
