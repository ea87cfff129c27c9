"""What the writer's shortcuts must not change: the rows are the ones the events' text makes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from test_packing import PAYLOADS, TO_JSON

import keel
from keel_devtools import RecordingDB, packing


def dump(path: Path) -> dict[str, list[tuple[object, ...]]]:
    with sqlite3.connect(path) as conn:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall() for t in ("events", "executions")}


def batch() -> list[keel.RuntimeEvent]:
    events = []
    for i, payload in enumerate(PAYLOADS.values()):
        execution_id = f"exe_{i}"
        events += [
            keel.RuntimeEvent(kind="execution.started", execution_id=execution_id, seq=1,
                              payload={"agent": "a", "input": payload}),
            keel.RuntimeEvent(kind="model.request", execution_id=execution_id, seq=2, payload={"request": payload}),
            keel.RuntimeEvent(kind="model.response", execution_id=execution_id, seq=3,
                              payload={"model": "gpt-4o", "usage": {"input_tokens": 7, "output_tokens": i}}),
            keel.RuntimeEvent(kind="action.completed", execution_id=execution_id, seq=4,
                              payload={"call_id": "c", "action": "x", "result": payload}),
            keel.RuntimeEvent(kind="execution.completed", execution_id=execution_id, seq=5,
                              payload={"output": payload, "error": str(i) if i % 2 else None}),
        ]  # fmt: skip
    return events


def test_the_fields_that_travelled_make_the_rows_the_text_alone_makes(tmp_path: Path) -> None:
    # the writer hands ingest each event's fields as decoded from the batch (its payload too), so
    # that it does not parse the text again: the rows and summaries are the text's, whatever the payload
    data, count = packing.encode(batch(), TO_JSON)
    items, failed = packing.decode_items(data)
    assert failed == 0 and count == len(items) and all(fields is not None for fields, _ in items[:5])
    from_text, from_fields = RecordingDB(tmp_path / "text.db"), RecordingDB(tmp_path / "fields.db")
    from_text.ingest([text.decode() for _, text in items])
    from_fields.ingest([(fields, text.decode()) if fields is not None else text.decode() for fields, text in items])
    from_text.close(), from_fields.close()
    assert dump(tmp_path / "text.db") == dump(tmp_path / "fields.db")


def test_what_has_no_value_is_null(tmp_path: Path) -> None:
    # the writer binds a missing value as NaN (SQLite stores it as NULL, as it would None)
    db = RecordingDB(tmp_path / "r.db")
    db.ingest([e.model_dump_json() for e in batch()[:5]])
    db.close()
    with sqlite3.connect(tmp_path / "r.db") as conn:
        types = conn.execute(
            "SELECT kind, typeof(input_tokens), typeof(output_tokens), typeof(cost) FROM events ORDER BY n"
        ).fetchall()
        summary = conn.execute(
            "SELECT typeof(ended_at), typeof(error), typeof(trace_id), typeof(input), status FROM executions"
        ).fetchall()
    assert [t[1:] for t in types if t[0] != "model.response"] == [("null", "null", "null")] * 4
    assert [t[1:] for t in types if t[0] == "model.response"] == [("integer", "integer", "real")]
    assert summary == [("real", "null", "null", "text", "completed")]


def test_a_new_file_has_16k_pages_and_an_existing_one_keeps_its_own(tmp_path: Path) -> None:
    RecordingDB(tmp_path / "new.db").close()
    with sqlite3.connect(tmp_path / "old.db") as conn:
        conn.execute("CREATE TABLE other (a)")
    RecordingDB(tmp_path / "old.db").close()
    for name, size in (("new.db", 16384), ("old.db", 4096)):
        with sqlite3.connect(tmp_path / name) as conn:
            assert conn.execute("PRAGMA page_size").fetchone()[0] == size
