"""The web UI over HTTP: list with filters and paging, execution page, compare, the JSON API."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from conftest import FINAL, invoice_agent, lookup_vendor, scripted, tool_reply
from starlette.testclient import TestClient

import keel
from keel_devtools import Recorder
from keel_devtools.web import build_app

HOSTILE = "<script>alert('x')</script>"


async def record_some(host: keel.PluginHost, recorder: Recorder) -> list[str]:
    ids = []
    async with keel.Runtime(host, keel.Stack()) as runtime:
        runtime.actions.add(lookup_vendor)
        for text in ("Invoice from Nordlys AS", HOSTILE):
            runtime.use_model(scripted(tool_reply(), FINAL))
            execution = await invoice_agent().start(text, runtime=runtime)
            await execution.result()
            ids.append(execution.id)
        runtime.use_model(scripted("not json at all", "still not", "never"))
        failing = await invoice_agent(max_retries=1).start("bad", runtime=runtime)
        with pytest.raises(keel.KeelError):
            await failing.result()
        ids.append(failing.id)
    assert recorder.flush()
    return ids


@pytest.fixture
def client_ids(host: keel.PluginHost, recorder: Recorder) -> tuple[TestClient, list[str]]:
    ids = anyio.run(record_some, host, recorder)
    return TestClient(build_app(recorder.db.path)), ids


def test_the_list_filters_pages_and_escapes(client_ids: tuple[TestClient, list[str]]) -> None:
    client, ids = client_ids
    page = client.get("/")
    assert page.status_code == 200 and all(i in page.text for i in ids)
    assert "<script>alert" not in page.text  # hostile input is shown, never run
    assert "default-src 'self'" in page.headers["content-security-policy"]
    failed = client.get("/", params={"status": "failed"}).text
    assert ids[2] in failed and ids[0] not in failed
    assert ids[2] in client.get("/", params={"error": "*"}).text
    assert ids[0] not in client.get("/", params={"min_tokens": "100000"}).text
    first = client.get("/api/executions", params={"limit": 2}).json()
    assert len(first["executions"]) == 2 and first["next"]
    second = client.get("/api/executions", params={"limit": 2, "before": first["next"]}).json()
    seen = [e["id"] for e in first["executions"] + second["executions"]]
    assert sorted(seen) == sorted(ids) and second["next"] is None


def test_the_execution_page_shows_timeline_steps_tokens_and_events(client_ids: tuple[TestClient, list[str]]) -> None:
    client, ids = client_ids
    page = client.get(f"/executions/{ids[0]}").text
    for needle in ("id=waterfall", "bar model", "bar action", "id=steps", "lookup_vendor-1", "model-2", "id=events"):
        assert needle in page, needle
    assert "sk-live-123" not in page
    events = client.get(f"/api/executions/{ids[0]}/events", params={"after": 3}).json()
    assert events["events"][0]["seq"] == 4 and events["execution"]["status"] == "completed"
    one = client.get(f"/api/executions/{ids[0]}/events/2").json()
    assert one["kind"] == "model.request" and one["step"] == "model-1"
    failed = client.get(f"/executions/{ids[2]}").text
    assert "bar retry" in failed and "OutputValidationError" in failed
    assert client.get("/executions/exe_nope").status_code == 404


def test_compare_aligns_by_step_and_marks_the_first_divergence(client_ids: tuple[TestClient, list[str]]) -> None:
    client, ids = client_ids
    same = client.get("/compare", params={"a": ids[0], "b": ids[0]}).text
    assert "no divergence" in same
    page = client.get("/compare", params={"a": ids[0], "b": ids[1]}).text
    assert "id=step-first" in page and "id=divergence-step>model-1<" in page
    assert "Nordlys AS" in page and "&lt;script&gt;" in page  # the differing inputs, escaped


def test_keel_devtools_refuses_a_missing_recording(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from keel_devtools.cli import devtools

    result = CliRunner().invoke(devtools, ["--db", str(tmp_path / "none.db")])
    assert result.exit_code == 1 and "no recording at" in result.output


def test_a_flow_and_the_agents_it_ran_link_to_each_other(tmp_path: Path) -> None:
    import json

    from keel_devtools import RecordingDB

    db = RecordingDB(tmp_path / "trace.db")
    trace = "ab" * 16

    def event(execution_id: str, seq: int, kind: str, t: float, **payload: object) -> str:
        trace_id = trace if execution_id != "exe_other" else "cd" * 16  # exe_other: a trace of its own
        return json.dumps({"id": f"{execution_id}.{seq}", "kind": kind, "time": t, "execution_id": execution_id,
                           "seq": seq, "trace_id": trace_id, "source": "keel", "tenant": "default", "payload": payload})  # fmt: skip

    db.ingest([
        event("flow_1", 1, "execution.started", 1.0, flow="triage", input="x"),
        event("exe_a", 1, "execution.started", 1.1, agent="classifier", input="x"),
        event("exe_a", 2, "execution.completed", 1.2, output="bug"),
        event("flow_1", 2, "execution.completed", 1.3, output="bug"),
        event("exe_other", 1, "execution.started", 2.0, agent="classifier", input="y"),
    ])  # fmt: skip
    db.close()
    client = TestClient(build_app(tmp_path / "trace.db"))
    flow_page = client.get("/executions/flow_1").text
    assert "inside this flow:" in flow_page and "href='/executions/exe_a'" in flow_page
    assert "exe_other" not in flow_page  # another trace
    agent_page = client.get("/executions/exe_a").text
    assert "part of flow" in agent_page and "href='/executions/flow_1'" in agent_page
    assert "id=related" not in client.get("/executions/exe_other").text
