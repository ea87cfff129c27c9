"""Real MCP servers nobody here wrote, hosted by Keel: `mcp-server-time` (PyPI, stdio; installed by
keel-mcp's dev dependency group) and `@modelcontextprotocol/server-everything` (npm, stdio and
streamable HTTP; installed by the fixture below into .keel/cache, which git ignores)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import BIN, ROOT, clean_env

import keel
from keel.stack import load_stack
from keel.testing import make_host
from keel_mcp import plugin

EVERYTHING_VERSION = "2026.8.31"
TIME_SERVER = str(BIN / "mcp-server-time")


# ------------------------------------------------------------------------------ helpers


class Audit:
    def __init__(self) -> None:
        self.events: list[keel.RuntimeEvent] = []

    @keel.hookimpl
    def keel_on_runtime_event(self, event: keel.RuntimeEvent) -> None:
        self.events.append(event)

    def of_call(self, call_id: str) -> list[keel.RuntimeEvent]:
        return [e for e in self.events if e.payload.get("call_id") == call_id]


def runtime(tmp_path: Path, toml: str, *plugins: object) -> keel.Runtime:
    (tmp_path / "keel.toml").write_text(toml)
    return keel.Runtime(make_host(plugin, *plugins), load_stack(cwd=tmp_path))


def table(name: str, **values: Any) -> str:
    """A ``[environments.<name>]`` table for the mcp driver; values are dumped as TOML."""
    body = {"driver": "mcp", "start": "eager", "health_interval": 0.3, **values}
    return f"[environments.{name}]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in body.items())


def _toml(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)


def time_table(**values: Any) -> str:
    return table("time", command=[TIME_SERVER, "--local-timezone", "UTC"], prefix="time_", risk="read", **values)


def alive(pid: int) -> bool:
    """In the process table and not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def server_pid(rt: keel.Runtime, name: str) -> int:
    env: Any = rt.environments._get(name).env
    assert env is not None and env.pid, f"{name} has no running process"
    return int(env.pid)


