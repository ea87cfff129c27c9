"""`keel mcp serve` driven by the mcp SDK's own client (stdio subprocess and streamable HTTP), and
`keel actions --json`. The served actions here are a hosted MCP server's tools: Keel in the middle
applies its scope, policy and approval to a server that has none."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import BIN, ROOT, clean_env
from mcp import Client, StdioServerParameters

EDGE = ROOT / "plugins" / "mcp" / "tests" / "edge_server.py"
TIME_SERVER = str(BIN / "mcp-server-time")

STACK = f"""
[environments.edge]
driver = "mcp"
start = "eager"
command = [{json.dumps(sys.executable)}, {json.dumps(str(EDGE))}]
prefix = "edge_"
risk = "read"
tool_risk = {{ wipe = "irreversible", die = "write" }}
tags = ["edge"]
exclude = ["slow"]
"""

APPROVER = """
def approve(request):
    "Approve wiping the scratch folder only."
    return request.action == "edge_wipe" and request.arguments.get("target") == "/scratch"


def sloppy(request):
    "Answer in words: a truthy string is not a yes."
    return "no"


def explode(request):
    raise RuntimeError("approval service down at internal-host:9000")
"""


@pytest.fixture
def stack(tmp_path: Path) -> Path:
    (tmp_path / "keel.toml").write_text(STACK)
    (tmp_path / "approvals.py").write_text(APPROVER)
    return tmp_path


def stdio_params(folder: Path, *args: str) -> StdioServerParameters:
    env = clean_env(PYTHONPATH=str(folder))
    return StdioServerParameters(command=str(BIN / "keel"), args=["mcp", "serve", *args], cwd=str(folder), env=env)


def text(result: Any) -> str:
    return str(result.content[0].text)


async def test_serve_over_stdio_under_policy(stack: Path) -> None:
    async with Client(stdio_params(stack, "--tag", "edge"), cache=None) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert set(tools) == {"edge_add", "edge_weather", "edge_fail", "edge_die", "edge_wipe"}, "exclude = [slow]"
        assert tools["edge_add"].input_schema["required"] == ["a", "b"]
        assert tools["edge_add"].annotations and tools["edge_add"].annotations.read_only_hint
        assert tools["edge_wipe"].annotations and tools["edge_wipe"].annotations.destructive_hint
        added = await client.call_tool("edge_add", {"a": 20, "b": 22})
        weather = await client.call_tool("edge_weather", {"city": "Lima"})
        wiped = await client.call_tool("edge_wipe", {"target": "/"})
        failed = await client.call_tool("edge_fail", {"message": "nope"})
        invalid = await client.call_tool("edge_add", {"a": 1})
        hidden = await client.call_tool("edge_slow", {"seconds": 1})
    assert not added.is_error and text(added) == "42"
    assert weather.structured_content == {"city": "Lima", "celsius": 21}
    assert wiped.is_error and json.loads(text(wiped))["error"]["type"] == "denied" and "no approver" in text(wiped)
    assert failed.is_error and json.loads(text(failed))["error"]["type"] == "McpToolError"
    assert invalid.is_error and json.loads(text(invalid))["error"]["type"] == "invalid_arguments"
    assert hidden.is_error and json.loads(text(hidden))["error"]["type"] == "unknown_action"


async def test_serve_with_an_approver(stack: Path) -> None:
    params = stdio_params(stack, "--action", "edge_wipe", "--approver", "approvals:approve")
    async with Client(params, cache=None) as client:
        assert [t.name for t in (await client.list_tools()).tools] == ["edge_wipe"]
        allowed = await client.call_tool("edge_wipe", {"target": "/scratch"})
        refused = await client.call_tool("edge_wipe", {"target": "/home"})
        other = await client.call_tool("edge_add", {"a": 1, "b": 2})
    assert not allowed.is_error and text(allowed) == "wiped /scratch"
    assert refused.is_error and "not approved" in text(refused)
    assert other.is_error and "unknown_action" in text(other), "only the chosen actions are offered"


def test_serve_needs_a_selection(stack: Path) -> None:
    result = subprocess.run(
        [str(BIN / "keel"), "mcp", "serve"], cwd=stack, capture_output=True, text=True, timeout=60, env=clean_env()
    )
    assert result.returncode != 0 and "--action NAME, --tag TAG" in result.stderr


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def http_server(stack: Path) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [str(BIN / "keel"), "mcp", "serve", "--http", "--port", str(port), "--tag", "edge"], cwd=stack,
        env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
            assert process.poll() is None, f"keel mcp serve --http exited: {process.stderr.read()}"  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "keel mcp serve --http did not listen within 60s"
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp"
        hosted = children(process.pid)  # the edge MCP server that `keel mcp serve` hosts
        assert hosted and all(alive(p) for p in hosted)
        process.send_signal(signal.SIGINT)  # Ctrl-C
        assert process.wait(timeout=30) is not None
        assert not any(alive(p) for p in hosted), "a hosted MCP server outlived `keel mcp serve` after Ctrl-C"
    finally:
        if process.poll() is None:
            process.kill()


async def test_serve_over_streamable_http(http_server: str) -> None:
    async with Client(http_server, cache=None) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        added = await client.call_tool("edge_add", {"a": 2, "b": 2})
        wiped = await client.call_tool("edge_wipe", {"target": "/"})
    assert "edge_add" in names and "edge_wipe" in names
    assert text(added) == "4"
    assert wiped.is_error and "no approver" in text(wiped)


def test_keel_actions_json_lists_environment_actions_with_scope_and_risk(tmp_path: Path) -> None:
    (tmp_path / "keel.toml").write_text(
        STACK
        + f"""
