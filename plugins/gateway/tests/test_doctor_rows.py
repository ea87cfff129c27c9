"""The gateway's doctor checks of the streaming-boundary and interaction-layer rows: each fails (or
warns) on a stack that breaks its standard and passes on one that keeps it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

import keel
from keel.doctor import DoctorContext, run_doctor
from keel.testing import make_host
from keel_gateway import plugin as gateway_plugin


class Triage(BaseModel):
    category: str


def check(tmp_path: Path, row: str, toml: str, *runnables: Any) -> Any:
    (tmp_path / "keel.toml").write_text(toml)
    runtime = keel.Runtime(make_host(gateway_plugin), keel.load_stack(tmp_path / "keel.toml"))
    for runnable in runnables:
        runtime.runnables.add(runnable)
    (report,) = run_doctor(DoctorContext.from_runtime(runtime), [row])
    return {c.name: c for c in report.checks}[
        f"gateway.{'streaming' if row == 'streaming-boundary' else 'interaction'}"
    ]


def test_streaming_fails_on_a_streamed_agent_with_no_contract(tmp_path: Path) -> None:
    result = check(tmp_path, "streaming-boundary", "", keel.Agent("chat", "chat"), keel.Agent("t", "t", output=Triage))
    assert result.status == "fail"
    assert result.evidence[0].startswith("agent 'chat': streamed with no structured output contract")
    assert result.evidence[1] == "agent 't': its stream has no bound (no max_tokens, token budget or time limit)"
    assert "output contract" in result.fix


def test_streaming_warns_on_an_unbounded_stream_and_passes_once_bounded(tmp_path: Path) -> None:
    agent = keel.Agent("t", "t", output=Triage)
    assert check(tmp_path, "streaming-boundary", "", agent).status == "warn"
    result = check(tmp_path, "streaming-boundary", "[budgets.runnables.t]\ntokens = 4000\n", agent)
    assert result.status == "pass", result.evidence
    assert result.evidence == [
        "agent 't': streams task.partial/progress, writes the validated Triage; bounded by token budget 4000"
    ]
    capped = keel.Agent("c", "c", output=Triage, options={"max_tokens": 300})
    assert check(tmp_path, "streaming-boundary", "", capped).evidence[0].endswith("bounded by max_tokens 300")


def test_interaction_fails_on_an_unknown_or_unconfigured_channel(tmp_path: Path) -> None:
    result = check(tmp_path, "interaction-layer", 'channels = ["sse", "webhook", "telegram"]\n')
    assert result.status == "fail"
    assert result.evidence[0] == (
        "channel 'webhook' is declared but [settings.gateway.channels.webhook] lacks url: the gateway refuses to start"
    )
    assert result.evidence[1].startswith("channel 'telegram' in the stack's channels is not registered (available: ")


def test_interaction_warns_on_an_open_gateway(tmp_path: Path) -> None:
    result = check(tmp_path, "interaction-layer", 'channels = ["sse"]\n')
    assert result.status == "warn"
    assert result.evidence[0].startswith("the gateway runs open ([settings.gateway] has no api_keys and no JWT source)")
    assert "api_keys" in result.fix


def test_interaction_passes_with_configured_channels_and_a_credential(tmp_path: Path) -> None:
    toml = """channels = ["sse", "webhook"]
[settings.gateway.channels.webhook]
url = "https://crm.example.com/hook"
secret_env = "CRM_SECRET"
[[settings.gateway.api_keys]]
key_env = "DESK_KEY"
tenant = "default"
scopes = ["*"]
"""
    result = check(tmp_path, "interaction-layer", toml)
    assert result.status == "pass", result.evidence
    assert result.evidence == [
        "channel 'sse': pages pull product events (task.*) from /v1/executions/<id>/events",
        "channel 'webhook': signed product events to https://crm.example.com/hook",
        "waits are answered over HTTP with a credential (scope 'signal'): 1 API key(s)",
    ]
