"""keel-otel against a real OTLP backend nobody here wrote: Arize Phoenix.

The test installs Phoenix (pinned in tests/phoenix/requirements.txt) into its own venv under
.venvs/phoenix (re-made only when the pins change), starts it on 127.0.0.1 with OTLP over HTTP only
(tests/phoenix/serve.py turns its all-interfaces gRPC receiver off), telemetry off and no external
resources, runs an agent with a tool call and a TriggerFlow flow on the scripted model, and reads
the spans back through Phoenix's REST API: span kinds, token counts and tool calls as Phoenix
understood them from the GenAI attributes.
"""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from conftest import ROOT

import keel
from keel.testing import Reply, ScriptedModel, make_host

keel_otel = pytest.importorskip("keel_otel")
from keel_otel import plugin as otel_plugin  # noqa: E402

PHOENIX = ROOT / "tests" / "phoenix"
VENV = ROOT / ".venvs" / "phoenix"
INSTALL_SECONDS = 1200  # a cold install downloads ~300 MB of wheels
START_SECONDS = 300  # first start runs Phoenix's database migrations; the machine is shared
READ_SECONDS = 60  # spans are queued by Phoenix's bulk inserter before the REST API shows them


def ensure_phoenix() -> Path:
    """Phoenix's venv, made from the pinned requirements when missing or stale (one maker at a time)."""
    pins = (PHOENIX / "requirements.txt").read_text()
    python = VENV / "bin" / "python"
    stamp = VENV / ".keel-pins"
    VENV.parent.mkdir(exist_ok=True)
    with open(VENV.parent / "phoenix.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists() and stamp.read_text() == pins and python.exists():
            return python
        uv = [sys.executable, "-m", "uv"]
        subprocess.run([*uv, "venv", "-q", "--clear", "-p", sys.executable, str(VENV)], check=True, timeout=300)
        subprocess.run(
            [*uv, "pip", "install", "-q", "-p", str(python), "-r", str(PHOENIX / "requirements.txt")],
            check=True,
            timeout=INSTALL_SECONDS,
        )
        stamp.write_text(pins)
    return python


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0


class Phoenix:
    def __init__(self, url: str, grpc_port: int, log: Path):
        self.url = url
        self.grpc_port = grpc_port
        self.log = log

    def spans(self, project: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.url}/v1/projects/{project}/spans", params={"limit": 1000}, timeout=10)
        if response.status_code == 404:  # the project appears with its first span
            return []
        response.raise_for_status()
        return list(response.json()["data"])

    async def wait_for(self, project: str, names: set[str]) -> list[dict[str, Any]]:
        """Poll the REST API until spans with all ``names`` are there (bounded)."""
        spans: list[dict[str, Any]] = []
        with anyio.fail_after(READ_SECONDS):
            while not names <= {s["name"] for s in spans}:
                await anyio.sleep(0.5)
                spans = await anyio.to_thread.run_sync(self.spans, project)
        return spans


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Phoenix]:
    python = ensure_phoenix()
    port, grpc_port = free_port(), free_port()
    workdir = tmp_path_factory.mktemp("phoenix")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workdir),
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_PORT": str(port),
        "PHOENIX_GRPC_PORT": str(grpc_port),  # not bound (serve.py), and never the default 4317
        "PHOENIX_WORKING_DIR": str(workdir),
        "PHOENIX_TELEMETRY_ENABLED": "false",
        "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false",
    }
    log = workdir / "phoenix.log"
    url = f"http://127.0.0.1:{port}"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(python), str(PHOENIX / "serve.py")], env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"Phoenix exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"Phoenix did not answer within {START_SECONDS}s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield Phoenix(url, grpc_port, log)
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.fixture
def stack_file(tmp_path: Path, phoenix: Phoenix, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    """A keel.toml whose [settings.otel] points at Phoenix, in a project of this test's own."""
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    project = f"keel-otel-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "keel.toml"
    path.write_text(
        f"""
[settings.otel]
endpoint = "{phoenix.url}"
service_name = "keel-otel-test"
capture_content = true
schedule_delay = 0.2
metrics = false  # Phoenix takes no metrics (see the test below)

[settings.otel.resource]
"openinference.project.name" = "{project}"
"""
    )
    yield path, project
    otel_plugin.shutdown()


@keel.action
def add(a: int, b: int) -> int:
    "Add two numbers."
    return a + b


def test_phoenix_listens_on_loopback_http_only(phoenix: Phoenix) -> None:
    assert listening(int(phoenix.url.rsplit(":", 1)[1]))
    assert not listening(phoenix.grpc_port)  # the gRPC receiver that would bind every interface is off
    assert not listening(4317)


def test_phoenix_takes_traces_but_no_metrics(phoenix: Phoenix) -> None:
    """docs/observability.md tells Phoenix users to set metrics = false: this is why. If Phoenix
    starts taking metrics, this fails, and the docs (and the stack above) should change."""
    headers = {"Content-Type": "application/x-protobuf"}
    assert httpx.post(f"{phoenix.url}/v1/traces", content=b"", headers=headers, timeout=10).status_code == 200
    assert httpx.post(f"{phoenix.url}/v1/metrics", content=b"", headers=headers, timeout=10).status_code >= 400


async def test_phoenix_shows_an_agent_run_with_span_kinds_tokens_and_the_tool_call(
    phoenix: Phoenix, stack_file: tuple[Path, str]
) -> None:
    path, project = stack_file
    model = ScriptedModel(
        [
            Reply(
                tool_calls=[keel.ToolCall(id="call_7", name="add", arguments={"a": 2, "b": 3})],
                usage=keel.Usage(input_tokens=31, output_tokens=9),
            ),
            Reply(text="2 + 3 = 5", usage=keel.Usage(input_tokens=47, output_tokens=6)),
        ]
    )
    async with keel.Runtime(make_host(otel_plugin), keel.load_stack(path)) as runtime:
        runtime.use_model(model)
        runtime.actions.add(add)
        execution = await keel.Agent("calculator", "Use the tools.", actions=["add"]).start(
            "what is 2 + 3?", runtime=runtime
        )
        with anyio.fail_after(30):
            assert await execution.get_data() == "2 + 3 = 5"
    assert otel_plugin.flush(30)

    spans = await phoenix.wait_for(project, {"invoke_agent calculator", "chat scripted", "execute_tool add"})
    assert len(spans) == 4
    (agent,) = [s for s in spans if s["name"] == "invoke_agent calculator"]
    chats = sorted((s for s in spans if s["name"] == "chat scripted"), key=lambda s: s["start_time"])
    (tool,) = [s for s in spans if s["name"] == "execute_tool add"]

    # one trace, the kernel's ids
    assert agent["context"]["trace_id"] == execution.trace_id
    assert agent["context"]["span_id"] == execution.span_id
    assert agent["parent_id"] is None
    assert {s["context"]["trace_id"] for s in spans} == {execution.trace_id}
    assert all(s["parent_id"] == execution.span_id for s in [*chats, tool])

    # span kinds as Phoenix derived them from gen_ai.operation.name
    assert agent["span_kind"] == "AGENT"
    assert [c["span_kind"] for c in chats] == ["LLM", "LLM"]
    assert tool["span_kind"] == "TOOL"

    # token counts per model request, and they add up to the execution's own total
    assert [c["attributes"]["llm.token_count.prompt"] for c in chats] == [31, 47]
    assert [c["attributes"]["llm.token_count.completion"] for c in chats] == [9, 6]
    assert [c["attributes"]["llm.token_count.total"] for c in chats] == [40, 53]
    assert execution.usage == keel.Usage(input_tokens=78, output_tokens=15)
    assert "llm.token_count.prompt" not in agent["attributes"]  # no double count in Phoenix's totals
    assert agent["attributes"]["keel.usage.input_tokens"] == 78

    # the tool call: asked for by the first answer, executed, its result back to the model
    assert tool["attributes"]["tool.name"] == "add"
    assert tool["attributes"]["gen_ai.tool.call.id"] == "call_7"
    assert tool["status_code"] in ("UNSET", "OK")
    assert [e["name"] for e in chats[0]["events"]] == ["tool_call"]
    assert chats[0]["attributes"]["gen_ai.response.finish_reasons"] == ["tool_calls"]
    assert "2 + 3 = 5" in str(chats[1]["attributes"])  # content capture is on in this stack


async def test_phoenix_shows_a_flow_with_its_steps(phoenix: Phoenix, stack_file: tuple[Path, str]) -> None:
    triggerflow = pytest.importorskip("keel_triggerflow")
    from keel_triggerflow import plugin as triggerflow_plugin

    path, project = stack_file

    def double(ctx: Any) -> int:
        return int(ctx.value) * 2

    def fail_once(ctx: Any) -> int:
        if ctx.attempt == 1:
            raise TimeoutError("the first attempt times out")
        return int(ctx.value) + 1

    flow = triggerflow.TriggerFlow("arithmetic")
    flow.to(double).to(fail_once, retries=1).to(keel.Agent("reporter", "Say the number in words."))
    async with keel.Runtime(make_host(otel_plugin, triggerflow_plugin), keel.load_stack(path)) as runtime:
        runtime.use_store(keel.MemoryStore())
        runtime.use_model(ScriptedModel(["forty-one"]))
        with anyio.fail_after(30):
            execution = flow.create_execution(runtime)
            snapshot = await execution.run(20)
    assert snapshot.status == "completed" and await execution.result() == "forty-one"
    assert otel_plugin.flush(30)
    spans = await phoenix.wait_for(
        project,
        {"invoke_workflow arithmetic", "step double", "step reporter", "invoke_agent reporter", "chat scripted"},
    )
    assert len(spans) == 7
    (root,) = [s for s in spans if s["name"] == "invoke_workflow arithmetic"]
    steps = [s for s in spans if s["name"].startswith("step ")]
    # the agent run as the last step is inside that step's span, its model call inside it: one trace
    (step,) = [s for s in steps if s["name"] == "step reporter"]
    (agent,) = [s for s in spans if s["name"] == "invoke_agent reporter"]
    (chat,) = [s for s in spans if s["name"] == "chat scripted"]
    assert agent["parent_id"] == step["context"]["span_id"] and agent["span_kind"] == "AGENT"
    assert chat["parent_id"] == agent["context"]["span_id"] and chat["span_kind"] == "LLM"
    assert root["parent_id"] is None
    assert all(s["parent_id"] == root["context"]["span_id"] for s in steps)
    assert {s["context"]["trace_id"] for s in spans} == {root["context"]["trace_id"]}
    assert root["attributes"]["gen_ai.workflow.name"] == "arithmetic"
    first = await anext(aiter(execution.events()))
    assert root["context"]["trace_id"] == first.trace_id  # the flow's own trace id
    retried = sorted((s for s in steps if s["name"] == "step fail_once"), key=lambda s: s["start_time"])
    assert [s["status_code"] for s in retried] == ["ERROR", "UNSET"]
    assert retried[0]["attributes"]["error.type"] == "TimeoutError"
    assert [s["attributes"]["keel.attempt"] for s in retried] == [1, 2]