[environments.time]
driver = "mcp"
command = [{json.dumps(TIME_SERVER)}]
prefix = "time_"
risk = "read"
visible_to = ["planner", "tag:ops"]
"""
    )

    def actions(*args: str) -> list[dict[str, Any]]:
        result = subprocess.run(
            [str(BIN / "keel"), "actions", "--json", *args], cwd=tmp_path, capture_output=True, text=True,
            timeout=120, env=clean_env(),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return list(json.loads(result.stdout))

    eager = {row["name"]: row for row in actions()}
    assert "time_get_current_time" not in eager, "the lazy environment is not started by default"
    wipe = eager["edge_wipe"]
    assert (wipe["risk"], wipe["scope"], wipe["source"], wipe["tags"]) == (
        "irreversible", "every agent", "environment:edge", ["edge"],
    )  # fmt: skip
    assert wipe["parameters"]["required"] == ["target"]
    everything = {row["name"]: row for row in actions("--start")}
    assert everything["time_get_current_time"]["scope"] == ["planner", "tag:ops"]
    assert everything["time_get_current_time"]["risk"] == "read"
    as_planner = {row["name"] for row in actions("--start", "--agent", "planner")}
    as_other = {row["name"] for row in actions("--start", "--agent", "someone")}
    assert "time_convert_time" in as_planner and "time_convert_time" not in as_other
    assert "edge_add" in as_other


KEYED = (
    STACK
    + '\n[settings.mcp]\naudit_log = "audit/mcp.jsonl"\n[[settings.mcp.api_keys]]\nkey_env = "MCP_KEY"\ntenant = "acme"\n'
)


def start_http(folder: Path, *args: str, **env: str) -> tuple[subprocess.Popen[str], int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [str(BIN / "keel"), "mcp", "serve", "--http", "--port", str(port), *args], cwd=folder,
        env=clean_env(**env), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return process, port
        assert process.poll() is None, f"keel mcp serve --http exited: {process.stderr.read()}"  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "keel mcp serve --http did not listen within 60s"
        time.sleep(0.1)


async def test_http_serve_takes_the_gateway_credentials_and_audits_to_a_file(tmp_path: Path) -> None:
    import httpx
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    (tmp_path / "keel.toml").write_text(KEYED)
    process, port = start_http(tmp_path, "--tag", "edge", MCP_KEY="mcp-key-0123456789")
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        hello = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}
        accept = {"Accept": "application/json, text/event-stream"}
        async with httpx.AsyncClient(timeout=30) as raw:
            anonymous = await raw.post(url, json=hello, headers=accept)
            wrong = await raw.post(url, json=hello, headers={**accept, "Authorization": "Bearer wrong-key"})
        assert anonymous.status_code == 401 and wrong.status_code == 401
        assert "authentication required" in anonymous.json()["error"]["message"]
        headers = {"Authorization": "Bearer mcp-key-0123456789"}
        http = httpx2.AsyncClient(headers=headers, timeout=30)
        async with http, Client(streamable_http_client(url, http_client=http), cache=None) as client:
            added = await client.call_tool("edge_add", {"a": 2, "b": 3})
            wiped = await client.call_tool("edge_wipe", {"target": "/"})
        assert text(added) == "5" and wiped.is_error
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
    records = [json.loads(line) for line in (tmp_path / "audit" / "mcp.jsonl").read_text().splitlines()]
    kinds = [r["kind"] for r in records]
    assert kinds.count("action.requested") == 2 and "action.completed" in kinds and "action.denied" in kinds
    assert {r["tenant"] for r in records} == {"acme"}, "each call is recorded under the caller's tenant"
    denied = next(r for r in records if r["kind"] == "action.denied")
    assert denied["payload"]["policy"] == "keel.default" and "approver" in denied["payload"]


def test_http_serve_without_credentials_refuses_a_public_address(stack: Path) -> None:
    result = subprocess.run(
        [str(BIN / "keel"), "mcp", "serve", "--http", "--host", "0.0.0.0", "--tag", "edge"], cwd=stack,
        capture_output=True, text=True, timeout=60, env=clean_env(),
    )  # fmt: skip
    assert result.returncode != 0 and "refusing to listen on 0.0.0.0" in result.stderr


async def test_stdio_serve_audits_to_a_json_lines_file_by_default(stack: Path) -> None:
    async with Client(stdio_params(stack, "--tag", "edge"), cache=None) as client:
        await client.call_tool("edge_add", {"a": 1, "b": 1})
    lines = (stack / ".keel" / "audit" / "mcp-serve.jsonl").read_text().splitlines()
    kinds = [json.loads(line)["kind"] for line in lines]
    assert kinds[:1] == ["action.requested"] and "action.completed" in kinds


@pytest.mark.parametrize("approver", ["approvals:sloppy", "approvals:explode"])
async def test_a_sloppy_or_failing_approver_is_a_denial_over_mcp(stack: Path, approver: str) -> None:
    params = stdio_params(stack, "--action", "edge_wipe", "--approver", approver)
    async with Client(params, cache=None) as client:
        wiped = await client.call_tool("edge_wipe", {"target": "/scratch"})
    assert wiped.is_error, "never a JSON-RPC error, never an approval"
    error = json.loads(text(wiped))["error"]
    assert error["type"] == "denied" and "internal-host" not in error["message"]
    lines = (stack / ".keel" / "audit" / "mcp-serve.jsonl").read_text().splitlines()
    assert [json.loads(line)["kind"] for line in lines] == ["action.requested", "action.denied"]
