"""The scheduler's own tables, behind one small interface with two backends.

The generic :class:`keel.Store` contract has no claims with leases and no ``SKIP LOCKED``, so the
queue owns its tables: SQLite (the embedded default, one writer at a time through ``BEGIN
IMMEDIATE``) and PostgreSQL (asyncpg, ``FOR UPDATE SKIP LOCKED``, ``NOTIFY`` on enqueue). The SQL is
written once with ``$n`` placeholders and ``{jobs}``-style table names; the SQLite backend rewrites
``$n`` to ``?n``. Times are float seconds since the epoch, JSON is stored as text.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import anyio.to_thread

from keel_scheduler.errors import SchedulerError

if TYPE_CHECKING:
    import asyncpg

__all__ = ["Conn", "Database", "PostgresDatabase", "SqliteDatabase", "open_database"]

DEFAULT_PATH = ".keel/scheduler.db"

_TABLES = ("jobs", "inbox", "signals", "schedules")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS {jobs} (
    id TEXT PRIMARY KEY,
    queue TEXT NOT NULL,
    task TEXT NOT NULL,
    input TEXT NOT NULL,
    tenant TEXT NOT NULL,
    status TEXT NOT NULL,
    priority INTEGER NOT NULL,
    run_at DOUBLE PRECISION NOT NULL,
    attempts INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    backoff DOUBLE PRECISION NOT NULL,
    backoff_max DOUBLE PRECISION NOT NULL,
    dedup_key TEXT UNIQUE,
    concurrency_key TEXT,
    correlation_id TEXT,
    schedule_id TEXT,
    scheduled_for DOUBLE PRECISION,
    lease_owner TEXT,
    lease_until DOUBLE PRECISION,
    created_at DOUBLE PRECISION NOT NULL,
    started_at DOUBLE PRECISION,
    finished_at DOUBLE PRECISION,
    errors TEXT NOT NULL,
    result TEXT
);
CREATE INDEX IF NOT EXISTS {prefix}jobs_due ON {jobs} (queue, priority DESC, run_at) WHERE status = 'queued';
CREATE INDEX IF NOT EXISTS {prefix}jobs_leases ON {jobs} (lease_until) WHERE status = 'running';
CREATE UNIQUE INDEX IF NOT EXISTS {prefix}jobs_one_per_key ON {jobs} (concurrency_key) WHERE status = 'running';
CREATE INDEX IF NOT EXISTS {prefix}jobs_schedule ON {jobs} (schedule_id, status);
CREATE INDEX IF NOT EXISTS {prefix}jobs_correlation ON {jobs} (correlation_id);
CREATE TABLE IF NOT EXISTS {inbox} (
    source TEXT NOT NULL,
    delivery_id TEXT NOT NULL,
    job_id TEXT,
    received_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (source, delivery_id)
);
CREATE TABLE IF NOT EXISTS {signals} (
    id TEXT PRIMARY KEY,
    correlation_id TEXT NOT NULL,
    name TEXT NOT NULL,
    payload TEXT NOT NULL,
    request_id TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    delivered_at DOUBLE PRECISION
);
CREATE INDEX IF NOT EXISTS {prefix}signals_pending ON {signals} (correlation_id) WHERE delivered_at IS NULL;
CREATE TABLE IF NOT EXISTS {schedules} (
    id TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    paused INTEGER NOT NULL,
    runs INTEGER NOT NULL,
    failures INTEGER NOT NULL,
    last_fire DOUBLE PRECISION,
    next_fire DOUBLE PRECISION,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);
"""

_PARAM = re.compile(r"\$(\d+)")
_IDENT = re.compile(r"[a-z_][a-z0-9_]{0,40}")


class Conn(Protocol):
    """One connection inside a transaction: ``$n`` placeholders, rows as dicts."""

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]: ...

    async def execute(self, sql: str, *args: Any) -> int:
        """Run a statement; the number of rows it changed."""
        ...


