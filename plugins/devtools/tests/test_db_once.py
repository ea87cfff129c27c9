"""Recording is idempotent by (execution id, seq, span): two processes that follow one execution
into one file (a Temporal execution's followers publish the same events) record it once."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from keel_devtools import RecordingDB


def event(seq: int, kind: str, span: str = "s-run1", **payload: Any) -> str:
    return json.dumps(
        {"id": f"ev{seq}-{span}", "kind": kind, "time": 100.0 + seq, "execution_id": "flow_1", "seq": seq,
         "trace_id": "t1", "span_id": span, "parent_span_id": None, "source": "temporal", "level": "info",
         "tenant": "default", "payload": payload}
    )  # fmt: skip


def run(span: str = "s-run1") -> list[str]:
    return [
        event(1, "execution.started", span, flow="refund", input={"ticket": 1}),
        event(2, "flow.step.started", span, path="@0", step="classify", attempt=1),
        event(3, "flow.step.completed", span, path="@0", step="classify"),
        event(4, "execution.completed", span, output="done"),
    ]


def test_the_same_events_from_two_followers_are_recorded_and_counted_once(tmp_path: Path) -> None:
    db = RecordingDB(tmp_path / "r.db")
    first, second = run(), run()
    second[0] = event(1, "execution.started", flow="refund", followed=True)  # a follower's start: no input
    db.ingest(first[:2])
    db.ingest(second)  # the second follower's writer: two of its four are new
    db.ingest(first[2:])  # the first one's late batch: nothing new
    assert [row["seq"] for row in db.events("flow_1")] == [1, 2, 3, 4]
    assert db.events("flow_1")[0]["event"]["payload"]["input"] == {"ticket": 1}  # the first one written
    summary = db.execution("flow_1")
    assert summary is not None
    assert (summary["events"], summary["seq_events"], summary["missing"]) == (4, 4, 0)
    assert summary["status"] == "completed" and summary["input"] == {"ticket": 1}  # a late start changes nothing
    assert summary["bytes"] == sum(len(e) for e in first)


def test_a_resumed_run_with_the_same_seqs_in_a_span_of_its_own_is_kept(tmp_path: Path) -> None:
    db = RecordingDB(tmp_path / "r.db")
    db.ingest(run("s-run1"))
    db.ingest(run("s-run2"))  # a local flow resumed in another process starts its seqs again
    assert len(db.events("flow_1")) == 8
    summary = db.execution("flow_1")
    assert summary is not None and summary["events"] == 8


def test_a_file_from_before_gets_the_span_column_and_loses_its_double_records(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE events (n INTEGER PRIMARY KEY, execution_id TEXT NOT NULL, seq INTEGER, step TEXT NOT NULL,"
        " kind TEXT NOT NULL, time REAL NOT NULL, input_tokens INTEGER, output_tokens INTEGER, cost REAL,"
        " data TEXT NOT NULL);"
    )
    for data in [*run(), *run()[2:], event(1, "flow.note", span="s-other")]:  # two followers, and a run
        fields = json.loads(data)
        old.execute(
            "INSERT INTO events (execution_id, seq, step, kind, time, data) VALUES (?, ?, ?, ?, ?, ?)",
            (fields["execution_id"], fields["seq"], "x", fields["kind"], fields["time"], data),
        )
    old.commit()
    old.close()
    db = RecordingDB(path)
    assert [row["seq"] for row in db.events("flow_1")] == [1, 1, 2, 3, 4]  # another span's is kept
    db.ingest(run())
    assert len(db.events("flow_1")) == 5
    db.close()
    kinds = [row["kind"] for row in RecordingDB(path).events("flow_1")]  # opened again: as it was
    assert kinds == [
        "execution.started",
        "flow.note",
        "flow.step.started",
        "flow.step.completed",
        "execution.completed",
    ]
