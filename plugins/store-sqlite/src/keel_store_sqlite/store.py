"""``SqliteStore``: the kernel's store contract on one SQLite file.

Durability: WAL journal with ``synchronous=FULL``, so a committed transaction has been fsynced to the
WAL before the commit returns. Every write (put, delete, put_blob, append, delete_stream, purge) is
queued to ONE writer thread, which drains whatever is waiting (up to ``max_batch`` operations), runs
each in its own savepoint inside one ``BEGIN IMMEDIATE`` transaction, commits once, and only then
wakes the callers: many small concurrent appends share one fsync (group commit), and no caller is
told "done" before its data is on disk. An operation that fails (a conflict) is rolled back to its
savepoint without disturbing the others in the batch.

Reads run on a small pool of their own connections in worker threads, so they never wait for the
writer. ``subscribe`` wakes at once on appends made through this store object, and polls every
``poll_interval`` seconds for appends made by other processes (or other store objects).
"""

from __future__ import annotations

import hashlib
import json
import queue
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread

from keel import BlobRef, ConflictError, LogRecord, NotFoundError, StoreError, Versioned, parse_options
from keel.store import Append, Delete, Put, WriteOp, check_version, conflict_in, encode_value, seq_conflict
from keel_store_sqlite.options import DEFAULT_PATH, SqliteStoreOptions

__all__ = ["DEFAULT_PATH", "SqliteStore", "SqliteStoreOptions"]

