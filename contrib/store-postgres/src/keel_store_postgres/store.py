"""``PostgresStore``: the kernel's store contract on PostgreSQL through asyncpg.

Every write is one statement or one transaction; an acknowledged write has committed (with the
server's ``synchronous_commit = on``, its default, the commit record is flushed to the WAL first, and
PostgreSQL's own group commit shares that flush between concurrent transactions). Compare-and-set is
a conditional ``UPDATE``/``INSERT ... ON CONFLICT`` on the row; an append locks its stream's row, so
concurrent appenders to one stream get consecutive sequence numbers. Appends ``NOTIFY`` the channel
``keel_log``; ``subscribe`` listens on one dedicated connection and also polls every
``poll_interval`` seconds, in case that connection is lost.

asyncpg runs on asyncio: use this store under anyio's asyncio backend (the default).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

import anyio

from keel import BlobRef, ConflictError, LogRecord, NotFoundError, StoreError, Versioned, parse_options
from keel.store import Append, Delete, Put, WriteOp, conflict_in, encode_value, seq_conflict, version_conflict
from keel_store_postgres.options import DEFAULT_DSN, PostgresStoreOptions

if TYPE_CHECKING:
    import asyncpg

__all__ = ["DEFAULT_DSN", "PostgresStore", "PostgresStoreOptions"]

CHANNEL = "keel_log"

_SCHEMA = """
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.kv (
    tenant text NOT NULL, namespace text NOT NULL, key text NOT NULL,
    value text NOT NULL, version bigint NOT NULL, updated_at double precision NOT NULL,
    PRIMARY KEY (tenant, namespace, key)
);
CREATE INDEX IF NOT EXISTS kv_updated ON {s}.kv (tenant, updated_at);
CREATE TABLE IF NOT EXISTS {s}.blobs (
    tenant text NOT NULL, sha256 text NOT NULL, size bigint NOT NULL, media_type text NOT NULL,
    data bytea NOT NULL, created_at double precision NOT NULL,
    PRIMARY KEY (tenant, sha256)
);
ALTER TABLE {s}.blobs ALTER COLUMN data SET STORAGE EXTERNAL;
CREATE TABLE IF NOT EXISTS {s}.streams (
    tenant text NOT NULL, stream text NOT NULL, last_seq bigint NOT NULL, updated_at double precision NOT NULL,
    PRIMARY KEY (tenant, stream)
);
CREATE INDEX IF NOT EXISTS streams_updated ON {s}.streams (tenant, updated_at);
CREATE TABLE IF NOT EXISTS {s}.log (
    tenant text NOT NULL, stream text NOT NULL, seq bigint NOT NULL, data text NOT NULL,
    time double precision NOT NULL,
    PRIMARY KEY (tenant, stream, seq)
);
"""


def _payload(tenant: str, stream: str) -> str:
    payload = json.dumps([tenant, stream])
    return payload if len(payload.encode()) < 7900 else "*"  # NOTIFY payloads stop at 8000 bytes


class PostgresStore:
    """A durable :class:`keel.Store` on PostgreSQL. The pool opens on first use."""

    def __init__(
        self,
        dsn: str | None = None,
        *,
        schema: str = "keel",
        min_size: int = 1,
        max_size: int = 10,
        poll_interval: float = 1.0,
    ) -> None:
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", schema):
            raise StoreError(f"store 'postgres': schema {schema!r} must be a lower-case SQL identifier")
        self.dsn = dsn or os.environ.get("KEEL_POSTGRES_DSN") or DEFAULT_DSN
        self.schema = schema
        self.min_size = min_size
        self.max_size = max_size
        self.poll_interval = poll_interval
        self._pool: asyncpg.Pool | None = None
        self._opening: anyio.Lock | None = None
        self._listener: asyncpg.Connection | None = None
        self._waiters: dict[tuple[str, str], anyio.Event] = {}
        self._closed = False
        s = schema
        # the sequence numbers an append takes: any, a new stream (expected 0), or from expected $5
        seq = {
            "any": f"INSERT INTO {s}.streams AS st (tenant, stream, last_seq, updated_at) VALUES ($1,$2,$3,$4) "
            "ON CONFLICT (tenant, stream) DO UPDATE SET last_seq=st.last_seq+EXCLUDED.last_seq, "
            "updated_at=EXCLUDED.updated_at RETURNING last_seq",
            "new": f"INSERT INTO {s}.streams (tenant, stream, last_seq, updated_at) VALUES ($1,$2,$3,$4) "
            "ON CONFLICT DO NOTHING RETURNING last_seq",
            "at": f"UPDATE {s}.streams SET last_seq=last_seq+$3, updated_at=$4 "
            "WHERE tenant=$1 AND stream=$2 AND last_seq=$5 RETURNING last_seq",
        }
        # ... and the whole append as one statement: records $n, then the NOTIFY channel and payload
        append = {
            kind: f"WITH taken AS ({sql}), ins AS (INSERT INTO {s}.log (tenant, stream, seq, data, time) "
            f"SELECT $1, $2, taken.last_seq - $3 + r.ord, r.data, $4 FROM taken, unnest(${n}::text[]) "
            f"WITH ORDINALITY AS r(data, ord)) SELECT last_seq, pg_notify(${n + 1}, ${n + 2}) FROM taken"
            for (kind, sql), n in zip(seq.items(), (5, 5, 6), strict=True)
        }
        self._sql = {
            "get": f"SELECT value, version, updated_at FROM {s}.kv WHERE tenant=$1 AND namespace=$2 AND key=$3",
            "version": f"SELECT version FROM {s}.kv WHERE tenant=$1 AND namespace=$2 AND key=$3",
            "upsert": f"INSERT INTO {s}.kv AS kv (tenant, namespace, key, value, version, updated_at) "
            "VALUES ($1,$2,$3,$4,1,$5) ON CONFLICT (tenant, namespace, key) DO UPDATE SET "
            "value=EXCLUDED.value, version=kv.version+1, updated_at=EXCLUDED.updated_at RETURNING version",
            "insert": f"INSERT INTO {s}.kv (tenant, namespace, key, value, version, updated_at) "
            "VALUES ($1,$2,$3,$4,1,$5) ON CONFLICT DO NOTHING RETURNING version",
            "update": f"UPDATE {s}.kv SET value=$4, version=version+1, updated_at=$5 "
            "WHERE tenant=$1 AND namespace=$2 AND key=$3 AND version=$6 RETURNING version",
            "delete": f"DELETE FROM {s}.kv WHERE tenant=$1 AND namespace=$2 AND key=$3 RETURNING version",
            "delete_v": f"DELETE FROM {s}.kv WHERE tenant=$1 AND namespace=$2 AND key=$3 AND version=$4 "
            "RETURNING version",
            "keys": f"SELECT key FROM {s}.kv WHERE tenant=$1 AND namespace=$2 AND starts_with(key, $3)",
            "blob_put": f"INSERT INTO {s}.blobs (tenant, sha256, size, media_type, data, created_at) "
            "VALUES ($1,$2,$3,$4,$5,$6) ON CONFLICT DO NOTHING",
            "blob_type": f"SELECT media_type FROM {s}.blobs WHERE tenant=$1 AND sha256=$2",
            "blob_get": f"SELECT data FROM {s}.blobs WHERE tenant=$1 AND sha256=$2",
            "blob_size": f"SELECT size FROM {s}.blobs WHERE tenant=$1 AND sha256=$2",
            "blob_ref": f"SELECT size, media_type FROM {s}.blobs WHERE tenant=$1 AND sha256=$2",
            "blob_part": f"SELECT substring(data FROM $3 FOR $4) FROM {s}.blobs WHERE tenant=$1 AND sha256=$2",
            "last_seq": f"SELECT last_seq FROM {s}.streams WHERE tenant=$1 AND stream=$2",
            **{f"append_{kind}": sql for kind, sql in append.items()},
            "log_read": f"SELECT seq, data, time FROM {s}.log WHERE tenant=$1 AND stream=$2 AND seq>$3 "
            "ORDER BY seq LIMIT $4",
            "streams": f"SELECT stream FROM {s}.streams WHERE tenant=$1 AND starts_with(stream, $2)",
            "log_drop": f"DELETE FROM {s}.log WHERE tenant=$1 AND stream=ANY($2::text[])",
            "stream_drop": f"DELETE FROM {s}.streams WHERE tenant=$1 AND stream=$2",
            "purge_kv": f"DELETE FROM {s}.kv WHERE tenant=$1 AND updated_at<$2",
            "purge_streams": f"DELETE FROM {s}.streams WHERE tenant=$1 AND updated_at<$2 RETURNING stream",
        }

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> PostgresStore:
        """Build from a stack's ``[store]`` options; an unknown or invalid option is a :class:`keel.StoreError`."""
        parsed = parse_options(PostgresStoreOptions, options, where="store 'postgres'", error=StoreError)
        return cls(
            parsed.dsn,
            schema=parsed.schema_name,
            min_size=parsed.min_size,
            max_size=parsed.max_size,
            poll_interval=parsed.poll_interval,
        )

    def __repr__(self) -> str:
        return f"PostgresStore(schema={self.schema!r})"

    # ----------------------------------------------------------------------------- plumbing

    async def _get_pool(self) -> asyncpg.Pool:
        if self._closed:
            raise StoreError(f"{self!r} is closed")
        if self._pool is not None:
            return self._pool
        if self._opening is None:
            self._opening = anyio.Lock()
        async with self._opening:
            if self._pool is None:
                import asyncpg

                try:
                    pool = await asyncpg.create_pool(
                        self.dsn, min_size=self.min_size, max_size=self.max_size, reset=_keep_session
                    )
                except (OSError, asyncpg.PostgresError) as err:
                    raise StoreError(
                        f"store 'postgres': cannot connect to PostgreSQL ({type(err).__name__}: {err}). "
                        "Start the server, or set dsn in the [store] table (or KEEL_POSTGRES_DSN)"
                    ) from err
                async with pool.acquire() as conn, conn.transaction():
                    # one creator at a time across processes: CREATE ... IF NOT EXISTS races otherwise
                    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"keel-schema:{self.schema}")
                    await conn.execute(_SCHEMA.format(s=self.schema))
                self._pool = pool
        assert self._pool is not None
        return self._pool

    # --------------------------------------------------------------------------- key-value

    async def get(self, tenant: str, namespace: str, key: str) -> Versioned | None:
        row = await (await self._get_pool()).fetchrow(self._sql["get"], tenant, namespace, key)
        if row is None:
            return None
        return Versioned(key=key, value=json.loads(row[0]), version=row[1], updated_at=row[2])

    async def put(
        self, tenant: str, namespace: str, key: str, value: Any, *, expected_version: int | None = None
    ) -> int:
        return await self._put(await self._get_pool(), tenant, namespace, key, encode_value(value), expected_version)

    async def _put(
        self, q: Any, tenant: str, namespace: str, key: str, encoded: str, expected_version: int | None
    ) -> int:
        """``q``: the pool, or a connection inside a transaction (both have ``fetchval``)."""
        now = time.time()
        if expected_version is None:
            version = await q.fetchval(self._sql["upsert"], tenant, namespace, key, encoded, now)
        elif expected_version == 0:
            version = await q.fetchval(self._sql["insert"], tenant, namespace, key, encoded, now)
        else:
            version = await q.fetchval(self._sql["update"], tenant, namespace, key, encoded, now, expected_version)
        if version is None:
            current = await q.fetchval(self._sql["version"], tenant, namespace, key)
            raise version_conflict(namespace, key, current or 0, expected_version or 0)
        return int(version)

    async def delete(self, tenant: str, namespace: str, key: str, *, expected_version: int | None = None) -> bool:
        return await self._delete(await self._get_pool(), tenant, namespace, key, expected_version)

    async def _delete(self, q: Any, tenant: str, namespace: str, key: str, expected_version: int | None) -> bool:
        if expected_version is None:
            return await q.fetchval(self._sql["delete"], tenant, namespace, key) is not None
        if expected_version == 0:
            current = await q.fetchval(self._sql["version"], tenant, namespace, key)
            if current:
                raise version_conflict(namespace, key, current, 0)
            return False
        if await q.fetchval(self._sql["delete_v"], tenant, namespace, key, expected_version) is None:
            current = await q.fetchval(self._sql["version"], tenant, namespace, key)
            raise version_conflict(namespace, key, current or 0, expected_version)
        return True

    async def list_keys(self, tenant: str, namespace: str, prefix: str = "") -> list[str]:
        rows = await (await self._get_pool()).fetch(self._sql["keys"], tenant, namespace, prefix)
        return sorted(r[0] for r in rows)

    # -------------------------------------------------------------------------------- blobs

    async def put_blob(self, tenant: str, data: bytes, media_type: str = "application/octet-stream") -> BlobRef:
        data = bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        pool = await self._get_pool()
        await pool.execute(self._sql["blob_put"], tenant, digest, len(data), media_type, data, time.time())
        stored = await pool.fetchval(self._sql["blob_type"], tenant, digest)
        return BlobRef(sha256=digest, size=len(data), media_type=stored)

    async def get_blob(self, tenant: str, sha256: str) -> bytes:
        data = await (await self._get_pool()).fetchval(self._sql["blob_get"], tenant, sha256)
        if data is None:
            raise NotFoundError(f"no blob {sha256} for tenant {tenant!r}")
        return bytes(data)

    async def has_blob(self, tenant: str, sha256: str) -> bool:
        return await (await self._get_pool()).fetchval(self._sql["blob_size"], tenant, sha256) is not None

    async def blob_ref(self, tenant: str, sha256: str) -> BlobRef | None:
        row = await (await self._get_pool()).fetchrow(self._sql["blob_ref"], tenant, sha256)
        return BlobRef(sha256=sha256, size=row[0], media_type=row[1]) if row else None

    async def stream_blob(self, tenant: str, sha256: str, chunk_size: int = 65536) -> AsyncIterator[bytes]:
        """Chunks read with ``substring``: blobs are stored uncompressed, so each read touches its slice only."""
        pool = await self._get_pool()
        size = await pool.fetchval(self._sql["blob_size"], tenant, sha256)
        if size is None:
            raise NotFoundError(f"no blob {sha256} for tenant {tenant!r}")
        for start in range(0, size, chunk_size):
            yield bytes(await pool.fetchval(self._sql["blob_part"], tenant, sha256, start + 1, chunk_size))

    # --------------------------------------------------------------------------------- logs

    async def append(self, tenant: str, stream: str, records: Sequence[Any], *, expected_seq: int | None = None) -> int:
        encoded = [encode_value(r) for r in records]  # validate all before appending any
        return await self._append(await self._get_pool(), tenant, stream, encoded, expected_seq)

    async def _append(self, q: Any, tenant: str, stream: str, encoded: list[str], expected_seq: int | None) -> int:
        n = len(encoded)
        if n == 0:
            current = int(await q.fetchval(self._sql["last_seq"], tenant, stream) or 0)
            if expected_seq is not None and expected_seq != current:
                raise seq_conflict(stream, current, expected_seq)
            return current
        now = time.time()
        # One statement, so one round trip and one commit: take the sequence numbers, insert the
        # records, notify subscribers (all or nothing, as a statement is its own transaction).
        tail = (encoded, CHANNEL, _payload(tenant, stream))
        if expected_seq is None:
            last = await q.fetchval(self._sql["append_any"], tenant, stream, n, now, *tail)
        elif expected_seq == 0:
            last = await q.fetchval(self._sql["append_new"], tenant, stream, n, now, *tail)
        else:
            last = await q.fetchval(self._sql["append_at"], tenant, stream, n, now, expected_seq, *tail)
        if last is None:
            current = await q.fetchval(self._sql["last_seq"], tenant, stream)
            raise seq_conflict(stream, current or 0, expected_seq or 0)
        return int(last)

    async def transact(self, tenant: str, ops: Sequence[WriteOp]) -> list[Any]:
        """One PostgreSQL transaction; a failed condition rolls back every op (subscribers are
        notified at commit only)."""
        encoded: list[Any] = []
        for op in ops:  # encode everything before writing anything
            if isinstance(op, Put):
                encoded.append(encode_value(op.value))
            elif isinstance(op, Append):
                encoded.append([encode_value(r) for r in op.records])
            elif isinstance(op, Delete):
                encoded.append(None)
            else:
                raise StoreError(f"transact() takes Put, Delete and Append operations, not {op!r}")
        pool = await self._get_pool()
        results: list[Any] = []
        async with pool.acquire() as conn, conn.transaction():
            for i, (op, data) in enumerate(zip(ops, encoded, strict=True)):
                try:
                    if isinstance(op, Put):
                        results.append(await self._put(conn, tenant, op.namespace, op.key, data, op.expected_version))
                    elif isinstance(op, Delete):
                        results.append(await self._delete(conn, tenant, op.namespace, op.key, op.expected_version))
                    else:
                        results.append(await self._append(conn, tenant, op.stream, data, op.expected_seq))
                except ConflictError as err:
                    raise conflict_in(i, op, err) from err
        return results

    async def read(self, tenant: str, stream: str, *, after: int = 0, limit: int | None = None) -> list[LogRecord]:
        rows = await (await self._get_pool()).fetch(self._sql["log_read"], tenant, stream, after, limit)
        return [LogRecord(stream=stream, seq=r[0], data=json.loads(r[1]), time=r[2]) for r in rows]

    async def _listen(self) -> None:
        if self._listener is not None or self._closed:
            return
        import asyncpg

        try:
            conn = await asyncpg.connect(self.dsn)
            await conn.add_listener(CHANNEL, self._notified)
        except (OSError, asyncpg.PostgresError):
            return  # subscribe still works by polling
        if self._listener is None:
            self._listener = conn
        else:
            await conn.close()

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            tenant, stream = json.loads(payload)
            keys = [(str(tenant), str(stream))]
        except (ValueError, TypeError):  # "*" (a name too long for a payload), or someone else's message
            keys = list(self._waiters)
        for key in keys:
            event = self._waiters.pop(key, None)
            if event is not None:
                event.set()

    async def subscribe(self, tenant: str, stream: str, *, after: int = 0) -> AsyncIterator[LogRecord]:
        await self._listen()
        key = (tenant, stream)
        while True:
            event = self._waiters.get(key)
            if event is None:
                event = self._waiters[key] = anyio.Event()
            records = await self.read(tenant, stream, after=after)
            for record in records:
                yield record
                after = record.seq
            if not records:
                with anyio.move_on_after(self.poll_interval):
                    await event.wait()

    async def last_seq(self, tenant: str, stream: str) -> int:
        value = await (await self._get_pool()).fetchval(self._sql["last_seq"], tenant, stream)
        return int(value or 0)

    async def list_streams(self, tenant: str, prefix: str = "") -> list[str]:
        rows = await (await self._get_pool()).fetch(self._sql["streams"], tenant, prefix)
        return sorted(r[0] for r in rows)

    async def delete_stream(self, tenant: str, stream: str) -> None:
        pool = await self._get_pool()
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(self._sql["log_drop"], tenant, [stream])
            await conn.execute(self._sql["stream_drop"], tenant, stream)

    # ---------------------------------------------------------------------------- retention

    async def purge(self, tenant: str, *, older_than: float) -> int:
        pool = await self._get_pool()
        async with pool.acquire() as conn, conn.transaction():
            status = await conn.execute(self._sql["purge_kv"], tenant, older_than)
            streams = [r[0] for r in await conn.fetch(self._sql["purge_streams"], tenant, older_than)]
            if streams:
                await conn.execute(self._sql["log_drop"], tenant, streams)
        return int(status.split()[-1]) + len(streams)

    async def aclose(self) -> None:
        """Close the listener and the pool. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            if self._listener is not None:
                listener, self._listener = self._listener, None
                await listener.close()
            if self._pool is not None:
                pool, self._pool = self._pool, None
                await pool.close()
        for event in self._waiters.values():
            event.set()
        self._waiters.clear()


async def _keep_session(conn: object) -> None:
    """The pool's reset: nothing. asyncpg still rolls back a transaction left open; the default
    reset (advisory unlock, CLOSE ALL, UNLISTEN, RESET ALL) would cost a round trip per released
    connection, and this store leaves no session state (LISTEN has its own connection)."""
