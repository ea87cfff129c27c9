"""The recording database: one SQLite file (stdlib ``sqlite3``, WAL), two tables.

``executions`` holds one summary row per execution (what the list pages and filters on);
``events`` holds every recorded event's JSON, keyed by execution id, sequence number and step
path. The recorder's writer thread is the only writer in a process; readers (the UI, export,
replay) open their own connections.

Recording is idempotent: an event whose (execution id, seq, span) is recorded already is not
recorded again, nor counted in its execution's summary. Two processes that follow one execution
(a Temporal execution's followers publish the same events, with the same seqs and spans) into one
file record it once; a run of a local flow resumed in another process starts its seqs again, but
in a span of its own, so it is kept beside the first run's.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keel
from keel_devtools.prices import PriceTable
from keel_devtools.steps import StepPaths

__all__ = ["ExecutionFilter", "RecordingDB", "RecordingError"]

END_KINDS = frozenset({"execution.completed", "execution.failed", "execution.cancelled"})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS executions (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL DEFAULT 'default',
    kind TEXT,
    runnable TEXT,
    status TEXT,
    started_at REAL,
    ended_at REAL,
    input TEXT,
    output TEXT,
    error TEXT,
    events INTEGER NOT NULL DEFAULT 0,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cost REAL NOT NULL DEFAULT 0,
    unpriced INTEGER NOT NULL DEFAULT 0,
    dropped INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0,
    trace_id TEXT,
    max_seq INTEGER NOT NULL DEFAULT 0,
    seq_events INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS executions_started ON executions (started_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS executions_status ON executions (status, started_at DESC);
CREATE INDEX IF NOT EXISTS executions_runnable ON executions (runnable, started_at DESC);
CREATE INDEX IF NOT EXISTS executions_trace ON executions (trace_id);
CREATE TABLE IF NOT EXISTS events (
    n INTEGER PRIMARY KEY,
    execution_id TEXT NOT NULL,
    seq INTEGER,
    step TEXT NOT NULL,
    kind TEXT NOT NULL,
    time REAL NOT NULL,
    input_tokens INTEGER,
    output_tokens INTEGER,
    cost REAL,
    data TEXT NOT NULL,
    span TEXT
);
CREATE INDEX IF NOT EXISTS events_execution ON events (execution_id, seq, n);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

#: an event is recorded once (see the module docstring); a NULL seq or span never conflicts
_ONCE = "CREATE UNIQUE INDEX IF NOT EXISTS events_once ON events (execution_id, seq, span)"

#: files written before events had a span (user_version 0): the column, filled from the events'
#: JSON, the events recorded twice removed (the first one kept), then the index
_MIGRATE_SPAN = """
ALTER TABLE events ADD COLUMN span TEXT;
UPDATE events SET span = json_extract(data, '$.span_id');
DELETE FROM events WHERE seq IS NOT NULL AND span IS NOT NULL AND n NOT IN (
    SELECT MIN(n) FROM events WHERE seq IS NOT NULL AND span IS NOT NULL GROUP BY execution_id, seq, span
);
"""
_SCHEMA_VERSION = 1
_PAGE_SIZE = 16384

#: NULL, as bound to a statement: SQLite stores a NaN bound as NULL, which is what binding ``None``
#: does, but the sqlite3 module binds ``None`` through its adapter look-up (two failed attribute
#: look-ups, each making an exception), about 0.6 us a value, where it binds a ``float``
#: directly. Most events have no tokens and no cost: three such values an event.
_NULL = math.nan

_INSERT = (
    "INSERT OR IGNORE INTO events (execution_id, seq, step, kind, time, input_tokens, output_tokens, cost, data, span)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

_UPSERT = """
INSERT INTO executions (id, tenant, kind, runnable, status, started_at, ended_at, input, output, error,
    events, input_tokens, output_tokens, cost, unpriced, dropped, bytes, trace_id, max_seq, seq_events)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
    kind = COALESCE(excluded.kind, kind),
    runnable = COALESCE(excluded.runnable, runnable),
    status = COALESCE(excluded.status, status),
    started_at = MIN(COALESCE(started_at, excluded.started_at), COALESCE(excluded.started_at, started_at)),
    ended_at = COALESCE(excluded.ended_at, ended_at),
    input = COALESCE(excluded.input, input),
    output = COALESCE(excluded.output, output),
    error = COALESCE(excluded.error, error),
    events = events + excluded.events,
    input_tokens = input_tokens + excluded.input_tokens,
    output_tokens = output_tokens + excluded.output_tokens,
    cost = cost + excluded.cost,
    unpriced = unpriced + excluded.unpriced,
    dropped = dropped + excluded.dropped,
    bytes = bytes + excluded.bytes,
    trace_id = COALESCE(trace_id, excluded.trace_id),
    max_seq = MAX(max_seq, excluded.max_seq),
    seq_events = seq_events + excluded.seq_events