SCHEMA_VERSION = 1
#: longest a commit waits for the writers that shared the previous one (see _run_writer)
GATHER_SECONDS = 0.001

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    tenant TEXT NOT NULL, namespace TEXT NOT NULL, key TEXT NOT NULL,
    value TEXT NOT NULL, version INTEGER NOT NULL, updated_at REAL NOT NULL,
    PRIMARY KEY (tenant, namespace, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kv_updated ON kv (tenant, updated_at);
CREATE TABLE IF NOT EXISTS blobs (
    id INTEGER PRIMARY KEY, tenant TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL,
    media_type TEXT NOT NULL, data BLOB NOT NULL, created_at REAL NOT NULL,
    UNIQUE (tenant, sha256)
);
CREATE TABLE IF NOT EXISTS streams (
    tenant TEXT NOT NULL, stream TEXT NOT NULL, last_seq INTEGER NOT NULL, updated_at REAL NOT NULL,
    PRIMARY KEY (tenant, stream)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS streams_updated ON streams (tenant, updated_at);
CREATE TABLE IF NOT EXISTS log (
    tenant TEXT NOT NULL, stream TEXT NOT NULL, seq INTEGER NOT NULL, data TEXT NOT NULL, time REAL NOT NULL,
    PRIMARY KEY (tenant, stream, seq)
) WITHOUT ROWID;
"""


@dataclass
class _Op:
    fn: Callable[[sqlite3.Connection], Any]
    token: anyio.lowlevel.EventLoopToken
    done: anyio.Event
    appends: bool
    result: Any = None
    error: BaseException | None = None


def _loop_key(token: anyio.lowlevel.EventLoopToken) -> tuple[type, int]:
    return (token.backend_class, id(token.native_token))


class SqliteStore:
    """A durable :class:`keel.Store` in one SQLite file (see the module docstring for the design).

    Build it inside or outside an event loop; close it with ``await store.aclose()``.
    """

    def __init__(
        self,
        path: str | Path = DEFAULT_PATH,
        *,
        poll_interval: float = 0.25,
        max_batch: int = 512,
        busy_timeout: float = 30.0,
    ) -> None:
        self.path = Path(path)
        self.poll_interval = poll_interval
        self.max_batch = max_batch
        self.busy_timeout = busy_timeout
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._closed = False
        self._readers: list[sqlite3.Connection] = []
        self._waiters: dict[tuple[type, int], tuple[anyio.lowlevel.EventLoopToken, anyio.Event]] = {}
        self._queue: queue.SimpleQueue[_Op | None] = queue.SimpleQueue()
        writer = self._connect()
        try:
            mode = writer.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            writer.execute("PRAGMA synchronous=FULL")
            writer.executescript(_SCHEMA)
            writer.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.Error as err:
            writer.close()
            raise StoreError(f"cannot open the SQLite store at {self.path}: {err}") from err
        #: "wal" unless the file system cannot share memory between processes
        self.journal_mode: str = mode
        self._thread = threading.Thread(
            target=self._run_writer, args=(writer,), name=f"keel-sqlite-writer:{self.path}", daemon=True
        )
        self._thread.start()

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> SqliteStore:
        """Build from a stack's ``[store]`` options; an unknown or invalid option is a :class:`keel.StoreError`."""
        parsed = parse_options(SqliteStoreOptions, options, where="store 'sqlite'", error=StoreError)
        return cls(**parsed.model_dump())

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    # ----------------------------------------------------------------------------- plumbing

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(str(self.path), timeout=self.busy_timeout, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
        return conn

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"{self!r} is closed")

    def _run_writer(self, conn: sqlite3.Connection) -> None:
        last_size = 1
        try:
            while True:
                first = self._queue.get()
                if first is None:
                    return
                batch = [first]
                stop = False
                # Group commit: take what is waiting. When the last batch had company, wait up to
                # GATHER_SECONDS for as many callers as it had: their next writes are on the way, and
                # sharing the next fsync with them is far cheaper than paying another. A lone writer
                # (last batch of 1) never waits.
                deadline = time.monotonic() + GATHER_SECONDS
                while len(batch) < self.max_batch:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        remaining = deadline - time.monotonic()
                        if len(batch) >= last_size or remaining <= 0:
                            break
                        try:
                            nxt = self._queue.get(timeout=remaining)
                        except queue.Empty:
                            break
                    if nxt is None:
                        stop = True
                        break
                    batch.append(nxt)
                last_size = len(batch)
                self._commit(conn, batch)
                self._deliver(batch)
                if stop:
                    return
        finally:
            conn.close()

    def _commit(self, conn: sqlite3.Connection, batch: list[_Op]) -> None:
        try:
            conn.execute("BEGIN IMMEDIATE")
            for op in batch:
                conn.execute("SAVEPOINT op")
                try:
                    op.result = op.fn(conn)
                except Exception as err:
                    conn.execute("ROLLBACK TO op")
                    op.error = err if isinstance(err, (StoreError, ConflictError, NotFoundError)) else _wrap(err)
                conn.execute("RELEASE op")
            conn.execute("COMMIT")
        except sqlite3.Error as err:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            failure = StoreError(f"SQLite store {self.path}: the write was not committed: {err}")
            for op in batch:
                op.result, op.error = None, op.error or failure

    def _deliver(self, batch: list[_Op]) -> None:
        """Wake the callers (and same-process subscribers) once the batch is committed: one hop into
        each event loop that is waiting, not one per operation."""
        groups: dict[tuple[type, int], tuple[anyio.lowlevel.EventLoopToken, list[_Op]]] = {}
        for op in batch:
            groups.setdefault(_loop_key(op.token), (op.token, []))[1].append(op)
        appended = any(op.appends and op.error is None for op in batch)
        if appended:
            for key, (token, _event) in list(self._waiters.items()):
                groups.setdefault(key, (token, []))
        for key, (token, ops) in groups.items():
            # run_sync_soon, not from_thread.run_sync: the writer does not wait for each event loop
            # to run the wake-up (a thread round trip, ~50 us on a 2-core VM) before the next batch
            try:
                token.backend_class.run_sync_soon(self._finish, (key, ops, appended), token.native_token)
            except Exception:  # that event loop has ended: nobody is waiting there any more
                pass

    def _finish(self, key: tuple[type, int], ops: list[_Op], appended: bool) -> None:
        for op in ops:
            op.done.set()
        if appended:
            waiter = self._waiters.pop(key, None)
            if waiter is not None:
                waiter[1].set()

    async def _write(self, fn: Callable[[sqlite3.Connection], Any], *, appends: bool = False) -> Any:
        self._check_open()
        op = _Op(fn, anyio.lowlevel.current_token(), anyio.Event(), appends)
        self._queue.put(op)
        await op.done.wait()
        if op.error is not None:
            raise op.error
        return op.result

    def _take_reader(self) -> sqlite3.Connection:
        try:
            return self._readers.pop()
        except IndexError:
            conn = self._connect()
            conn.execute("PRAGMA query_only=1")
            return conn

    def _give_reader(self, conn: sqlite3.Connection) -> None:
        if self._closed:
            conn.close()
        else:
            self._readers.append(conn)

    def _with_reader(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        conn = self._take_reader()
        try:
            return fn(conn)
        except sqlite3.Error as err:
            raise StoreError(f"SQLite store {self.path}: read failed: {err}") from err
        finally:
            self._give_reader(conn)

    async def _read(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        self._check_open()
        return await anyio.to_thread.run_sync(self._with_reader, fn)

    # --------------------------------------------------------------------------- key-value

    async def get(self, tenant: str, namespace: str, key: str) -> Versioned | None:
        row = await self._read(
            lambda c: c.execute(
                "SELECT value, version, updated_at FROM kv WHERE tenant=? AND namespace=? AND key=?",
                (tenant, namespace, key),
            ).fetchone()
        )
        if row is None:
            return None
        return Versioned(key=key, value=json.loads(row[0]), version=row[1], updated_at=row[2])

    async def put(
        self, tenant: str, namespace: str, key: str, value: Any, *, expected_version: int | None = None
    ) -> int:
        result: int = await self._write(_put(tenant, namespace, key, encode_value(value), expected_version))
        return result

    async def delete(self, tenant: str, namespace: str, key: str, *, expected_version: int | None = None) -> bool:
        result: bool = await self._write(_delete(tenant, namespace, key, expected_version))
        return result

    async def list_keys(self, tenant: str, namespace: str, prefix: str = "") -> list[str]:
        sql = "SELECT key FROM kv WHERE tenant=? AND namespace=? AND substr(key, 1, ?)=?"
        params: tuple[Any, ...] = (tenant, namespace, len(prefix), prefix)
        if prefix and ord(prefix[-1]) < 0xD7FF:
            # a range on the primary key too: only the prefix's keys are visited, not the namespace's
            sql += " AND key >= ? AND key < ?"
            params += (prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1))
        rows = await self._read(lambda c: c.execute(sql, params).fetchall())
        return sorted(r[0] for r in rows)  # Python's order, whatever the database collation

    # -------------------------------------------------------------------------------- blobs

    async def put_blob(self, tenant: str, data: bytes, media_type: str = "application/octet-stream") -> BlobRef:
        data = bytes(data)
        if len(data) > 1 << 20:
            digest = await anyio.to_thread.run_sync(lambda: hashlib.sha256(data).hexdigest())
        else:
            digest = hashlib.sha256(data).hexdigest()

        def fn(c: sqlite3.Connection) -> str:
            c.execute(
                "INSERT OR IGNORE INTO blobs (tenant, sha256, size, media_type, data, created_at) VALUES (?,?,?,?,?,?)",
                (tenant, digest, len(data), media_type, data, time.time()),
            )
            row = c.execute("SELECT media_type FROM blobs WHERE tenant=? AND sha256=?", (tenant, digest)).fetchone()
            return str(row[0])

        stored_type: str = await self._write(fn)
        return BlobRef(sha256=digest, size=len(data), media_type=stored_type)

    async def get_blob(self, tenant: str, sha256: str) -> bytes:
        row = await self._read(
            lambda c: c.execute("SELECT data FROM blobs WHERE tenant=? AND sha256=?", (tenant, sha256)).fetchone()
        )
        if row is None:
            raise NotFoundError(f"no blob {sha256} for tenant {tenant!r}")
        return bytes(row[0])

    async def has_blob(self, tenant: str, sha256: str) -> bool:
        row = await self._read(
            lambda c: c.execute("SELECT 1 FROM blobs WHERE tenant=? AND sha256=?", (tenant, sha256)).fetchone()
        )
        return row is not None

    async def blob_ref(self, tenant: str, sha256: str) -> BlobRef | None:
        row = await self._read(
            lambda c: c.execute(
                "SELECT size, media_type FROM blobs WHERE tenant=? AND sha256=?", (tenant, sha256)
            ).fetchone()
        )
        return BlobRef(sha256=sha256, size=row[0], media_type=row[1]) if row else None

    async def stream_blob(self, tenant: str, sha256: str, chunk_size: int = 65536) -> AsyncIterator[bytes]:
        """Chunks read with SQLite's incremental blob I/O: the whole blob is never in memory."""
        self._check_open()
        conn = await anyio.to_thread.run_sync(self._take_reader)
        blob: sqlite3.Blob | None = None
        try:
            row = await anyio.to_thread.run_sync(
                lambda: conn.execute("SELECT id FROM blobs WHERE tenant=? AND sha256=?", (tenant, sha256)).fetchone()
            )
            if row is None:
                raise NotFoundError(f"no blob {sha256} for tenant {tenant!r}")
            blob = await anyio.to_thread.run_sync(lambda: conn.blobopen("blobs", "data", row[0], readonly=True))
            while True:
                chunk = await anyio.to_thread.run_sync(blob.read, chunk_size)
                if not chunk:
                    return
                yield chunk
        finally:
            if blob is not None:
                blob.close()
            self._give_reader(conn)

    # --------------------------------------------------------------------------------- logs

    async def append(self, tenant: str, stream: str, records: Sequence[Any], *, expected_seq: int | None = None) -> int:
        encoded = [encode_value(r) for r in records]  # validate all before appending any
        result: int = await self._write(_append(tenant, stream, encoded, expected_seq), appends=True)
        return result

    async def read(self, tenant: str, stream: str, *, after: int = 0, limit: int | None = None) -> list[LogRecord]:
        rows = await self._read(
            lambda c: c.execute(
                "SELECT seq, data, time FROM log WHERE tenant=? AND stream=? AND seq>? ORDER BY seq LIMIT ?",
                (tenant, stream, after, -1 if limit is None else limit),
            ).fetchall()
        )
        return [LogRecord(stream=stream, seq=seq, data=json.loads(data), time=t) for seq, data, t in rows]

    async def subscribe(self, tenant: str, stream: str, *, after: int = 0) -> AsyncIterator[LogRecord]:
        token = anyio.lowlevel.current_token()
        key = _loop_key(token)
        while True:
            waiter = self._waiters.get(key)
            if waiter is None:
                waiter = self._waiters[key] = (token, anyio.Event())
            records = await self.read(tenant, stream, after=after)
            for record in records:
                yield record
                after = record.seq
            if not records:
                # woken by this store's own commits at once; other writers are seen on the next poll
                with anyio.move_on_after(self.poll_interval):
                    await waiter[1].wait()

    async def last_seq(self, tenant: str, stream: str) -> int:
        row = await self._read(
            lambda c: c.execute("SELECT last_seq FROM streams WHERE tenant=? AND stream=?", (tenant, stream)).fetchone()
        )
        return int(row[0]) if row else 0

    async def list_streams(self, tenant: str, prefix: str = "") -> list[str]:
        rows = await self._read(
            lambda c: c.execute(
                "SELECT stream FROM streams WHERE tenant=? AND substr(stream, 1, ?)=?",
                (tenant, len(prefix), prefix),
            ).fetchall()
        )
        return sorted(r[0] for r in rows)

    async def delete_stream(self, tenant: str, stream: str) -> None:
        def fn(c: sqlite3.Connection) -> None:
            c.execute("DELETE FROM log WHERE tenant=? AND stream=?", (tenant, stream))
            c.execute("DELETE FROM streams WHERE tenant=? AND stream=?", (tenant, stream))

        await self._write(fn)

    # ---------------------------------------------------------------------------- retention

    async def purge(self, tenant: str, *, older_than: float) -> int:
        def fn(c: sqlite3.Connection) -> int:
            keys = c.execute("DELETE FROM kv WHERE tenant=? AND updated_at<?", (tenant, older_than)).rowcount
            streams = [
                r[0]
                for r in c.execute(
                    "SELECT stream FROM streams WHERE tenant=? AND updated_at<?", (tenant, older_than)
                ).fetchall()
            ]
            for stream in streams:
                c.execute("DELETE FROM log WHERE tenant=? AND stream=?", (tenant, stream))
                c.execute("DELETE FROM streams WHERE tenant=? AND stream=?", (tenant, stream))
            return int(keys) + len(streams)

        result: int = await self._write(fn)
        return result

    # -------------------------------------------------------------------------- transactions

    async def transact(self, tenant: str, ops: Sequence[WriteOp]) -> list[Any]:
        """All ops in one savepoint of one transaction: a failed condition rolls back every one."""
        steps: list[Callable[[sqlite3.Connection], Any]] = []
        for op in ops:  # encode everything before writing anything
            if isinstance(op, Put):
                steps.append(_put(tenant, op.namespace, op.key, encode_value(op.value), op.expected_version))
            elif isinstance(op, Delete):
                steps.append(_delete(tenant, op.namespace, op.key, op.expected_version))
            elif isinstance(op, Append):
                steps.append(_append(tenant, op.stream, [encode_value(r) for r in op.records], op.expected_seq))
            else:
                raise StoreError(f"transact() takes Put, Delete and Append operations, not {op!r}")

        def fn(c: sqlite3.Connection) -> list[Any]:
            results = []
            for i, (op, step) in enumerate(zip(ops, steps, strict=True)):
                try:
                    results.append(step(c))
                except ConflictError as err:
                    raise conflict_in(i, op, err) from err
            return results

        result: list[Any] = await self._write(fn, appends=any(isinstance(op, Append) for op in ops))
        return result

    async def aclose(self) -> None:
        """Commit what is queued, stop the writer and close every connection. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._thread.join)
        while self._readers:
            self._readers.pop().close()
        waiter = self._waiters.pop(_loop_key(anyio.lowlevel.current_token()), None)
        if waiter is not None:  # subscribers in this event loop: their next read reports the store closed
            waiter[1].set()


# ------------------------------------------------------- write steps (run on the writer's connection)


def _put(
    tenant: str, namespace: str, key: str, encoded: str, expected_version: int | None
) -> Callable[[sqlite3.Connection], int]:
    def fn(c: sqlite3.Connection) -> int:
        row = c.execute(
            "SELECT version FROM kv WHERE tenant=? AND namespace=? AND key=?", (tenant, namespace, key)
        ).fetchone()
        current = row[0] if row else 0
        check_version(namespace, key, current, expected_version)
        c.execute(
            "INSERT INTO kv (tenant, namespace, key, value, version, updated_at) VALUES (?,?,?,?,?,?) "
            "ON CONFLICT (tenant, namespace, key) DO UPDATE SET "
            "value=excluded.value, version=excluded.version, updated_at=excluded.updated_at",
            (tenant, namespace, key, encoded, current + 1, time.time()),
        )
        return int(current + 1)

    return fn


def _delete(
    tenant: str, namespace: str, key: str, expected_version: int | None
) -> Callable[[sqlite3.Connection], bool]:
    def fn(c: sqlite3.Connection) -> bool:
        row = c.execute(
            "SELECT version FROM kv WHERE tenant=? AND namespace=? AND key=?", (tenant, namespace, key)
        ).fetchone()
        check_version(namespace, key, row[0] if row else 0, expected_version)
        c.execute("DELETE FROM kv WHERE tenant=? AND namespace=? AND key=?", (tenant, namespace, key))
        return row is not None

    return fn


def _append(
    tenant: str, stream: str, encoded: list[str], expected_seq: int | None
) -> Callable[[sqlite3.Connection], int]:
    def fn(c: sqlite3.Connection) -> int:
        row = c.execute("SELECT last_seq FROM streams WHERE tenant=? AND stream=?", (tenant, stream)).fetchone()
        last = row[0] if row else 0
        if expected_seq is not None and expected_seq != last:
            raise seq_conflict(stream, last, expected_seq)
        if not encoded:
            return int(last)
        now = time.time()
        c.executemany(
            "INSERT INTO log (tenant, stream, seq, data, time) VALUES (?,?,?,?,?)",
            [(tenant, stream, last + i, data, now) for i, data in enumerate(encoded, 1)],
        )
        c.execute(
            "INSERT INTO streams (tenant, stream, last_seq, updated_at) VALUES (?,?,?,?) "
            "ON CONFLICT (tenant, stream) DO UPDATE SET last_seq=excluded.last_seq, updated_at=excluded.updated_at",
            (tenant, stream, last + len(encoded), now),
        )
        return int(last + len(encoded))

    return fn


def _wrap(err: Exception) -> StoreError:
    return StoreError(f"SQLite store write failed: {type(err).__name__}: {err}")
