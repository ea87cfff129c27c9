"""keel-mcp on its own: an MCP server (written with the mcp SDK, run as a real subprocess) as a
managed environment whose tools are actions, and Keel actions served over MCP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

import keel
from keel.stack import load_stack
from keel.testing import make_host
from keel.testing.conformance import ActionConformance, EnvironmentConformance
from keel_mcp import plugin
from keel_mcp.options import McpServerOptions, action_name

EDGE = Path(__file__).with_name("edge_server.py")


class Audit:
    """Records every RuntimeEvent (delivered by the bus; read them after the runtime closed)."""

    def __init__(self) -> None:
        self.events: list[keel.RuntimeEvent] = []

    @keel.hookimpl
    def keel_on_runtime_event(self, event: keel.RuntimeEvent) -> None:
        self.events.append(event)

    def kinds(self, prefix: str = "") -> list[str]:
        return [e.kind for e in self.events if e.kind.startswith(prefix)]

    def of_call(self, call_id: str) -> list[keel.RuntimeEvent]:
        return [e for e in self.events if e.payload.get("call_id") == call_id]


def edge_table(name: str = "edge", **overrides: str) -> str:
    """A stack table for the edge server; ``overrides`` are TOML values by key."""
    table = {
        "driver": '"mcp"',
        "start": '"eager"',
        "health_interval": "0.2",
        "command": f"[{json.dumps(sys.executable)}, {json.dumps(str(EDGE))}]",
        "prefix": '"edge_"',
        "risk": '"read"',
        "tool_risk": '{ wipe = "irreversible" }',
        "tags": '["edge"]',
        "timeout": "20",
        "restart": "{ max_restarts = 2, backoff_seconds = 0.05 }",
        **overrides,
    }
    return f"[environments.{name}]\n" + "".join(f"{k} = {v}\n" for k, v in table.items())


def runtime(tmp_path: Path, toml: str, *plugins: object) -> keel.Runtime:
    (tmp_path / "keel.toml").write_text(toml)
    return keel.Runtime(make_host(plugin, *plugins), load_stack(cwd=tmp_path))


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def server_pid(rt: keel.Runtime, name: str = "edge") -> int:
    env = rt.environments._get(name).env  # the environment instance, for its pid
    assert env is not None and env.pid  # type: ignore[attr-defined]
    return int(env.pid)  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------- the plugin


def test_entry_module_does_not_import_the_sdk() -> None:
    code = "import sys, keel_mcp.plugin; print('mcp' in sys.modules, 'keel_mcp.client' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_registers_the_mcp_environment_driver() -> None:
    spec = make_host(plugin).environments()["mcp"].spec
    assert (spec.name, spec.kind) == ("mcp", "mcp-server")


def test_options_need_exactly_one_transport() -> None:
    with pytest.raises(ValueError, match=r"exactly one of command"):
        McpServerOptions.model_validate({"name": "x"})
    with pytest.raises(ValueError, match=r"exactly one of command"):
        McpServerOptions.model_validate({"name": "x", "command": ["a"], "url": "http://127.0.0.1:1/mcp"})
    with pytest.raises(ValueError, match="Extra inputs"):
        McpServerOptions.model_validate({"command": ["a"], "comand": ["typo"]})


def test_header_values_take_secrets_from_the_environment() -> None:
    options = McpServerOptions(url="http://127.0.0.1:1/mcp", headers={"Authorization": "Bearer ${API_TOKEN}"})
    assert options.resolved_headers({"API_TOKEN": "abc"}) == {"Authorization": "Bearer abc"}
    with pytest.raises(ValueError, match="needs the environment variable API_TOKEN"):
        options.resolved_headers({})


def test_action_names_are_valid_whatever_the_tool_is_called() -> None:
    assert action_name("files.", "read/file") == "files.read_file"
    assert action_name("", "9lives") == "_9lives"
    assert len(action_name("p_", "x" * 100)) == 64
    assert McpServerOptions(name="time", command=["t"]).action_name("now") == "time_now"
    assert McpServerOptions(command=["t"]).action_name("now", "mcp-time") == "mcp-time_now"


class TestEdgeEnvironment(EnvironmentConformance):
    @pytest.fixture
    def environment_spec(self) -> keel.EnvironmentSpec:
        return make_host(plugin).environments()["mcp"].spec

    @pytest.fixture
    def environment(self, environment_spec: keel.EnvironmentSpec) -> keel.Environment:
        return environment_spec.factory({"name": "edge", "command": [sys.executable, str(EDGE)]})


class TestEdgeToolAsAction(ActionConformance):
    @pytest.fixture
    async def action_spec(self) -> Any:
        env = (
            make_host(plugin)
            .environments()["mcp"]
            .spec.factory({"name": "edge", "command": [sys.executable, str(EDGE)]})
        )
        await env.start()
        try:
            yield next(s for s in await env.actions() if s.name == "edge_add")  # type: ignore[attr-defined]
        finally:
            await env.stop()

    @pytest.fixture
    def valid_arguments(self) -> dict[str, Any]:
        return {"a": 2, "b": 3}

    async def test_schema_is_an_object_schema(self, action_spec: keel.ActionSpec) -> None:  # type: ignore[override]
        super().test_schema_is_an_object_schema(action_spec)  # the spec exists only while the server runs


# ----------------------------------------------------------------------- tools as actions


async def test_tools_become_actions_with_schema_scope_and_risk(tmp_path: Path) -> None:
    rt = runtime(tmp_path, edge_table(visible_to='["helper"]'))
    async with rt:
        (state,) = rt.environments.status()
        assert state.status == "ready", state.error
        names = {s.name for s in rt.actions}
        assert {"edge_add", "edge_weather", "edge_fail", "edge_slow", "edge_die", "edge_wipe"} <= names
        add = rt.actions.get("edge_add")
        assert add.parameters["properties"] == {
            "a": {"title": "A", "type": "integer"},
            "b": {"title": "B", "type": "integer"},
        }
        assert add.parameters["required"] == ["a", "b"]
        assert add.description == "Add two integers."
        assert (add.risk, rt.actions.get("edge_wipe").risk) == ("read", "irreversible")
        assert add.tags == {"edge"} and add.visible_to == {"helper"} and add.timeout == 20
        assert rt.actions.source("edge_add") == "environment:edge"
        assert [s.name for s in rt.actions.visible("someone-else")] == []
        outcome = await rt.call_action("edge_add", {"a": 1, "b": 2}, context=keel.ActionContext(agent="intruder"))
        assert outcome.error is not None and outcome.error["type"] == "unknown_action"


async def test_text_comes_back_as_a_string_and_structured_content_as_a_dict(tmp_path: Path) -> None:
    async with runtime(tmp_path, edge_table()) as rt:
        assert (await rt.call_action("edge_add", {"a": 40, "b": 2})).result == "42"
        assert (await rt.call_action("edge_weather", {"city": "Oslo"})).result == {"city": "Oslo", "celsius": 21}


async def test_bad_calls_are_structured_errors_and_audit_records(tmp_path: Path) -> None:
    audit = Audit()
    async with runtime(tmp_path, edge_table(tool_timeout="{ slow = 0.5 }"), audit) as rt:
        unknown = await rt.call_action("edge_nope", {})
        bad_args = await rt.call_action("edge_add", {"a": "one"})
        extra_arg = await rt.call_action("edge_add", {"a": 1, "b": 2, "c": 3})
        raised = await rt.call_action("edge_fail", {"message": "kaboom"})
        hung = await rt.call_action("edge_slow", {"seconds": 30})
        after = await rt.call_action("edge_add", {"a": 1, "b": 1})
    assert unknown.error and unknown.error["type"] == "unknown_action" and "edge_add" in unknown.error["message"]
    assert bad_args.error and bad_args.error["type"] == "invalid_arguments"
    assert (
        "'b' is a required property" in bad_args.error["message"]
        and "'one' is not of type 'integer'" in bad_args.error["message"]
    )
    assert extra_arg.error and extra_arg.error["type"] == "invalid_arguments" and "'c'" in extra_arg.error["message"]
    assert raised.error and raised.error["type"] == "McpToolError" and "tool 'fail'" in raised.error["message"]
    assert hung.error and hung.error["type"] == "timeout"
    assert after.ok and after.result == "2", "the session survives a timed-out call"
    for outcome in (unknown, bad_args, extra_arg, raised, hung):
        assert json.loads(outcome.for_model())["error"] == outcome.error
        assert audit.of_call(outcome.call_id)[-1].kind == "action.failed"


async def test_a_server_exiting_mid_call_fails_the_call_clearly_and_is_restarted(tmp_path: Path) -> None:
    async with runtime(tmp_path, edge_table()) as rt:
        first = server_pid(rt)
        died = await rt.call_action("edge_die", {"code": 7})
        assert died.error and died.error["type"] == "McpServerDown"
        assert (
            "MCP server 'edge' exited with code 7 during the call; its tool 'die' is unavailable until Keel restarts"
            in died.error["message"]
        )
        with anyio.fail_after(20):
            while rt.environments.status_of("edge").restarts < 1 or rt.environments.status_of("edge").status != "ready":
                await anyio.sleep(0.05)
        assert (await rt.call_action("edge_add", {"a": 1, "b": 2})).result == "3"
        assert server_pid(rt) != first


async def test_calls_fail_fast_while_the_server_is_down(tmp_path: Path) -> None:
    # no supervision (a long health interval): the server stays down after the kill
    async with runtime(tmp_path, edge_table(health_interval="600")) as rt:
        os.kill(server_pid(rt), 9)
        with anyio.fail_after(5):
            outcome = await rt.call_action("edge_add", {"a": 1, "b": 2})
        assert outcome.error and outcome.error["type"] == "McpServerDown"
        assert (
            "MCP server 'edge'" in outcome.error["message"]
            and "until Keel restarts the server" in outcome.error["message"]
        )


async def test_irreversible_tools_need_an_approver(tmp_path: Path) -> None:
    audit = Audit()

    async def slow_human(request: keel.ApprovalRequest) -> bool:
        await anyio.sleep(10)
        return True

    async with runtime(tmp_path, edge_table(), audit) as rt:
        denied = await rt.call_action("edge_wipe", {"target": "/data"})
        timed_out = await rt.call_action(
            "edge_wipe", {"target": "/data"}, approver=keel.CallbackApprover(slow_human), approval_timeout=0.2
        )
        approved = await rt.call_action(
            "edge_wipe", {"target": "/data"}, approver=keel.CallbackApprover(lambda r: True)
        )
    assert denied.verdict == "deny" and denied.error and "no approver" in denied.error["message"]
    assert timed_out.verdict == "deny" and timed_out.error and "timed out" in timed_out.error["message"]
    assert approved.ok and approved.result == "wiped /data"
    assert [e.kind for e in audit.of_call(denied.call_id)] == ["action.requested", "action.denied"]
    assert [e.kind for e in audit.of_call(timed_out.call_id)] == ["action.requested", "action.denied"]
    assert "action.started" not in [e.kind for e in audit.of_call(denied.call_id)], "never executed"


async def test_a_server_that_exits_at_start_is_given_up_and_says_why(tmp_path: Path) -> None:
    audit = Audit()
    async with runtime(tmp_path, edge_table(env='{ EDGE_EXIT_AT_START = "3" }'), audit) as rt:
        state = rt.environments.status_of("edge")
        assert state.status == "failed" and state.restarts == 2
        assert "exited with code 3" in state.error and "edge server refuses to start" in state.error
        assert not [s for s in rt.actions if s.name.startswith("edge_")]
    assert audit.kinds("environment.").count("environment.restarting") == 2
    assert audit.kinds("environment.")[-1] == "environment.failed"


async def test_no_server_process_outlives_the_runtime(tmp_path: Path) -> None:
    async with runtime(tmp_path, edge_table()) as rt:
        pid = server_pid(rt)
    assert not alive(pid)
    with pytest.raises(ZeroDivisionError):
        async with runtime(tmp_path, edge_table()) as rt:
            pid = server_pid(rt)
            1 / 0  # noqa: B018
    assert not alive(pid)


# ------------------------------------------------------------------------- keel mcp serve


async def test_served_actions_go_through_policy_and_audit(tmp_path: Path) -> None:
    from mcp import Client

    from keel_mcp.server import build_server

    @keel.action(risk="irreversible")
    def drop_table(table: str) -> str:
        """Drop a table."""
        return f"dropped {table}"

    @keel.action(tags=["math"])
    def double(x: int) -> int:
        """Twice x."""
        return 2 * x

    audit = Audit()
    async with runtime(tmp_path, "", audit) as rt:
        rt.actions.add(drop_table)
        rt.actions.add(double)
        server = build_server(rt, names=["drop_table"], tags=["math"], agent="mcp-client")
        async with Client(server) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            assert set(tools) == {"drop_table", "double"}
            assert tools["double"].input_schema == double.parameters
            assert tools["drop_table"].annotations and tools["drop_table"].annotations.destructive_hint
            ok = await client.call_tool("double", {"x": 21})
            denied = await client.call_tool("drop_table", {"table": "users"})
            bad = await client.call_tool("double", {"x": "many"})
    assert not ok.is_error and ok.content[0].text == "42"  # type: ignore[union-attr]
    assert denied.is_error and "no approver" in denied.content[0].text  # type: ignore[union-attr]
    assert bad.is_error and json.loads(bad.content[0].text)["error"]["type"] == "invalid_arguments"  # type: ignore[union-attr]
    requested = [e for e in audit.events if e.kind == "action.requested"]
    assert [e.payload["action"] for e in requested] == ["double", "drop_table", "double"]
    assert all(e.payload["caller"]["agent"] == "mcp-client" for e in requested)
    assert audit.kinds("action.").count("action.denied") == 1
    assert audit.kinds("action.").count("action.completed") == 1


def test_keel_stack_checks_an_environment_table_naming_the_key(tmp_path: Path) -> None:
    # EnvironmentSpec.options: a typo (or no transport) is refused when the stack resolves, before any server starts
    (tmp_path / "keel.toml").write_text(
        'store = "memory"\n[environments.docs]\ndriver = "mcp"\nstart = "eager"\nurl = "http://127.0.0.1:9/mcp"\nheader = {}\n'
    )
    with pytest.raises(keel.StackError) as caught:
        load_stack(tmp_path / "keel.toml").check(make_host(plugin))
    message = str(caught.value)
    assert "[environments.docs] of driver 'mcp'" in message and "header" in message and "headers" in message
    (tmp_path / "keel.toml").write_text(
        'store = "memory"\n[environments.docs]\ndriver = "mcp"\nurl = "http://127.0.0.1:9/mcp"\n'
    )
    rows = {r["slot"]: r for r in load_stack(tmp_path / "keel.toml").check(make_host(plugin))}
    assert rows["environments.docs"]["status"] == "ok"
