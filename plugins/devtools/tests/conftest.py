from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import keel
from keel.testing import Reply, ScriptedModel
from keel_devtools import Recorder, configure, plugin

INVOICE = {"vendor": (str, "who issued it"), "country": (str, "ISO country code")}
FINAL = json.dumps({"vendor": "Nordlys AS", "country": "NO"})


@keel.action(risk="read")
def lookup_vendor(name: str, api_key: str = "") -> dict[str, str]:
    """Find a vendor's registered country."""
    return {"name": name, "country": "NO"}


def invoice_agent(**options: Any) -> keel.Agent:
    return keel.Agent("invoice", "Extract the vendor and its country.", output=INVOICE, actions=["lookup_vendor"],
                      **options)  # fmt: skip


def scripted(*replies: str | Reply, chunks: int = 8) -> ScriptedModel:
    return ScriptedModel(list(replies), chunks=chunks)


def tool_reply() -> Reply:
    call = keel.ToolCall(id="c1", name="lookup_vendor", arguments={"name": "Nordlys AS", "api_key": "sk-live-123"})
    return Reply(tool_calls=[call], usage=keel.Usage(input_tokens=1000, output_tokens=20))


@pytest.fixture
def recorder(tmp_path: Path) -> Iterator[Recorder]:
    """The process's recorder, writing to a file of this test's own."""
    rec = configure(tmp_path / "devtools.db")
    yield rec
    rec.close()


@pytest.fixture
def host() -> keel.PluginHost:
    from keel.testing import make_host

    return make_host(plugin)
