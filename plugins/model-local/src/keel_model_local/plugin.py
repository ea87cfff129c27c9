"""The plugin module the ``local`` entry point names: cheap to import (llama.cpp loads on first use)."""

from __future__ import annotations

from collections.abc import Iterator

import keel

CAPABILITIES = keel.ModelCapabilities(streaming=True, tools=False, json_schema=True)


def build(config: keel.ModelConfig) -> keel.Model:
    from keel_model_local.driver import LocalModel

    return LocalModel(config)


@keel.hookimpl
def keel_models() -> Iterator[keel.ModelSpec]:
    yield keel.ModelSpec(
        name="local",
        description="llama.cpp in process on a GGUF shipped by a PyPI package (default SmolLM2-135M); offline, no key",
        factory=build,
        capabilities=CAPABILITIES,
    )
