"""Issue 22: the gateway streams an execution that another process runs, live.

A real second process (a worker, say) runs a durable flow over one SQLite file; the gateway's
process only finds it (``runtime.find_execution``). A client following it over SSE sees each step's
progress, the flow's stream item, the wait, and (after answering through the gateway, which goes
to the owner's inbox) the completion, as they happen, not what the store said when it was read."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import httpx
from test_gateway_support import sse_events

from keel_gateway import create_app
from keel_gateway.testing import serve

FLOWS = '''
import time
from pathlib import Path

import keel
from keel_triggerflow import TriggerFlow


def gate(ctx):
    """Hold the run until the client follows (the file ctx.value["go"] exists)."""
    deadline = time.monotonic() + 60
    while not Path(ctx.value["go"]).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return ctx.value


def draft(ctx):
    ctx.put_into_stream({"message": "drafted", "percent": 40})
    return f"draft about {ctx.value['topic']}"


async def approve(ctx):
    return await ctx.pause_for("approve", {"message": "publish this?", "draft": ctx.value})


def publish(ctx):
    return {"published": bool(ctx.value.get("approved"))}


def review_flow():
    flow = TriggerFlow("review")
    flow.to(gate).to(draft).to(approve).to(publish)
    return flow


def runtime_for(folder, db):
    folder.mkdir(exist_ok=True)
    (folder / "keel.toml").write_text(f'[store]\\ndriver = "sqlite"\\npath = "{db}"\\n')
    host = keel.PluginHost.discover(load=["sqlite", "triggerflow", "gateway"])
    runtime = keel.Runtime(host, keel.load_stack(folder / "keel.toml"), shutdown_grace=2.0)
    runtime.add(review_flow())
    return runtime
'''

OWNER = """
import sys
from pathlib import Path
import anyio
sys.path.insert(0, {here!r})
import gwflows

async def main():
    runtime = gwflows.runtime_for(Path({here!r}) / "owner", {db!r})
    async with runtime:
        flow = runtime.runnables.get("review")
        execution = await flow.start({{"topic": "tides", "go": {go!r}}}, runtime=runtime)
        print(execution.id, flush=True)
        with anyio.fail_after(60):
            print("result", await execution.result(), flush=True)

anyio.run(main)
"""


def test_the_gateway_streams_an_execution_another_process_runs(tmp_path: Path) -> None:
    (tmp_path / "gwflows.py").write_text(FLOWS)
    sys.path.insert(0, str(tmp_path))
    try:
        import gwflows  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(tmp_path))
    db, go = tmp_path / "state.db", tmp_path / "go"
    script = textwrap.dedent(OWNER.format(here=str(tmp_path), db=str(db), go=str(go)))
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        assert owner.stdout is not None
        execution_id = owner.stdout.readline().strip()
        assert execution_id.startswith("flow_"), execution_id
        frames = _follow_over_sse(gwflows.runtime_for(tmp_path / "gateway", db), execution_id, go)
        assert owner.stdout.readline().startswith("result")
    finally:
        owner.kill()
        owner.wait(timeout=30)
    types = [f["event"] for f in frames]
    assert types[-1] == "task.completed", types
    assert '"published":true' in frames[-1]["data"].replace(" ", "")
    progress = [f["data"] for f in frames if f["event"] == "task.progress"]
    assert any('"drafted"' in p for p in progress), progress  # the flow's stream item, live
    assert any("step" in p and "done" in p for p in progress), progress  # its steps, live
    assert types.index("task.waiting") < types.index("task.completed")
    # the steps after the client came in: progress between its first frame and the wait
    assert types.index("task.progress") < types.index("task.waiting"), types


def _follow_over_sse(runtime: Any, execution_id: str, go: Path) -> list[dict[str, str]]:
    """Serve the gateway (it does not run the flow), follow the execution over SSE, let the owner
    go on, answer its wait through the gateway, and return every SSE frame until the end."""
    frames: list[dict[str, str]] = []
    waiting, failure = threading.Event(), []
    with serve(create_app(runtime, {}, adopt=True)) as url, httpx.Client(base_url=url, timeout=30) as http:
        view = http.get(f"/v1/executions/{execution_id}")
        assert view.status_code == 200 and view.json()["status"] == "running", view.text

        def follow() -> None:
            try:
                with http.stream("GET", f"/v1/executions/{execution_id}/events") as response:
                    text = ""
                    for chunk in response.iter_text():
                        text += chunk
                        frames[:] = sse_events(text)
                        if any(f["event"] == "task.waiting" for f in frames):
                            waiting.set()
            except BaseException as err:  # told to the test below
                failure.append(err)
            finally:
                waiting.set()

        reader = threading.Thread(target=follow, daemon=True)
        reader.start()
        go.touch()  # the owner runs on, in its own process
        assert waiting.wait(30) and not failure, (failure, frames)
        answer = {"payload": {"approved": True}, "request_id": "r1"}
        accepted = http.post(f"/v1/executions/{execution_id}/signals/approve", json=answer)
        assert accepted.status_code == 202, accepted.text
        reader.join(30)
        assert not reader.is_alive() and not failure, (failure, frames)
    return frames