async def wait_restarted(rt: keel.Runtime, name: str, restarts: int = 1) -> None:
    with anyio.fail_after(30):
        while True:
            state = rt.environments.status_of(name)
            if state.restarts >= restarts and state.status == "ready":
                return
            await anyio.sleep(0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ----------------------------------------------------------------------- server-everything


@pytest.fixture(scope="session")
def everything() -> Path:
    """The server-everything executable, installed from npm into .keel/cache once."""
    prefix = ROOT / ".keel" / "cache" / "npm" / f"server-everything-{EVERYTHING_VERSION}"
    executable = prefix / "node_modules" / ".bin" / "mcp-server-everything"
    if not executable.exists():
        npm = shutil.which("npm")
        assert npm, "npm (Node.js 20+) is needed to install @modelcontextprotocol/server-everything"
        prefix.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--loglevel=error",
             f"@modelcontextprotocol/server-everything@{EVERYTHING_VERSION}"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert result.returncode == 0 and executable.exists(), f"npm install failed:\n{result.stderr[-2000:]}"
    return executable


class HttpEverything:
    """server-everything's streamable HTTP transport on a free port (it reads PORT; it binds every
    interface, and the tests only ever reach it on 127.0.0.1)."""

    def __init__(self, executable: Path):
        self.executable = executable
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [str(self.executable), "streamableHttp"], env={**os.environ, "PORT": str(self.port)},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return
            assert self.process.poll() is None, "server-everything (HTTP) exited at start"
            assert time.monotonic() < deadline, "server-everything did not listen within 30s"
            time.sleep(0.1)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


@pytest.fixture
def everything_http(everything: Path) -> Iterator[HttpEverything]:
    server = HttpEverything(everything)
    server.start()
    try:
        yield server
    finally:
        server.kill()


# ----------------------------------------------------------------------------- the tests


async def test_time_server_tools_are_actions_an_agent_can_call(tmp_path: Path) -> None:
    async with runtime(tmp_path, time_table()) as rt:
        now = rt.actions.get("time_get_current_time")
        assert (
            now.parameters["required"] == ["timezone"] and now.parameters["properties"]["timezone"]["type"] == "string"
        )
        assert now.risk == "read" and rt.actions.source(now.name) == "environment:time"
        assert "time_convert_time" in rt.actions
        tokyo = await rt.call_action("time_get_current_time", {"timezone": "Asia/Tokyo"})
        converted = await rt.call_action(
            "time_convert_time", {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Kolkata"}
        )
        bad_zone = await rt.call_action("time_get_current_time", {"timezone": "Mars/Olympus_Mons"})
        missing = await rt.call_action("time_get_current_time", {})
    assert tokyo.ok and tokyo.result["timezone"] == "Asia/Tokyo" and tokyo.result["datetime"].endswith("+09:00")
    assert converted.ok and converted.result["target"]["datetime"].endswith("17:30:00+05:30")
    assert (
        bad_zone.error and bad_zone.error["type"] == "McpToolError" and "Invalid timezone" in bad_zone.error["message"]
    )
    assert missing.error and missing.error["type"] == "invalid_arguments"
    assert "'timezone' is a required property" in missing.error["message"]


async def test_everything_over_stdio(tmp_path: Path, everything: Path) -> None:
    toml = table(
        "everything", command=[str(everything), "stdio"], prefix="ev_", risk="read",
        tool_timeout={"trigger-long-running-operation": 1.0},
    )  # fmt: skip
    async with runtime(tmp_path, toml) as rt:
        assert {"ev_echo", "ev_get-sum", "ev_get-structured-content"} <= {s.name for s in rt.actions}
        echo = await rt.call_action("ev_echo", {"message": "hello"})
        total = await rt.call_action("ev_get-sum", {"a": 2, "b": 3})
        weather = await rt.call_action("ev_get-structured-content", {"location": "Chicago"})
        not_a_city = await rt.call_action("ev_get-structured-content", {"location": "Atlantis"})
        hung = await rt.call_action("ev_trigger-long-running-operation", {"duration": 30, "steps": 3})
        still = await rt.call_action("ev_echo", {"message": "still here"})
    assert echo.result == "Echo: hello"
    assert total.result == "The sum of 2 and 3 is 5."
    assert isinstance(weather.result, dict) and {"temperature", "conditions", "humidity"} <= set(weather.result)
    assert (
        not_a_city.error
        and not_a_city.error["type"] == "invalid_arguments"
        and "Atlantis" in not_a_city.error["message"]
    )
    assert hung.error and hung.error["type"] == "timeout"
    assert still.result == "Echo: still here"


async def test_everything_over_streamable_http(
    tmp_path: Path, everything_http: HttpEverything, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REMOTE_MCP_TOKEN", "t0k3n")
    toml = table(
        "remote", url=everything_http.url, prefix="remote_", risk="read",
        headers={"Authorization": "Bearer ${REMOTE_MCP_TOKEN}"},
    )  # fmt: skip
    async with runtime(tmp_path, toml) as rt:
        assert rt.environments.status_of("remote").status == "ready"
        assert (await rt.environments.check("remote")).ok
        echo = await rt.call_action("remote_echo", {"message": "over http"})
        total = await rt.call_action("remote_get-sum", {"a": 40, "b": 2})
        wrong = await rt.call_action("remote_get-sum", {"a": "forty", "b": 2})
    assert echo.result == "Echo: over http"
    assert total.result == "The sum of 40 and 2 is 42."
    assert wrong.error and wrong.error["type"] == "invalid_arguments"


async def test_a_dropped_http_server_is_reconnected_when_it_comes_back(
    tmp_path: Path, everything_http: HttpEverything
) -> None:
    toml = table(
        "remote", url=everything_http.url, prefix="remote_", risk="read", health_interval=0.2,
        restart={"max_restarts": 30, "backoff_seconds": 0.2},
    )  # fmt: skip
    async with runtime(tmp_path, toml) as rt:
        assert (await rt.call_action("remote_echo", {"message": "before"})).ok
        everything_http.kill()
        down = await rt.call_action("remote_echo", {"message": "while down"})
        assert down.error and down.error["type"] == "McpServerDown" and "'remote'" in down.error["message"]
        with anyio.fail_after(30):
            while rt.environments.status_of("remote").restarts == 0:
                await anyio.sleep(0.05)
        everything_http.start()  # the same port again
        await wait_restarted(rt, "remote")
        again = await rt.call_action("remote_echo", {"message": "after"})
    assert again.result == "Echo: after"


@pytest.mark.parametrize("server", ["time", "everything"])
async def test_sigkill_mid_session_then_restart_then_calls_succeed(
    tmp_path: Path, everything: Path, server: str
) -> None:
    if server == "time":
        toml, action, args = time_table(), "time_get_current_time", {"timezone": "UTC"}
    else:
        toml = table("everything", command=[str(everything), "stdio"], prefix="ev_", risk="read")
        action, args = "ev_echo", {"message": "again"}
    audit = Audit()
    async with runtime(tmp_path, toml, audit) as rt:
        assert (await rt.call_action(action, args)).ok
        first = server_pid(rt, server)
        os.kill(first, signal.SIGKILL)
        await wait_restarted(rt, server)
        again = await rt.call_action(action, args)
        second = server_pid(rt, server)
        assert again.ok, again.error
        assert second != first and not alive(first)
        state = rt.environments.status_of(server)
        assert state.last_health is not None
    assert not alive(second)
    kinds = [e.kind for e in audit.events if e.kind.startswith("environment.")]
    assert kinds[:2] == ["environment.starting", "environment.ready"]
    assert "environment.unhealthy" in kinds and "environment.restarting" in kinds
    unhealthy = next(e for e in audit.events if e.kind == "environment.unhealthy")
    assert "killed by SIGKILL" in unhealthy.payload["detail"] or "did not answer" in unhealthy.payload["detail"]


def test_a_server_that_exits_at_start_is_given_up_and_reported(tmp_path: Path) -> None:
    toml = table(
        "broken", command=[sys.executable, "-c", "import sys; sys.exit('config file missing')"],
        restart={"max_restarts": 2, "backoff_seconds": 0.05},
    )  # fmt: skip
    (tmp_path / "keel.toml").write_text(toml)
    result = subprocess.run(
        [str(BIN / "keel"), "env", "status", "--json"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env=clean_env(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (state,) = json.loads(result.stdout)
    assert state["name"] == "broken" and state["status"] == "failed" and state["restarts"] == 2
    assert "exited with code 1" in state["error"] and "config file missing" in state["error"]


async def test_no_server_process_outlives_the_runtime(tmp_path: Path, everything: Path) -> None:
    toml = time_table() + table("everything", command=[str(everything), "stdio"], prefix="ev_")
    async with runtime(tmp_path, toml) as rt:
        pids = [server_pid(rt, "time"), server_pid(rt, "everything")]
        assert all(alive(p) for p in pids)
    assert not any(alive(p) for p in pids)
    with pytest.raises(KeyError):
        async with runtime(tmp_path, toml) as rt:
            pids = [server_pid(rt, "time"), server_pid(rt, "everything")]
            {}["boom"]
    assert not any(alive(p) for p in pids)


def test_no_server_process_outlives_sigint_to_keel_env_start_hold(tmp_path: Path) -> None:
    (tmp_path / "keel.toml").write_text(time_table(start="lazy"))
    keel_cli = subprocess.Popen(
        [str(BIN / "keel"), "env", "start", "time", "--hold", "--json"], cwd=tmp_path, env=clean_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert keel_cli.stdout is not None
        lines = []
        for line in keel_cli.stdout:  # the status JSON is printed once the server is ready
            lines.append(line)
            if line.startswith("]"):
                break
        (state,) = json.loads("".join(lines))
        assert state["status"] == "ready", state
        servers = children(keel_cli.pid)
        assert servers and all(alive(p) for p in servers)
        keel_cli.send_signal(signal.SIGINT)
        keel_cli.wait(timeout=30)
    finally:
        if keel_cli.poll() is None:
            keel_cli.kill()
    assert not any(alive(p) for p in servers), "an MCP server outlived `keel env start --hold` after Ctrl-C"


async def test_a_function_an_mcp_tool_and_a_plugin_action_look_the_same(tmp_path: Path) -> None:
    """Acceptance: same tool shape for the model, same audit event kinds and payload keys."""

    @keel.action
    def shout(text: str) -> str:
        """Upper-case a text."""
        return text.upper()

    class Words:
        @keel.hookimpl
        def keel_actions(self) -> list[keel.ActionSpec]:
            @keel.action
            def word_count(text: str) -> int:
                """Count the words of a text."""
                return len(text.split())

            return [word_count]

    audit = Audit()
    async with runtime(tmp_path, time_table(), Words(), audit) as rt:
        rt.actions.add(shout)
        names = ["shout", "word_count", "time_get_current_time"]
        schemas = [rt.actions.get(n).tool_schema() for n in names]
        good = [
            await rt.call_action(n, a, context=keel.ActionContext(agent="assistant", execution_id="ex1"))
            for n, a in zip(names, [{"text": "hi"}, {"text": "a b"}, {"timezone": "UTC"}], strict=True)
        ]
        bad = [
            await rt.call_action(n, {}, context=keel.ActionContext(agent="assistant", execution_id="ex1"))
            for n in names
        ]
    assert {s.name for s in rt.actions.visible("assistant")} >= set(names)
    for schema in schemas:
        assert isinstance(schema, keel.ToolSchema) and schema.description
        assert (
            schema.parameters["type"] == "object"
            and list(schema.parameters["required"])
            and schema.parameters["properties"]
        )
    assert all(o.ok for o in good), [o.error for o in good]

    def trail(outcome: keel.ActionOutcome) -> list[tuple[str, list[str]]]:
        return [(e.kind, sorted(e.payload)) for e in audit.of_call(outcome.call_id)]

    assert trail(good[0]) == trail(good[1]) == trail(good[2])
    assert [k for k, _ in trail(good[0])] == [
        "action.requested",
        "action.approved",
        "action.started",
        "action.completed",
    ]
    assert [o.error["type"] for o in bad if o.error] == ["invalid_arguments"] * 3
    assert trail(bad[0]) == trail(bad[1]) == trail(bad[2])
    caller = {"agent": "assistant", "execution_id": "ex1", "tenant": "default"}
    assert all(audit.of_call(o.call_id)[0].payload["caller"] == caller for o in good + bad)


async def test_an_agent_on_the_scripted_model_calls_mcp_tools(tmp_path: Path, everything: Path) -> None:
    """End to end: the model's tool calls go through the agent's tool loop to two real MCP servers."""
    from keel.testing import Reply, ScriptedModel

    toml = time_table() + table("everything", command=[str(everything), "stdio"], prefix="ev_", risk="read")
    calls = [
        keel.ToolCall(id="t1", name="time_get_current_time", arguments={"timezone": "Asia/Tokyo"}),
        keel.ToolCall(id="t2", name="ev_get-sum", arguments={"a": 20, "b": 22}),
        keel.ToolCall(id="t3", name="time_get_current_time", arguments={"zone": "Asia/Tokyo"}),
        keel.ToolCall(id="t4", name="ev_echo", arguments={"message": "not in my selection"}),
    ]
    model = ScriptedModel([Reply(tool_calls=calls), "It is evening in Tokyo, and the sum is 42."])
    agent = keel.Agent("clock", "Answer with the tools.", actions=["time_get_current_time", "ev_get-sum"])
    audit = Audit()
    async with runtime(tmp_path, toml, audit) as rt:
        rt.use_model(model)
        answer = await agent.run("What time is it in Tokyo, and what is 20 + 22?", runtime=rt)
        expected_tools = [rt.actions.get(n).tool_schema() for n in ("time_get_current_time", "ev_get-sum")]
    assert answer == "It is evening in Tokyo, and the sum is 42."
    first, second = model.requests
    assert sorted(first.tools, key=lambda t: t.name) == sorted(expected_tools, key=lambda t: t.name)
    results = {m.tool_call_id: m.content for m in second.messages if m.role == "tool"}
    assert json.loads(results["t1"])["timezone"] == "Asia/Tokyo"
    assert results["t2"] == "The sum of 20 and 22 is 42."
    assert json.loads(results["t3"])["error"]["type"] == "invalid_arguments"
    assert json.loads(results["t4"])["error"]["type"] == "unknown_action", "outside the agent's selection"
    completed = [e for e in audit.events if e.kind == "action.completed"]
    assert sorted(e.payload["call_id"] for e in completed) == ["t1", "t2"]
    assert all(e.payload["caller"]["agent"] == "clock" and e.execution_id for e in completed)