"""

_COLUMNS = [
    "id",
    "tenant",
    "kind",
    "runnable",
    "status",
    "started_at",
    "ended_at",
    "input",
    "output",
    "error",
    "events",
    "input_tokens",
    "output_tokens",
    "cost",
    "unpriced",
    "dropped",
    "bytes",
    "trace_id",
    "max_seq",
    "seq_events",
]


class RecordingError(keel.KeelError):
    """A recording that cannot be found, read or written."""

    code = "devtools.recording_failed"


@dataclass
class _Summary:
    tenant: str = "default"
    kind: str | None = None
    runnable: str | None = None
    status: str | None = None
    started_at: float | None = None
    ended_at: float | None = None
    input: str | None = None
    output: str | None = None
    error: str | None = None
    events: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    unpriced: int = 0
    dropped: int = 0
    bytes: int = 0
    trace_id: str | None = None
    max_seq: int = 0
    seq_events: int = 0

    def row(self, execution_id: str) -> tuple[Any, ...]:
        """Its row, to bind (a ``None`` as :data:`_NULL`)."""
        return tuple(_NULL if value is None else value for value in (
            execution_id, self.tenant, self.kind, self.runnable, self.status, self.started_at, self.ended_at,
            self.input, self.output, self.error, self.events, self.input_tokens, self.output_tokens, self.cost,
            self.unpriced, self.dropped, self.bytes, self.trace_id, self.max_seq, self.seq_events,
        ))  # fmt: skip


@dataclass
class ExecutionFilter:
    """What the executions list may be filtered by (every field optional)."""

    status: str | None = None
    runnable: str | None = None
    tenant: str | None = None
    since: float | None = None
    until: float | None = None
    min_tokens: int | None = None
    min_cost: float | None = None
    error: str | None = None  # text contained in the error; "*" = any failed execution

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        args: list[Any] = []
        for column, value in (("status", self.status), ("runnable", self.runnable), ("tenant", self.tenant)):
            if value:
                clauses.append(f"{column} = ?")
                args.append(value)
        if self.since is not None:
            clauses.append("started_at >= ?")
            args.append(self.since)
        if self.until is not None:
            clauses.append("started_at < ?")
            args.append(self.until)
        if self.min_tokens is not None:
            clauses.append("input_tokens + output_tokens >= ?")
            args.append(self.min_tokens)
        if self.min_cost is not None:
            clauses.append("cost >= ?")
            args.append(self.min_cost)
        if self.error == "*":
            clauses.append("error IS NOT NULL")
        elif self.error:
            clauses.append("error LIKE ?")
            args.append(f"%{self.error}%")
        return (" AND ".join(clauses) or "1"), args


#: the kinds whose payload neither the summary nor the step paths read (most events are deltas)
_PAYLOAD_NOT_NEEDED = ("model.delta", "output.")


def _fields(data: str) -> dict[str, Any]:
    """The top-level fields of an event's JSON text, without parsing its payload (model deltas
    are most of the events and their payload is not needed here)."""
    cut = data.find('"payload"')
    if cut < 0:
        return dict(json.loads(data))
    head = data[:cut].rstrip()
    if head.endswith(","):
        head = head[:-1]
    return dict(json.loads(head + "}"))


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


class RecordingDB:
    """The recording file. Thread-safe for one writer and any number of readers (a lock per
    connection; readers and the writer use separate connections)."""

    def __init__(self, path: str | Path, *, prices: PriceTable | None = None):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            # a new file's pages are 16 KiB (SQLite's default is 4): an event's row is about 400
            # bytes, and a batch of thousands written in one transaction then goes to the log and
            # back to the file in a quarter of the pages and system calls; the writer's CPU for
            # SQLite went from about 6 to 4 us an event (bench/devtools.py's workload). An
            # existing file keeps its page size (this is a no-op on it)
            self._conn.execute(f"PRAGMA page_size = {_PAGE_SIZE}")
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(_SCHEMA)
            self._migrate()
        except sqlite3.Error as err:
            raise RecordingError(
                f"DevTools recording {self.path}: cannot be opened: {err}; set KEEL_DEVTOOLS_DB to a writable file"
            ) from err
        self._lock = threading.Lock()
        self.prices = prices or PriceTable.from_env()
        self._paths = StepPaths()

    def _migrate(self) -> None:
        """Bring a recording file written by an earlier version up to this one's schema."""
        conn = self._conn
        if conn.execute("PRAGMA user_version").fetchone()[0] >= _SCHEMA_VERSION:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("PRAGMA user_version").fetchone()[0] < _SCHEMA_VERSION:  # another process did not
                columns = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
                if "span" not in columns:
                    for statement in _MIGRATE_SPAN.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                conn.execute(_ONCE)
                conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # ------------------------------------------------------------------------------- writing

    def ingest(self, events: Sequence[str | tuple[dict[str, Any], str]], drops: dict[str, int] | None = None) -> None:
        """Write events (each one's JSON text, already redacted, or ``(top-level fields, text)``
        when the caller has the fields at hand: with a ``payload`` among them, it must be the
        text's, and is read instead of parsing the text again) and update the executions'
        summaries, in one transaction. An event recorded already (its execution id, seq and span)
        is left out."""
        rows, summaries = self._prepare(events)
        if not self._commit(rows, summaries, drops):
            self._commit_new(events, rows, drops)

    def _prepare(
        self, events: Sequence[str | tuple[dict[str, Any], str]], steps: Sequence[str] | None = None
    ) -> tuple[list[tuple[Any, ...]], dict[str, _Summary]]:
        """The event rows and the executions' summaries of ``events`` (``steps``: their step
        paths, known already; else assigned here, in order)."""
        rows: list[tuple[Any, ...]] = []
        summaries: dict[str, _Summary] = {}
        paths = self._paths
        loads = json.loads
        for i, item in enumerate(events):
            if isinstance(item, tuple):
                event, data = item
            else:
                event, data = _fields(item), item
            kind = event["kind"]
            payload: dict[str, Any] | None = None
            if not kind.startswith(_PAYLOAD_NOT_NEEDED):
                payload = (event["payload"] if "payload" in event else loads(data).get("payload")) or {}
            execution_id = event.get("execution_id") or ""
            step = paths.path(execution_id, kind, payload or {}) if steps is None else steps[i]
            tokens_in: int | float = _NULL
            tokens_out: int | float = _NULL
            cost = _NULL
            summary = summaries.get(execution_id)
            if summary is None:
                summary = summaries[execution_id] = _Summary(tenant=event.get("tenant") or "default")
            summary.events += 1
            summary.bytes += len(data)
            if summary.started_at is None or event["time"] < summary.started_at:
                summary.started_at = event["time"]
            if summary.trace_id is None:
                summary.trace_id = event.get("trace_id")
            if payload is None:
                pass
            elif kind == "model.response":
                usage = payload.get("usage") or None
                if usage:
                    tokens_in = int(usage.get("input_tokens") or 0)
                    tokens_out = int(usage.get("output_tokens") or 0)
                    cost, priced = self.prices.cost(payload.get("model"), usage)
                    summary.input_tokens += tokens_in
                    summary.output_tokens += tokens_out
                    summary.cost += cost
                    summary.unpriced += 0 if priced else 1
            elif kind == "execution.started":
                summary.status = "running"
                if "agent" in payload:
                    summary.kind, summary.runnable = "agent", payload["agent"]
                elif "flow" in payload:
                    summary.kind, summary.runnable = "flow", payload["flow"]
                else:
                    summary.kind = event.get("source")
                if "input" in payload:
                    summary.input = _dumps(payload["input"])
            elif kind == "execution.waiting":
                summary.status = "waiting"
            elif kind in END_KINDS:
                summary.status = kind.split(".", 1)[1]
                summary.ended_at = event["time"]
                if "output" in payload:
                    summary.output = _dumps(payload["output"])
                if payload.get("error") or (kind != "execution.completed" and payload.get("reason")):
                    summary.error = str(payload.get("error") or payload.get("reason"))
            seq = event.get("seq")
            if isinstance(seq, int):
                summary.seq_events += 1
                if seq > summary.max_seq:
                    summary.max_seq = seq
            rows.append(
                (execution_id, seq, step, kind, event["time"], tokens_in, tokens_out, cost, data, event.get("span_id"))
            )
        return rows, summaries

    def _commit(
        self, rows: list[tuple[Any, ...]], summaries: dict[str, _Summary], drops: dict[str, int] | None
    ) -> bool:
        """One transaction: the event rows, the executions' summaries, the drop counter; ``False``
        (nothing written) when an event was recorded already, so that the summaries count it once.
        (Kept out of :meth:`ingest`'s per-event loop, which stays inline: it is the recorder's hot path.)"""
        for execution_id, count in (drops or {}).items():
            summaries.setdefault(execution_id, _Summary()).dropped += count
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")  # another process's writer may record the same events
            try:
                before = conn.total_changes
                conn.executemany(_INSERT, rows)
                if conn.total_changes - before != len(rows):
                    conn.execute("ROLLBACK")
                    return False
                conn.executemany(_UPSERT, [s.row(eid) for eid, s in summaries.items() if eid])
                _count_drops(conn, drops)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return True

    def _commit_new(
        self, events: Sequence[str | tuple[dict[str, Any], str]], rows: list[tuple[Any, ...]],
        drops: dict[str, int] | None,
    ) -> None:  # fmt: skip
        """Write the events of a batch that are not recorded yet, and summaries of those only (the
        rare path: another process recorded some of them)."""
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                new = [i for i, row in enumerate(rows) if conn.execute(_INSERT, row).rowcount == 1]
                summaries = self._prepare([events[i] for i in new], [rows[i][2] for i in new])[1]
                for execution_id, count in (drops or {}).items():
                    summaries.setdefault(execution_id, _Summary()).dropped += count
                conn.executemany(_UPSERT, [s.row(eid) for eid, s in summaries.items() if eid])
                _count_drops(conn, drops)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def replace_execution(self, events: Sequence[dict[str, Any]]) -> None:
        """Write one whole execution (an import), replacing what was recorded under its id."""
        ids = {e.get("execution_id") for e in events}
        if len(ids) != 1 or not next(iter(ids)):
            raise RecordingError("an imported execution's events must all carry one and the same execution_id")
        execution_id = str(next(iter(ids)))
        self.delete(execution_id)
        self._paths.forget(execution_id)
        self.ingest([_dumps(e) for e in events])

    def delete(self, execution_id: str) -> None:
        with self._lock:
            self._conn.execute("BEGIN")
            self._conn.execute("DELETE FROM events WHERE execution_id = ?", (execution_id,))
            self._conn.execute("DELETE FROM executions WHERE id = ?", (execution_id,))
            self._conn.execute("COMMIT")

    def purge(self, *, max_age: float | None = None, max_bytes: int | None = None, now: float | None = None) -> int:
        """Apply retention: forget executions that started more than ``max_age`` seconds ago, then
        the oldest ones until the recorded events take at most ``max_bytes``. Returns how many."""
        now = time.time() if now is None else now
        victims: list[str] = []
        with self._lock:
            conn = self._conn
            if max_age is not None:
                cutoff = now - max_age
                victims += [r[0] for r in conn.execute("SELECT id FROM executions WHERE started_at < ?", (cutoff,))]
            if max_bytes is not None:
                total = conn.execute("SELECT COALESCE(SUM(bytes), 0) FROM executions").fetchone()[0]
                gone = set(victims)
                for execution_id, size in conn.execute(
                    "SELECT id, bytes FROM executions ORDER BY started_at ASC, id ASC"
                ):
                    if total <= max_bytes:
                        break
                    if execution_id not in gone:
                        victims.append(execution_id)
                    total -= size
            if not victims:
                return 0
            conn.execute("BEGIN")
            for chunk in range(0, len(victims), 500):
                part = victims[chunk : chunk + 500]
                marks = ",".join("?" * len(part))
                conn.execute(f"DELETE FROM events WHERE execution_id IN ({marks})", part)
                conn.execute(f"DELETE FROM executions WHERE id IN ({marks})", part)
            conn.execute("COMMIT")
        return len(victims)

    # ------------------------------------------------------------------------------- reading

    def _rows(self, sql: str, args: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._conn.execute(sql, tuple(args)).fetchall()

    def execution(self, execution_id: str) -> dict[str, Any] | None:
        """One execution's summary, or ``None``."""
        rows = self._rows(f"SELECT {', '.join(_COLUMNS)} FROM executions WHERE id = ?", (execution_id,))
        return _summary_dict(rows[0]) if rows else None

    def find(self, prefix: str) -> str:
        """An execution id from the id itself or a unique prefix of it."""
        if self.execution(prefix) is not None:
            return prefix
        rows = self._rows("SELECT id FROM executions WHERE id >= ? AND id < ? LIMIT 2", (prefix, prefix + "\uffff"))
        if len(rows) == 1:
            return str(rows[0][0])
        if not rows:
            raise RecordingError(
                f"no recorded execution {prefix!r} in {self.path}; `keel devtools ls` lists the recorded ones"
            )
        raise RecordingError(f"{prefix!r} names more than one recorded execution; give more of the id")

    def page(
        self, filters: ExecutionFilter | None = None, *, limit: int = 50, before: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of executions, newest first, and the cursor of the next page (``None`` at the end).
        Keyset paging: every page costs the same, however deep."""
        where, args = (filters or ExecutionFilter()).where()
        if before:
            started, _, last_id = before.partition("|")
            where += " AND (started_at < ? OR (started_at = ? AND id < ?))"
            args += [float(started), float(started), last_id]
        rows = self._rows(
            f"SELECT {', '.join(_COLUMNS)} FROM executions WHERE {where} ORDER BY started_at DESC, id DESC LIMIT ?",
            [*args, limit + 1],
        )
        page = [_summary_dict(r) for r in rows[:limit]]
        cursor = f"{page[-1]['started_at']!r}|{page[-1]['id']}" if len(rows) > limit and page else None
        return page, cursor

    def count(self, filters: ExecutionFilter | None = None) -> int:
        where, args = (filters or ExecutionFilter()).where()
        return int(self._rows(f"SELECT COUNT(*) FROM executions WHERE {where}", args)[0][0])

    def same_trace(self, execution_id: str, limit: int = 200) -> list[dict[str, Any]]:
        """The other executions of this one's trace, oldest first: the agents a flow ran as its
        steps (they join the flow's trace), or the flow an agent ran in."""
        rows = self._rows(
            f"SELECT {', '.join(_COLUMNS)} FROM executions WHERE trace_id = "
            "(SELECT trace_id FROM executions WHERE id = ?) AND id != ? ORDER BY started_at, id LIMIT ?",
            (execution_id, execution_id, limit),
        )
        return [_summary_dict(r) for r in rows]

    def runnables(self) -> list[str]:
        return [r[0] for r in self._rows("SELECT DISTINCT runnable FROM executions WHERE runnable IS NOT NULL")]

    def events(self, execution_id: str, *, after: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        """An execution's recorded events in sequence order, each with its ``step`` path, ``cost``
        and the event itself (its JSON form) under ``event``."""
        rows = self._rows(
            "SELECT seq, step, kind, time, input_tokens, output_tokens, cost, data FROM events "
            "WHERE execution_id = ? AND (seq IS NULL OR seq > ?) ORDER BY seq, n LIMIT ?",
            (execution_id, after, -1 if limit is None else limit),
        )
        return [
            {
                "seq": seq, "step": step, "kind": kind, "time": t, "input_tokens": ti, "output_tokens": to,
                "cost": cost, "event": json.loads(data),
            }
            for seq, step, kind, t, ti, to, cost, data in rows
        ]  # fmt: skip

    def raw_events(self, execution_id: str) -> list[str]:
        """The events' JSON text, in sequence order (what an export writes)."""
        rows = self._rows("SELECT data FROM events WHERE execution_id = ? ORDER BY seq, n", (execution_id,))
        return [r[0] for r in rows]

    def dropped(self) -> int:
        rows = self._rows("SELECT value FROM meta WHERE key = 'dropped'")
        return int(rows[0][0]) if rows else 0

    def size(self) -> int:
        return int(self._rows("SELECT COALESCE(SUM(bytes), 0) FROM executions")[0][0])


def _count_drops(conn: sqlite3.Connection, drops: dict[str, int] | None) -> None:
    if drops:
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('dropped', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = value + excluded.value",
            (sum(drops.values()),),
        )


def _summary_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    out = dict(zip(_COLUMNS, row, strict=True))
    # events the bus dropped before they reached the recorder show as gaps in the sequence
    out["missing"] = max(out["max_seq"] - out["seq_events"], 0)
    for key in ("input", "output"):
        out[key] = json.loads(out[key]) if out[key] is not None else None
    return out
