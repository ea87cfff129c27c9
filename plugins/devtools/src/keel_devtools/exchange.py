"""One execution in one file: the export and import format.

JSON Lines, UTF-8. Line 1 is a header object::

    {"format": "keel-execution", "version": 1, "execution_id": ..., "kind": ..., "runnable": ...,
     "tenant": ..., "status": ..., "input": ..., "output": ..., "started_at": ..., "ended_at": ...}

and every following line is one RuntimeEvent as ``event.model_dump(mode="json")``, in sequence
order. Times are seconds since the epoch, as ``RuntimeEvent.time``. A reader rejects another
``format``, a newer ``version``, and events of another execution, naming the line.

Version 2 (written only when there are any) adds the executions run *inside* this one, so that a
replay can serve them too: the agents a flow ran as its steps, an agent started by an action. The
header's ``inner`` lists their headers; their events follow the execution's own, each execution's
in sequence order. An execution is inside another when its ``execution.started`` names, as its
parent span, a span of that execution (TriggerFlow starts an agent step with the step's span).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from pydantic import ValidationError

import keel
from keel_devtools.db import RecordingDB, RecordingError

__all__ = [
    "FORMAT",
    "HEADER_FIELDS",
    "VERSION",
    "Recording",
    "export_execution",
    "import_execution",
    "read_execution",
    "recordings",
]

FORMAT = "keel-execution"
VERSION = 2
HEADER_FIELDS = (
    "format", "version", "execution_id", "kind", "runnable", "tenant", "status", "input", "output",
    "started_at", "ended_at",
)  # fmt: skip


@dataclass
class Recording:
    """A recorded execution: its header and its events (their JSON form), in sequence order, and
    the executions recorded inside it (``inner``: the agents a flow ran as steps, in start order)."""

    header: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)
    source: str = ""
    inner: list[Recording] = field(default_factory=list)

    @property
    def execution_id(self) -> str:
        return str(self.header["execution_id"])

    def runtime_events(self) -> list[keel.RuntimeEvent]:
        return [keel.RuntimeEvent.model_validate(e) for e in self.events]

    @classmethod
    def from_db(cls, db: RecordingDB, execution_id: str) -> Recording:
        execution_id = db.find(execution_id)
        summary = db.execution(execution_id)
        assert summary is not None
        events = [json.loads(line) for line in db.raw_events(execution_id)]
        recording = cls(header_of(summary), events, source=f"{db.path}#{execution_id}")
        others = [
            cls(
                header_of(row), [json.loads(line) for line in db.raw_events(row["id"])], source=f"{db.path}#{row['id']}"
            )
            for row in db.same_trace(execution_id)
        ]
        recording.inner = inside(recording, others)
        return recording

    def write(self, out: IO[str]) -> None:
        header = dict(self.header)
        if self.inner:
            header["version"] = VERSION
            header["inner"] = [r.header for r in self.inner]
        out.write(_line(header))
        for recording in (self, *self.inner):
            for event in recording.events:
                out.write(_line(event))


def _spans(events: Iterable[dict[str, Any]]) -> set[str]:
    return {str(e["span_id"]) for e in events if e.get("span_id")}


def parent_span(recording: Recording) -> str | None:
    """The span an execution was started under (its ``execution.started``'s parent span)."""
    for event in recording.events:
        if event.get("kind") == "execution.started":
            return event.get("parent_span_id") or None
    return None


def inside(recording: Recording, others: Iterable[Recording]) -> list[Recording]:
    """Of ``others`` (executions of the same trace), those started inside ``recording``: under one
    of its spans, or under a span of one already found inside it (a flow's sub-flow's agent). In
    the order given (oldest first)."""
    pending = [r for r in others if r.execution_id != recording.execution_id]
    owned = _spans(recording.events)
    found: list[Recording] = []
    grew = True
    while grew:
        grew = False
        for other in list(pending):
            if parent_span(other) in owned:
                found.append(other)
                pending.remove(other)
                owned |= _spans(other.events)
                grew = True
    order = {id(r): i for i, r in enumerate(others)}
    return sorted(found, key=lambda r: order[id(r)])


def header_of(summary: dict[str, Any]) -> dict[str, Any]:
    """The file header for a recorded execution's summary (a :meth:`RecordingDB.execution` row)."""
    return {
        "format": FORMAT,
        "version": 1,  # 2 when written with executions inside it (Recording.write)
        "execution_id": summary["id"],
        "kind": summary.get("kind"),
        "runnable": summary.get("runnable"),
        "tenant": summary.get("tenant") or "default",
        "status": summary.get("status"),
        "input": summary.get("input"),
        "output": summary.get("output"),
        "started_at": summary.get("started_at"),
        "ended_at": summary.get("ended_at"),
    }


def _line(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")) + "\n"


def export_execution(db: RecordingDB, execution_id: str, path: str | Path | None = None) -> Path:
    """Write one recorded execution to ``path`` (default ``<execution id>.jsonl``; a folder gets
    that name inside it). Returns the file written."""
    recording = Recording.from_db(db, execution_id)
    target = Path(path) if path is not None else Path(f"{recording.execution_id}.jsonl")
    if target.is_dir():
        target = target / f"{recording.execution_id}.jsonl"
    with target.open("w", encoding="utf-8") as out:
        recording.write(out)
    return target


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    try:
        with path.open(encoding="utf-8") as file:
            for number, line in enumerate(file, 1):
                if line.strip():
                    yield number, line
    except (OSError, UnicodeDecodeError) as err:
        raise RecordingError(f"{path}: cannot be read as a UTF-8 execution file: {err}") from err


def read_execution(path: str | Path) -> Recording:
    """Read and check an execution file."""
    path = Path(path)
    lines = _lines(path)
    first = next(lines, None)
    if first is None:
        raise RecordingError(f"{path}: empty; an execution file starts with a keel-execution header line")
    header = _object(path, *first)
    if header.get("format") != FORMAT:
        raise RecordingError(
            f"{path}: line 1 is not a keel-execution header (format={header.get('format')!r}); "
            "export one with `keel devtools export ID`"
        )
    version = header.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise RecordingError(
            f"{path}: format version {version!r} is newer than this keel-devtools reads ({VERSION}); upgrade it"
        )
    missing = [k for k in HEADER_FIELDS if k not in header]
    if missing:
        raise RecordingError(f"{path}: the header lacks {', '.join(missing)}")
    execution_id = header["execution_id"]
    inner = header.pop("inner", None) or []
    if not isinstance(inner, list) or not all(isinstance(h, dict) and h.get("execution_id") for h in inner):
        raise RecordingError(f"{path}: the header's inner is not a list of execution headers")
    nested = {str(h["execution_id"]): Recording(h, source=f"{path}#{h['execution_id']}") for h in inner}
    events: list[dict[str, Any]] = []
    for number, line in lines:
        data = _object(path, number, line)
        try:
            event = keel.RuntimeEvent.model_validate(data)
        except ValidationError as err:
            raise RecordingError(f"{path}: line {number} is not a RuntimeEvent: {err}") from err
        if event.execution_id in nested:
            nested[event.execution_id].events.append(data)
            continue
        if event.execution_id != execution_id:
            raise RecordingError(
                f"{path}: line {number} belongs to execution {event.execution_id!r}, not {execution_id!r}"
                + (" nor to one inside it (the header's inner)" if nested else "")
            )
        events.append(data)
    return Recording(header, events, source=str(path), inner=list(nested.values()))


def _object(path: Path, number: int, line: str) -> dict[str, Any]:
    try:
        data = json.loads(line)
    except json.JSONDecodeError as err:
        raise RecordingError(f"{path}: line {number} is not JSON: {err}") from err
    if not isinstance(data, dict):
        raise RecordingError(f"{path}: line {number} is not a JSON object")
    return data


def import_execution(db: RecordingDB, path: str | Path) -> str:
    """Read an execution file into the recording database (replacing the same id). Returns its id."""
    recording = read_execution(path)
    for one in (*recording.inner, recording):
        if one.events:
            db.replace_execution(one.events)
        else:  # a header alone still names an execution
            db.delete(one.execution_id)
    return recording.execution_id


def recordings(paths: Iterable[str | Path]) -> Iterator[Recording]:
    """Every execution file under the given files and folders (``*.jsonl``, sorted)."""
    for item in paths:
        item = Path(item)
        if item.is_dir():
            for file in sorted(item.rglob("*.jsonl")):
                yield read_execution(file)
        else:
            yield read_execution(item)
