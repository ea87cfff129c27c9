"""keel-model-openai against a real OpenAI-compatible server that nobody here wrote: llama-cpp-python's
own server (``python -m llama_cpp.server``) serving the SmolLM2 GGUF that keel-model-local runs, on
127.0.0.1. Plain, streaming, json_schema output validated by an agent's output contract, cancellation
mid-stream, a model name the server does not serve, a server that is down; and the acceptance check:
pointing the stack at the server instead of the local model changes no application code."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from conftest import ROOT, clean_env
from pydantic import BaseModel, Field

import keel
from keel.runtime import discover_for
from keel_model_local.weights import resolve
from keel_model_openai import ModelConnectionError, ModelNotFoundError
from keel_model_openai.driver import OpenAIModel

TEXT = "Invoice 2024-117 from Nordlys AS, due 2024-12-01: 3 licences at 120.00 EUR each."


class Invoice(BaseModel):
    number: str = Field(description="the invoice number, as printed")
    vendor: str = Field(description="the company that issued the invoice")
    due: str = Field(description="the due date, YYYY-MM-DD")
    total_eur: float = Field(ge=0, description="the total amount in EUR")


AGENT = keel.Agent("invoice", "Extract the invoice from the user's text.", output=Invoice, max_retries=2)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama.cpp's server on a free port, serving SmolLM2 under the name 'smollm2'."""
    gguf, _title = resolve("smollm2", "'server'")
    port = free_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", "smollm2"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", "1"]
    env = {**clean_env(), "OMP_WAIT_POLICY": "PASSIVE"}
    log_path = tmp_path_factory.mktemp("llama-server") / "server.log"
    log = log_path.open("w")  # a file, not a pipe: the server's log would fill a pipe and block it
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {process.returncode}: {log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/models", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server did not answer within 180 s: {log_path.read_text()[-2000:]}")
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def config(url: str, model: str = "smollm2", **options: object) -> keel.ModelConfig:
    return keel.ModelConfig(
        provider="openai", model=model, base_url=url, alias="server", options={"max_tokens": 48, **options}
    )


@pytest.fixture
async def model(server_url: str) -> AsyncIterator[OpenAIModel]:
    model = OpenAIModel(config(server_url))
    yield model
    await model.aclose()


def ask(text: str) -> keel.ModelRequest:
    return keel.ModelRequest(messages=[keel.Message(role="user", content=text)])


