from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from eval_helpers import SIDE_EFFECTS, WORSE, invoice, lookup_vendor, respond, vendor

import keel
from keel.testing import ScriptedModel, make_host
from keel_eval import plugin

DATA = Path(__file__).parent / "data"


@pytest.fixture
def host() -> keel.PluginHost:
    return make_host(plugin)


@pytest.fixture
async def runtime(host: keel.PluginHost) -> AsyncIterator[keel.Runtime]:
    """A started runtime with the eval plugin, the test runnables and the input-reading scripted model."""
    SIDE_EFFECTS.clear()
    WORSE["on"] = False
    async with keel.Runtime(host, keel.Stack()) as rt:
        rt.use_model(ScriptedModel(respond, chunks=8))
        rt.actions.add(lookup_vendor)
        rt.add(invoice)
        rt.add(vendor)
        yield rt
