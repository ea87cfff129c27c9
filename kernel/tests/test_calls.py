"""Timeouts and retries per runnable and per action, declared in one place ([calls] / runtime.calls)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest
import test_cli
from test_cli import keel_cli

import keel
from keel.testing import Reply, ScriptedModel, make_host

attempts: list[str] = []


@keel.action(risk="read")
async def flaky(name: str) -> str:
    """Fails twice, then answers."""
    attempts.append(name)
    if len(attempts) < 3:
        raise ConnectionError("upstream reset")
    return "ok"


@keel.action(risk="write")
async def charge(amount: int) -> str:
    """Charge a card (not safe to repeat)."""
    attempts.append(str(amount))
    raise ConnectionError("upstream reset")


@keel.action(risk="read", timeout=30)
async def slow() -> str:
    """Never answers in time."""
    await anyio.sleep_forever()
    return "never"


def call(action: str, **arguments: Any) -> Reply:
    return Reply(tool_calls=[keel.ToolCall(id="c1", name=action, arguments=arguments)])


def setup(runtime: keel.Runtime, *replies: str | Reply) -> ScriptedModel:
    attempts.clear()
    for spec in (flaky, charge, slow):
        if spec.name not in runtime.actions:
            runtime.actions.add(spec)
    return runtime.use_model(ScriptedModel(list(replies)))  # type: ignore[return-value]


def tool_result(model: ScriptedModel) -> dict[str, Any]:
    content = model.requests[1].messages[-1].content or ""
    return json.loads(content) if content.startswith("{") else {"result": content}


async def test_an_action_policy_retries_a_safe_action(keel_runtime: keel.Runtime) -> None:
    model = setup(keel_runtime, call("flaky", name="x"), "done")
    keel_runtime.calls.set(action="flaky", retries=2, backoff=0)
    execution = await keel_runtime.start(keel.Agent("a", "Help.", actions=["flaky"]), "go")
    assert await execution.result() == "done"
    assert attempts == ["x", "x", "x"] and tool_result(model) == {"result": "ok"}
    retries = [e async for e in execution.events() if e.kind == "action.retry"]
    assert [e.payload["attempt"] for e in retries] == [1, 2]


async def test_without_a_policy_a_failure_goes_back_at_once(keel_runtime: keel.Runtime) -> None:
    model = setup(keel_runtime, call("flaky", name="x"), "done")
    await (await keel_runtime.start(keel.Agent("a", "Help.", actions=["flaky"]), "go")).result()
    assert attempts == ["x"] and tool_result(model)["error"]["type"] == "ConnectionError"


async def test_a_write_without_an_idempotency_key_is_never_retried(keel_runtime: keel.Runtime) -> None:
    model = setup(keel_runtime, call("charge", amount=5), "done")
    keel_runtime.calls.set(action="charge", retries=3, backoff=0)
    execution = await keel_runtime.start(keel.Agent("a", "Help.", actions=["charge"]), "go")
    await execution.result()
    assert attempts == ["5"] and tool_result(model)["error"]["type"] == "ConnectionError"
    refused = [e async for e in execution.events() if e.kind == "action.retry_refused"]
    assert len(refused) == 1 and "idempotency key" in refused[0].payload["reason"]


async def test_each_retry_counts_against_the_action_budget(keel_runtime: keel.Runtime) -> None:
    setup(keel_runtime, call("flaky", name="x"), "done")
    keel_runtime.calls.set(action="flaky", retries=2, backoff=0)
    keel_runtime.budgets.limit(action_calls=2)
    execution = await keel_runtime.start(keel.Agent("a", "Help.", actions=["flaky"]), "go")
    with pytest.raises(keel.BudgetExceeded):
        await execution.result()
    assert attempts == ["x", "x"]


async def test_an_action_timeout_from_the_policy_replaces_the_spec_s(keel_runtime: keel.Runtime) -> None:
    model = setup(keel_runtime, call("slow"), "done")
    keel_runtime.calls.set(action="slow", timeout=0.05)
    with anyio.fail_after(20):  # the spec's own 30 s would pass this bound
        await (await keel_runtime.start(keel.Agent("a", "Help.", actions=["slow"]), "go")).result()
    error = tool_result(model)["error"]
    assert error["type"] == "timeout" and "0.05s" in error["message"]


async def test_a_runnable_policy_sets_the_agent_s_retries_and_timeout(keel_runtime: keel.Runtime) -> None:
    contract = {"answer": (str, "the answer")}
    setup(keel_runtime, "not json", "still not json", json.dumps({"answer": "x"}))
    agent = keel.Agent("strict", "Answer.", output=contract, max_retries=2)
    keel_runtime.calls.set(runnable="strict", retries=0, timeout=12.5)
    execution = await keel_runtime.start(agent, "go")
    assert execution.timeout == 12.5 and execution.max_retries == 0  # type: ignore[attr-defined]
    with pytest.raises(keel.OutputValidationError):
        await execution.result()


site = test_cli.site  # the fixture: a site with the echo plugin installed


def test_the_stack_declares_calls_and_keel_stack_shows_them(site: Path, tmp_path: Path) -> None:
    (tmp_path / "keel.toml").write_text(
        "[budgets]\nmodel_requests = 20\n[budgets.tenants.trial]\ncost = 1.5\n"
        "[calls.runnables.triage]\ntimeout = 60\nretries = 1\n[calls.actions.lookup]\ntimeout = 5\nretries = 2\n"
    )
    stack = keel.load_stack(tmp_path / "keel.toml")
    runtime = keel.Runtime(make_host(), stack)
    assert runtime.calls.for_action("lookup") == keel.calls.CallPolicy(timeout=5, retries=2)
    assert runtime.calls.for_runnable("triage").timeout == 60
    runtime.calls.set(action="lookup", retries=0)
    assert runtime.calls.for_action("lookup") == keel.calls.CallPolicy(timeout=5, retries=0)

    shown = keel_cli(site, "stack", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "[calls.actions.lookup] timeout = 5.0, retries = 2" in shown.stdout
    assert "[budgets.tenants.trial] cost = 1.5, period = day" in shown.stdout
    rows = json.loads(keel_cli(site, "stack", "--json", cwd=tmp_path).stdout)["governance"]
    expected = {"table": "calls.runnables.triage", "values": {"timeout": 60.0, "retries": 1}}
    assert {k: rows[2][k] for k in ("table", "values")} == expected


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ("[calls.actions.lookup]\nretries = 11", "calls.actions.lookup.retries"),
        ("[calls.runnables.x]\ntimeout = 0", "calls.runnables.x.timeout"),
        ("[calls.actionz.x]\ntimeout = 1", "calls.actionz"),
    ],
)
def test_a_bad_call_policy_names_the_file_and_the_key(tmp_path: Path, table: str, problem: str) -> None:
    (tmp_path / "keel.toml").write_text(table)
    with pytest.raises(keel.StackError) as caught:
        keel.load_stack(tmp_path / "keel.toml")
    assert str(tmp_path / "keel.toml") in str(caught.value) and problem in str(caught.value)


def test_a_policy_in_code_names_one_thing() -> None:
    runtime = keel.Runtime(make_host())
    with pytest.raises(keel.KeelError, match="exactly one"):
        runtime.calls.set(timeout=1)
    with pytest.raises(keel.KeelError, match="retries"):
        runtime.calls.set(action="x", retries=-1)
