"""One execution per file: export, import, and the errors a bad file gets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import FINAL, invoice_agent, lookup_vendor, scripted, tool_reply

import keel
from keel_devtools import (
    DEFAULT_SECRET_KEYS,
    FORMAT,
    Recorder,
    RecordingDB,
    RecordingError,
    export_execution,
    import_execution,
    mask_keys,
    read_execution,
)
from keel_devtools.cli import devtools

HEADER_KEYS = ["format", "version", "execution_id", "kind", "runnable", "tenant", "status", "input", "output",
               "started_at", "ended_at"]  # fmt: skip


async def recorded_execution(host: keel.PluginHost, recorder: Recorder) -> keel.Execution:
    async with keel.Runtime(host, keel.Stack()) as runtime:
        runtime.actions.add(lookup_vendor)
        runtime.use_model(scripted(tool_reply(), FINAL))
        execution = await invoice_agent().start("Invoice from Nordlys AS", runtime=runtime)
        await execution.result()
    assert recorder.flush()
    return execution


async def test_an_export_is_a_header_then_every_event_in_order(
    host: keel.PluginHost, recorder: Recorder, tmp_path: Path
) -> None:
    execution = await recorded_execution(host, recorder)
    file = export_execution(recorder.db, execution.id[:12], tmp_path)  # a unique prefix is enough
    assert file == tmp_path / f"{execution.id}.jsonl"
    lines = [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines()]
    header, events = lines[0], lines[1:]
    assert list(header) == HEADER_KEYS
    assert header["format"] == FORMAT and header["version"] == 1
    assert (header["kind"], header["runnable"], header["status"]) == ("agent", "invoice", "completed")
    assert header["input"] == "Invoice from Nordlys AS" and header["output"]["country"] == "NO"
    assert header["started_at"] <= header["ended_at"]
    own = [e async for e in execution.events()]
    assert [e["seq"] for e in events] == [e.seq for e in own]
    for line, event in zip(events, own, strict=True):
        # the tool call's api_key argument was masked before it was ever written, wherever it appears
        assert line == mask_keys(event.model_dump(mode="json"), DEFAULT_SECRET_KEYS)
    assert "sk-live-123" not in file.read_text(encoding="utf-8")


async def test_an_import_restores_the_execution_in_another_recording(
    host: keel.PluginHost, recorder: Recorder, tmp_path: Path
) -> None:
    execution = await recorded_execution(host, recorder)
    file = export_execution(recorder.db, execution.id, tmp_path / "one.jsonl")
    other = RecordingDB(tmp_path / "other.db")
    assert import_execution(other, file) == execution.id
    assert import_execution(other, file) == execution.id  # twice: replaced, not doubled
    assert other.raw_events(execution.id) == recorder.db.raw_events(execution.id)
    mine, theirs = recorder.db.execution(execution.id), other.execution(execution.id)
    assert mine is not None and theirs is not None
    for key in ("kind", "runnable", "status", "events", "input_tokens", "output_tokens", "cost", "input", "output"):
        assert mine[key] == theirs[key], key
    assert read_execution(file).header == read_execution(export_execution(other, execution.id, tmp_path)).header


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "empty"),
        ("not json\n", "line 1 is not JSON"),
        ('{"format": "other"}\n', "not a keel-execution header"),
        ('{"format": "keel-execution", "version": 99}\n', "newer than"),
        ('{"format": "keel-execution", "version": 1}\n', "lacks execution_id"),
    ],
)
def test_a_bad_file_is_refused_naming_the_cause(tmp_path: Path, content: str, message: str) -> None:
    file = tmp_path / "bad.jsonl"
    file.write_text(content, encoding="utf-8")
    with pytest.raises(RecordingError, match=message):
        read_execution(file)


def test_an_event_of_another_execution_is_refused_naming_its_line(tmp_path: Path) -> None:
    header = {k: None for k in HEADER_KEYS} | {"format": FORMAT, "version": 1, "execution_id": "exe_a"}
    good = keel.RuntimeEvent(kind="execution.started", execution_id="exe_a", seq=1).model_dump(mode="json")
    bad = keel.RuntimeEvent(kind="model.delta", execution_id="exe_b", seq=2).model_dump(mode="json")
    odd = dict(good, surprise=1)
    file = tmp_path / "x.jsonl"
    file.write_text("\n".join(json.dumps(x) for x in (header, good, bad)), encoding="utf-8")
    with pytest.raises(RecordingError, match="line 3 belongs to execution 'exe_b'"):
        read_execution(file)
    file.write_text("\n".join(json.dumps(x) for x in (header, odd)), encoding="utf-8")
    with pytest.raises(RecordingError, match="line 2 is not a RuntimeEvent"):
        read_execution(file)


def test_gaps_in_a_sequence_show_as_missing_events(tmp_path: Path) -> None:
    db = RecordingDB(tmp_path / "gaps.db")
    events = [
        keel.RuntimeEvent(kind=kind, execution_id="exe_gap", seq=seq, payload=payload).model_dump(mode="json")
        for kind, seq, payload in [
            ("execution.started", 1, {"agent": "a", "input": "x"}),
            ("model.delta", 4, {"attempt": 0, "text": "y"}),
            ("execution.completed", 6, {"output": "y"}),
        ]
    ]
    db.replace_execution(events)
    summary = db.execution("exe_gap")
    assert summary is not None and summary["missing"] == 3 and summary["status"] == "completed"


async def test_the_cli_lists_exports_imports_and_purges(
    host: keel.PluginHost, recorder: Recorder, tmp_path: Path
) -> None:
    execution = await recorded_execution(host, recorder)
    db = str(recorder.db.path)
    runner = CliRunner()
    listed = runner.invoke(devtools, ["ls", "--db", db, "--json"])
    assert listed.exit_code == 0, listed.output
    assert [row["id"] for row in json.loads(listed.output)] == [execution.id]
    exported = runner.invoke(devtools, ["export", "--db", db, execution.id, "-o", str(tmp_path)])
    assert exported.exit_code == 0 and Path(exported.output.strip()).exists()
    fresh = str(tmp_path / "fresh.db")
    imported = runner.invoke(devtools, ["import", "--db", fresh, str(tmp_path)])
    assert imported.exit_code == 0 and execution.id in imported.output
    missing = runner.invoke(devtools, ["export", "--db", db, "exe_nope"])
    assert missing.exit_code == 1 and "no recorded execution 'exe_nope'" in missing.output
    purged = runner.invoke(devtools, ["purge", "--db", fresh, "--max-mb", "0.000001"])
    assert purged.exit_code == 0 and "forgot 1" in purged.output
    assert runner.invoke(devtools, ["purge", "--db", fresh]).exit_code == 2


async def test_the_stack_settings_choose_where_a_runtime_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import keel_devtools.record as recorder_module
    from keel.testing import make_host
    from keel_devtools import plugin

    monkeypatch.setattr(recorder_module, "_configured", None)
    target = tmp_path / "from-stack.db"
    stack_file = tmp_path / "keel.toml"
    stack_file.write_text(f'[settings.devtools]\npath = "{target}"\nredact_keys = ["agent"]\n', encoding="utf-8")
    async with keel.Runtime(make_host(plugin), keel.load_stack(stack_file)) as runtime:
        runtime.use_model(scripted(FINAL))
        execution = await keel.Agent("plain", "Extract.").start("text", runtime=runtime)
        await execution.result()
    rec = recorder_module._by_path[target.resolve()]
    assert rec.flush()
    raw = "\n".join(rec.db.raw_events(execution.id))
    assert '"agent":"***"' in raw and '"agent":"plain"' not in raw
    rec.close()
    stack_file.write_text("[settings.devtools]\nenabled = false\n", encoding="utf-8")
    async with keel.Runtime(make_host(plugin), keel.load_stack(stack_file)) as runtime:
        runtime.use_model(scripted(FINAL))
        await (await keel.Agent("plain", "Extract.").start("text", runtime=runtime)).result()
    assert not (tmp_path / ".keel").exists()


def test_events_written_by_any_json_writer_are_summarized_alike(tmp_path: Path) -> None:
    db = RecordingDB(tmp_path / "spaced.db")
    started = keel.RuntimeEvent(kind="execution.started", execution_id="exe_s", seq=1, payload={"agent": "a"})
    ended = keel.RuntimeEvent(kind="execution.failed", execution_id="exe_s", seq=2, payload={"error": "E: no"})
    db.ingest([json.dumps(e.model_dump(mode="json"), indent=2) for e in (started, ended)])  # spaces, newlines
    summary = db.execution("exe_s")
    assert summary is not None
    assert (summary["runnable"], summary["status"], summary["error"]) == ("a", "failed", "E: no")


def test_the_executions_run_inside_one_travel_in_its_file(tmp_path: Path) -> None:
    """An agent a flow ran as a step (started under the step's span, in the flow's trace) is read,
    exported and imported with the flow; another execution of the same trace is not."""
    db = RecordingDB(tmp_path / "trace.db")
    trace = "ab" * 16

    def event(execution_id: str, seq: int, kind: str, span: str, parent: str | None, **payload: object) -> str:
        return json.dumps({"id": f"{execution_id}.{seq}", "kind": kind, "time": seq / 10, "execution_id": execution_id,
                           "seq": seq, "trace_id": trace, "span_id": span, "parent_span_id": parent,
                           "source": "keel", "tenant": "default", "payload": payload})  # fmt: skip

    db.ingest([
        event("flow_1", 1, "execution.started", "f0", None, flow="triage", input="x"),
        event("flow_1", 2, "flow.step.started", "f1", "f0", path="@0", step="classifier"),
        event("exe_a", 1, "execution.started", "a0", "f1", agent="classifier", input="x"),
        event("exe_a", 2, "execution.completed", "a0", "f1", output="bug"),
        event("flow_1", 3, "flow.step.completed", "f1", "f0", path="@0", step="classifier"),
        event("flow_1", 4, "execution.completed", "f0", None, output="bug"),
        event("exe_other", 1, "execution.started", "o0", "elsewhere", agent="classifier", input="y"),
    ])  # fmt: skip
    file = export_execution(db, "flow_1", tmp_path)
    lines = [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines()]
    assert lines[0]["version"] == 2 and [h["execution_id"] for h in lines[0]["inner"]] == ["exe_a"]
    assert [e["execution_id"] for e in lines[1:]] == ["flow_1"] * 4 + ["exe_a"] * 2
    read = read_execution(file)
    assert [r.execution_id for r in read.inner] == ["exe_a"] and len(read.inner[0].events) == 2
    other = RecordingDB(tmp_path / "other.db")
    assert import_execution(other, file) == "flow_1"
    assert sorted(r["id"] for r in other.page(None, limit=10)[0]) == ["exe_a", "flow_1"]
    # an event of an execution the header does not list is still refused
    file.write_text(file.read_text(encoding="utf-8") + event("exe_other", 1, "execution.started", "o0", None) + "\n")
    with pytest.raises(RecordingError, match="nor to one inside it"):
        read_execution(file)