def client_connections(port: int) -> int:
    """ESTABLISHED TCP connections from this machine to ``port`` (read from /proc/net/tcp)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                if int(fields[2].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                    count += 1
    return count


# ------------------------------------------------------------------------------------- tests


async def test_plain_answer_with_usage(model: OpenAIModel) -> None:
    events = [e async for e in model.stream(ask("Say hello."))]
    text = "".join(e.text for e in events if isinstance(e, keel.TextDelta))
    done = events[-1]
    assert text.strip()
    assert isinstance(done, keel.ModelDone) and done.finish_reason in ("stop", "length")
    # llama-cpp-python's server sends no usage in streams (it ignores stream_options): None, not zeros
    assert done.usage is None
    assert model.last_timing.total_s is not None


async def test_streams_in_pieces(model: OpenAIModel) -> None:
    deltas = [e async for e in model.stream(ask("Name three colours.")) if isinstance(e, keel.TextDelta)]
    assert len(deltas) >= 3


async def test_stream_false_makes_one_plain_request_with_usage(server_url: str) -> None:
    model = OpenAIModel(config(server_url, stream=False))
    try:
        events = [e async for e in model.stream(ask("Say hello."))]
    finally:
        await model.aclose()
    deltas = [e for e in events if isinstance(e, keel.TextDelta)]
    assert len(deltas) == 1 and deltas[0].text.strip(), "the whole answer arrives as one piece"
    done = events[-1]
    assert isinstance(done, keel.ModelDone) and done.finish_reason in ("stop", "length")
    assert done.usage is not None and done.usage.output_tokens > 0, "a plain answer reports its usage"


async def test_stream_false_still_satisfies_an_agent_contract(server_url: str) -> None:
    async with keel.Runtime() as runtime:
        runtime.use_model(OpenAIModel(config(server_url, max_tokens=200, stream=False)))
        assert isinstance(await AGENT.run(TEXT, runtime=runtime), Invoice)


async def test_json_schema_output_validated_by_the_agent_contract(server_url: str) -> None:
    runtime = keel.Runtime()
    async with runtime:
        model = runtime.use_model(OpenAIModel(config(server_url, max_tokens=200)))
        invoice = await AGENT.run(TEXT, runtime=runtime)
        assert isinstance(invoice, Invoice)
        assert isinstance(model, OpenAIModel) and model.json_mode == "json_object", "llama.cpp: json_object + schema"


async def test_cancellation_mid_stream_closes_the_connection(server_url: str) -> None:
    port = int(server_url.rsplit(":", 1)[1].split("/")[0])
    model = OpenAIModel(config(server_url, max_tokens=400))
    try:
        seen = 0
        open_while_streaming = 0
        async with contextlib.aclosing(model.stream(ask("Count from one to two hundred in words."))) as stream:
            async for event in stream:
                seen += isinstance(event, keel.TextDelta)
                if seen == 2:
                    open_while_streaming = client_connections(port)
                    break
        assert open_while_streaming >= 1
        assert client_connections(port) == 0, "the HTTP stream was not closed"
        # the server is free again and answers the next request
        assert [e async for e in model.stream(ask("Say hi."))][-1].type == "done"
    finally:
        await model.aclose()


async def test_a_model_name_the_server_does_not_serve(server_url: str) -> None:
    # llama.cpp's server answers ANY model name with the model it has loaded (and echoes the name back),
    # so the driver looks the name up in the server's /models before the first request
    model = OpenAIModel(config(server_url, model="no-such-model"))
    try:
        with pytest.raises(ModelNotFoundError) as caught:
            [e async for e in model.stream(ask("Say hi."))]
    finally:
        await model.aclose()
    message = str(caught.value)
    assert "'server'" in message and server_url in message
    assert "does not serve the model 'no-such-model'" in message and "smollm2" in message


async def test_a_server_that_is_down() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    model = OpenAIModel(config(url, max_retries=1))
    try:
        with pytest.raises(ModelConnectionError) as caught:
            [e async for e in model.stream(ask("hi"))]
    finally:
        await model.aclose()
    message = str(caught.value)
    assert "'server'" in message and url in message and "cannot connect" in message and "start the server" in message


# ------------------------------------------------------------------------------- acceptance


async def extract(runtime: keel.Runtime) -> Invoice:
    """Application code: the same for every stack."""
    result = await AGENT.run(TEXT, runtime=runtime)
    assert isinstance(result, Invoice)
    return result


async def test_the_stack_switches_the_model_and_the_result_type_stays(server_url: str, tmp_path: Path) -> None:
    (tmp_path / "server").mkdir()
    (tmp_path / "local").mkdir()  # no stack file: the embedded default, model = "local"
    (tmp_path / "server" / "keel.toml").write_text(
        f'model = "server"\n[models.server]\nprovider = "openai"\nbase_url = "{server_url}"\nmodel = "smollm2"\n',
        encoding="utf-8",
    )
    results: dict[str, tuple[Invoice, str]] = {}
    for name in ("local", "server"):
        stack = keel.load_stack(cwd=tmp_path / name)
        async with keel.Runtime(discover_for(stack), stack) as runtime:
            results[name] = (await extract(runtime), runtime.model().name)
    assert type(results["local"][0]) is type(results["server"][0]) is Invoice
    assert results["local"][1] == "local:smollm2" and results["server"][1] == "openai:smollm2"


def test_hello_example_runs_on_the_server_with_one_stack_file(server_url: str, tmp_path: Path) -> None:
    (tmp_path / "keel.toml").write_text(
        # temperature 0: the tiny model's answer is then the same on every run (config, not application code)
        f'model = "server"\n\n[models.server]\nprovider = "openai"\nbase_url = "{server_url}"\nmodel = "smollm2"\n'
        "options = { temperature = 0 }\n",
        encoding="utf-8",
    )
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "hello.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=clean_env(),
    )
    assert result.returncode == 0, result.stderr
    assert "model: openai:smollm2" in result.stdout
    printed = result.stdout[result.stdout.index("{") :]
    Invoice.model_validate(json.loads(printed))