class Database(Protocol):
    dialect: str
    #: ``FOR UPDATE SKIP LOCKED`` where the database has it
    skip_locked: str
    where: str

    def sql(self, text: str) -> str: ...

    def list_param(self, values: list[str]) -> Any:
        """A list of text values as one parameter, for ``{in_list}``-style SQL (see ``in_list``)."""
        ...

    def in_list(self, n: int) -> str:
        """SQL for ``IN`` the list passed as parameter ``$n``."""
        ...

    def transaction(self) -> Any:
        """``async with db.transaction() as conn``: one transaction (SQLite: ``BEGIN IMMEDIATE``)."""
        ...

    async def advisory(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        """One statement whose effect may be lost if the *database server* crashes right after it
        (claims, lease renewals): PostgreSQL commits it without waiting for the WAL flush. Losing a
        claim only means the job runs again, which at-least-once execution allows; every enqueue
        and every outcome is still committed durably. SQLite: an ordinary transaction."""
        ...

    async def notify(self, conn: Conn, queue: str) -> None: ...

    async def wait_for_work(self, timeout: float) -> None:
        """Return when work may have arrived (a notification), or after ``timeout`` seconds."""
        ...

    async def drop(self) -> None:
        """Remove every table (tests)."""
        ...

    async def aclose(self) -> None: ...


def _names(prefix: str, schema: str | None) -> dict[str, str]:
    names = {t: (f"{schema}.{t}" if schema else f"{prefix}{t}") for t in _TABLES}
    names["prefix"] = prefix
    return names


class SqliteDatabase:
    """The tables in one SQLite file (WAL, ``synchronous=FULL``). Writers take turns: each
    transaction is ``BEGIN IMMEDIATE``, so two processes never interleave a claim."""

    dialect = "sqlite"
    skip_locked = ""

    def __init__(self, path: str | Path = DEFAULT_PATH, *, prefix: str = "keel_", busy_timeout: float = 30.0):
        if not _IDENT.fullmatch(prefix.rstrip("_") or "x") or not _IDENT.fullmatch(prefix or "x"):
            raise SchedulerError(f"scheduler: table prefix {prefix!r} must be a lower-case SQL identifier")
        self.path = Path(path)
        self.where = str(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._names = _names(prefix, None)
        self._lock = anyio.Lock()
        self._thread_lock = threading.Lock()
        self._wake = anyio.Event()
        try:
            self._conn = sqlite3.connect(
                str(self.path), timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
            self._conn.row_factory = sqlite3.Row
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
            self._conn.executescript(_SCHEMA.format(**self._names).replace("DOUBLE PRECISION", "REAL"))
        except sqlite3.Error as err:
            raise SchedulerError(f"scheduler: cannot open the SQLite database at {self.path}: {err}") from err

    def sql(self, text: str) -> str:
        return _PARAM.sub(r"?\1", text.format(**self._names))

    def list_param(self, values: list[str]) -> Any:
        return json.dumps(values)

    def in_list(self, n: int) -> str:
        return f"IN (SELECT value FROM json_each(${n}))"

    def _run(self, fn: Callable[[], Any]) -> Any:
        with self._thread_lock:
            return fn()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Conn]:
        async with self._lock:
            conn = _SqliteConn(self)
            await anyio.to_thread.run_sync(self._run, lambda: self._conn.execute("BEGIN IMMEDIATE"))
            try:
                yield conn
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(self._run, lambda: self._conn.execute("ROLLBACK"))
                raise
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._run, lambda: self._conn.execute("COMMIT"))

    async def advisory(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        async with self.transaction() as conn:
            return await conn.fetch(sql, *args)

    async def notify(self, conn: Conn, queue: str) -> None:
        # other processes poll; workers in this process wake at once
        wake, self._wake = self._wake, anyio.Event()
        wake.set()

    async def wait_for_work(self, timeout: float) -> None:
        with anyio.move_on_after(timeout):
            await self._wake.wait()

    async def drop(self) -> None:
        async with self.transaction() as conn:
            for table in _TABLES:
                await conn.execute(f"DROP TABLE IF EXISTS {{{table}}}")

    async def aclose(self) -> None:
        async with self._lock:
            await anyio.to_thread.run_sync(self._run, self._conn.close)


class _SqliteConn:
    def __init__(self, db: SqliteDatabase):
        self._db = db

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        text = self._db.sql(sql)
        conn = self._db._conn

        def run() -> list[dict[str, Any]]:
            return [dict(row) for row in conn.execute(text, args).fetchall()]

        try:
            result: list[dict[str, Any]] = await anyio.to_thread.run_sync(self._db._run, run)
        except sqlite3.IntegrityError as err:
            raise _Unique(str(err)) from err
        return result

    async def execute(self, sql: str, *args: Any) -> int:
        text = self._db.sql(sql)
        conn = self._db._conn

        def run() -> int:
            return conn.execute(text, args).rowcount

        try:
            count: int = await anyio.to_thread.run_sync(self._db._run, run)
        except sqlite3.IntegrityError as err:
            raise _Unique(str(err)) from err
        return count


class _Unique(SchedulerError):
    """A unique constraint refused a row (a concurrency key already running)."""

    code = "scheduler.unique_violation"


class PostgresDatabase:
    """The tables in a PostgreSQL schema, through an asyncpg pool; ``NOTIFY`` wakes idle workers."""

    dialect = "postgres"
    skip_locked = " FOR UPDATE SKIP LOCKED"

    def __init__(self, dsn: str, *, schema: str = "keel_scheduler", min_size: int = 1, max_size: int = 10):
        if not _IDENT.fullmatch(schema):
            raise SchedulerError(f"scheduler: schema {schema!r} must be a lower-case SQL identifier")
        self.dsn = dsn
        self.schema = schema
        self.where = f"{_redact(dsn)} schema {schema}"
        self._names = _names(f"{schema}_", schema)
        self._channel = f"{schema}_jobs"
        self._min, self._max = min_size, max_size
        self._pool: asyncpg.Pool | None = None
        self._fast: asyncpg.Pool | None = None
        self._listener: asyncpg.Connection | None = None
        self._wake: anyio.Event | None = None
        self._open_lock = anyio.Lock()

    async def _ensure(self) -> asyncpg.Pool:
        if self._pool is not None:
            return self._pool
        async with self._open_lock:
            if self._pool is None:
                try:
                    import asyncpg
                except ImportError as err:
                    raise SchedulerError(
                        "scheduler: a postgresql:// database needs asyncpg: pip install 'keel-scheduler[postgres]'"
                    ) from err
                try:
                    pool = await asyncpg.create_pool(self.dsn, min_size=self._min, max_size=self._max)
                    async with pool.acquire() as conn:
                        await conn.execute(f"SELECT pg_advisory_lock(hashtext('keel_scheduler_schema:{self.schema}'))")
                        try:
                            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {self.schema}")
                            await conn.execute(_SCHEMA.format(**self._names))
                        finally:
                            await conn.execute(
                                f"SELECT pg_advisory_unlock(hashtext('keel_scheduler_schema:{self.schema}'))"
                            )
                except (OSError, asyncpg.PostgresError) as err:
                    raise SchedulerError(
                        f"scheduler: cannot open PostgreSQL at {self.where}: {err}. Check the dsn option "
                        "([settings.scheduler] database = 'postgresql://...') and that the server is up"
                    ) from err
                self._fast = await asyncpg.create_pool(
                    self.dsn, min_size=1, max_size=self._max, server_settings={"synchronous_commit": "off"}
                )
                self._pool = pool
        assert self._pool is not None
        return self._pool

    def sql(self, text: str) -> str:
        return text.format(**self._names)

    def list_param(self, values: list[str]) -> Any:
        return values

    def in_list(self, n: int) -> str:
        return f"= ANY(${n}::text[])"

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Conn]:
        pool = await self._ensure()
        async with pool.acquire() as conn, conn.transaction():
            yield _PgConn(self, conn)

    async def advisory(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        import asyncpg

        await self._ensure()
        assert self._fast is not None
        try:
            rows = await self._fast.fetch(self.sql(sql), *args)
        except asyncpg.UniqueViolationError as err:
            raise _Unique(str(err)) from err
        return [dict(row) for row in rows]

    async def notify(self, conn: Conn, queue: str) -> None:
        await conn.execute("SELECT pg_notify($1, $2)", self._channel, queue)

    async def wait_for_work(self, timeout: float) -> None:
        await self._listen()
        assert self._wake is not None
        with anyio.move_on_after(timeout):
            await self._wake.wait()
        self._wake = anyio.Event()

    async def _listen(self) -> None:
        if self._listener is not None and not self._listener.is_closed():
            return
        pool = await self._ensure()
        if self._wake is None:
            self._wake = anyio.Event()
        try:
            import asyncpg

            conn = await asyncpg.connect(self.dsn)
            await conn.add_listener(self._channel, self._on_notify)
            self._listener = conn
        except OSError:  # the poll interval still finds work; the next wait tries again
            self._listener = None
        del pool

    def _on_notify(self, *_args: Any) -> None:
        if self._wake is not None:
            self._wake.set()

    async def drop(self) -> None:
        pool = await self._ensure()
        async with pool.acquire() as conn:
            await conn.execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            if self._listener is not None:
                listener, self._listener = self._listener, None
                if not listener.is_closed():
                    await listener.close()
            for pool in (self._pool, self._fast):
                if pool is not None:
                    await pool.close()
            self._pool = self._fast = None


class _PgConn:
    def __init__(self, db: PostgresDatabase, conn: asyncpg.Connection):
        self._db = db
        self._conn = conn

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        import asyncpg

        try:
            rows = await self._conn.fetch(self._db.sql(sql), *args)
        except asyncpg.UniqueViolationError as err:
            raise _Unique(str(err)) from err
        return [dict(row) for row in rows]

    async def execute(self, sql: str, *args: Any) -> int:
        import asyncpg

        try:
            status = await self._conn.execute(self._db.sql(sql), *args)
        except asyncpg.UniqueViolationError as err:
            raise _Unique(str(err)) from err
        tail = status.rsplit(" ", 1)[-1]
        return int(tail) if tail.isdigit() else 0


def _redact(dsn: str) -> str:
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", dsn)


def open_database(url: str | None = None, *, schema: str | None = None, prefix: str = "keel_") -> Database:
    """A backend for a database URL: ``postgresql://...`` (asyncpg), or a SQLite file path
    (``sqlite:///path`` or a plain path; default ``.keel/scheduler.db``)."""
    url = url or DEFAULT_PATH
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresDatabase(url, schema=schema or "keel_scheduler")
    if url.startswith("sqlite:///"):
        url = url[len("sqlite:///") :]
    elif "://" in url:
        raise SchedulerError(
            f"scheduler: database {url!r} is neither postgresql://... nor a SQLite file path; "
            "set [settings.scheduler] database = '.keel/scheduler.db' or 'postgresql://host/db'"
        )
    return SqliteDatabase(url, prefix=prefix)
