"""The store contract: versioned key-value, blobs by content hash, append-only logs.

Every call names a tenant; one tenant never sees another's data. Values and log records are
JSON-compatible Python objects (dicts, lists, strings, numbers, booleans, None). Backends register
through ``keel_stores()`` and prove themselves with
:class:`keel.testing.conformance.StoreConformance`. :class:`MemoryStore` is the kernel's own
(non-durable) backend and the reference for the semantics.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import anyio
from pydantic import BaseModel, ConfigDict

from keel.errors import ConflictError, NotFoundError, StoreError

__all__ = [
    "Append",
    "BlobRef",
    "Delete",
    "LogRecord",
    "MemoryStore",
    "Put",
    "Store",
    "Versioned",
    "WriteOp",
    "blob_hash",
    "check_version",
    "conflict_in",
    "encode_value",
    "seq_conflict",
    "version_conflict",
]


class Versioned(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    key: str
    value: Any
    version: int
    updated_at: float


class BlobRef(BaseModel):
    """A reference to stored bytes: what execution state and prompts carry instead of the bytes."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    sha256: str
    size: int
    media_type: str = "application/octet-stream"


class LogRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    stream: str
    seq: int
    data: Any
    time: float


def blob_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- transactions


@dataclass(frozen=True)
class Put:
    """In :meth:`Store.transact`: ``put(namespace, key, value, expected_version=...)``; result: the new version."""

    namespace: str
    key: str
    value: Any
    expected_version: int | None = None


@dataclass(frozen=True)
class Delete:
    """In :meth:`Store.transact`: ``delete(namespace, key, expected_version=...)``; result: whether it existed."""

    namespace: str
    key: str
    expected_version: int | None = None


@dataclass(frozen=True)
class Append:
    """In :meth:`Store.transact`: ``append(stream, records, expected_seq=...)``; result: the last sequence number."""

    stream: str
    records: Sequence[Any] = field(default_factory=list)
    expected_seq: int | None = None


WriteOp = Put | Delete | Append


def conflict_in(index: int, op: WriteOp, err: ConflictError) -> ConflictError:
    """The error a transaction raises when op ``index`` fails its condition: nothing was written."""
    where = f"{op.namespace}/{op.key}" if isinstance(op, (Put, Delete)) else op.stream
    return ConflictError(f"transaction op {index} ({type(op).__name__.lower()} {where}): {err}; nothing was written")


@runtime_checkable
class Store(Protocol):
    """What every store backend implements. All methods are async, except the two async iterators."""

    # key-value with compare-and-set
    async def get(self, tenant: str, namespace: str, key: str) -> Versioned | None:
        """The current value and version, or ``None``."""
        ...

    async def put(
        self, tenant: str, namespace: str, key: str, value: Any, *, expected_version: int | None = None
    ) -> int:
        """Write a value; returns the new version (1 for a new key).

        ``expected_version``: ``None`` writes unconditionally, ``0`` requires that the key does not
        exist, ``n`` requires that it is at version ``n``; otherwise :class:`keel.ConflictError`.
        """
        ...

    async def delete(self, tenant: str, namespace: str, key: str, *, expected_version: int | None = None) -> bool:
        """Remove a key; ``True`` when it existed."""
        ...

    async def list_keys(self, tenant: str, namespace: str, prefix: str = "") -> list[str]:
        """Keys of a namespace in sorted order."""
        ...

    # blobs by content hash
    async def put_blob(self, tenant: str, data: bytes, media_type: str = "application/octet-stream") -> BlobRef:
        """Store bytes once per content hash; storing them again is a no-op returning the same ref."""
        ...

    async def get_blob(self, tenant: str, sha256: str) -> bytes:
        """The bytes, or :class:`keel.NotFoundError`."""
        ...

    async def has_blob(self, tenant: str, sha256: str) -> bool: ...

    async def blob_ref(self, tenant: str, sha256: str) -> BlobRef | None:
        """The stored blob's ref (hash, size, media type) without reading its bytes; ``None`` when absent."""
        ...

    def stream_blob(self, tenant: str, sha256: str, chunk_size: int = 65536) -> AsyncIterator[bytes]:
        """The bytes in chunks, for blobs too large to hold twice."""
        ...

    # append-only logs
    async def append(self, tenant: str, stream: str, records: Sequence[Any], *, expected_seq: int | None = None) -> int:
        """Append records; returns the sequence number of the last one (the first record ever is 1).

        Appending no records creates nothing and returns the current last sequence number. A
        deleted stream starts again at 1.

        ``expected_seq``: the stream's current last sequence number, or :class:`keel.ConflictError`
        (optimistic concurrency for a single writer per stream). An acknowledged append is durable
        on a durable backend.
        """
        ...

    async def read(self, tenant: str, stream: str, *, after: int = 0, limit: int | None = None) -> list[LogRecord]:
        """Records with ``seq > after``, in order."""
        ...

    def subscribe(self, tenant: str, stream: str, *, after: int = 0) -> AsyncIterator[LogRecord]:
        """Records with ``seq > after``, then each new one as it is appended, until cancelled."""
        ...

    async def last_seq(self, tenant: str, stream: str) -> int:
        """The last sequence number of a stream; 0 for an empty or missing stream."""
        ...

    async def list_streams(self, tenant: str, prefix: str = "") -> list[str]: ...

    async def delete_stream(self, tenant: str, stream: str) -> None: ...

    # retention
    async def purge(self, tenant: str, *, older_than: float) -> int:
        """Delete keys not updated and streams not appended to since ``older_than`` (epoch seconds).

        Blobs are left alone (they may be shared); returns how many keys and streams were deleted.
        """
        ...

    # transactions
    async def transact(self, tenant: str, ops: Sequence[WriteOp]) -> list[Any]:
        """Apply :class:`Put`, :class:`Delete` and :class:`Append` operations all together or not at all.

        Ops run in order (a later op sees an earlier one's write); the result is each op's own
        (new version, existed, last sequence number). When any op's condition fails, nothing is
        written and a :class:`keel.ConflictError` names the op (see :func:`conflict_in`). Read what
        you need first, then transact with ``expected_version`` / ``expected_seq``: optimistic
        concurrency across several keys and streams. A backend that cannot write atomically raises
        :class:`keel.StoreError` saying so.
        """
        ...

    async def aclose(self) -> None: ...


# ------------------------------------------------------------------ pieces every backend shares


def encode_value(value: Any) -> str:
    """A value or log record as compact JSON text, the form durable backends keep; a value JSON
    cannot hold is a :class:`keel.StoreError` saying what to do instead."""
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError) as err:
        raise StoreError(
            f"value is not JSON-compatible ({err}); store large or binary data with put_blob() and keep the BlobRef"
        ) from err


def version_conflict(namespace: str, key: str, current: int, expected: int) -> ConflictError:
    """The error for a ``put``/``delete`` whose ``expected_version`` is not the key's ``current``
    version (0: the key is missing)."""
    state = f"at version {current}" if current else "missing"
    return ConflictError(
        f"{namespace}/{key} is {state}, not at version {expected}: it changed since you read it; "
        "read it again and retry"
    )


def seq_conflict(stream: str, current: int, expected: int) -> ConflictError:
    """The error for an ``append`` whose ``expected_seq`` is not the stream's last sequence number."""
    return ConflictError(
        f"stream {stream!r} is at seq {current}, not {expected}: another writer appended; re-read the stream and retry"
    )


def _json_copy(value: Any) -> Any:
    """Round-trip through JSON: the memory store accepts exactly what a durable one can store."""
    return json.loads(encode_value(value))


class MemoryStore:
    """The kernel's in-process store: complete semantics, nothing kept across restarts."""

    def __init__(self) -> None:
        self._kv: dict[tuple[str, str], dict[str, Versioned]] = {}
        self._blobs: dict[tuple[str, str], tuple[bytes, str]] = {}
        self._logs: dict[tuple[str, str], list[LogRecord]] = {}
        self._changed: anyio.Event | None = None  # created inside the event loop, on first subscribe

    async def get(self, tenant: str, namespace: str, key: str) -> Versioned | None:
        item = self._kv.get((tenant, namespace), {}).get(key)
        return item.model_copy(update={"value": _json_copy(item.value)}) if item else None

    async def put(
        self, tenant: str, namespace: str, key: str, value: Any, *, expected_version: int | None = None
    ) -> int:
        space = self._kv.setdefault((tenant, namespace), {})
        current = space.get(key)
        check_version(namespace, key, current.version if current else 0, expected_version)
        version = (current.version if current else 0) + 1
        space[key] = Versioned(key=key, value=_json_copy(value), version=version, updated_at=time.time())
        return version

    async def delete(self, tenant: str, namespace: str, key: str, *, expected_version: int | None = None) -> bool:
        space = self._kv.get((tenant, namespace), {})
        current = space.get(key)
        check_version(namespace, key, current.version if current else 0, expected_version)
        return space.pop(key, None) is not None

    async def list_keys(self, tenant: str, namespace: str, prefix: str = "") -> list[str]:
        return sorted(k for k in self._kv.get((tenant, namespace), {}) if k.startswith(prefix))

    async def put_blob(self, tenant: str, data: bytes, media_type: str = "application/octet-stream") -> BlobRef:
        digest = blob_hash(data)
        self._blobs.setdefault((tenant, digest), (bytes(data), media_type))
        return BlobRef(sha256=digest, size=len(data), media_type=self._blobs[(tenant, digest)][1])

    async def get_blob(self, tenant: str, sha256: str) -> bytes:
        try:
            return self._blobs[(tenant, sha256)][0]
        except KeyError:
            raise NotFoundError(f"no blob {sha256} for tenant {tenant!r}") from None

    async def has_blob(self, tenant: str, sha256: str) -> bool:
        return (tenant, sha256) in self._blobs

    async def blob_ref(self, tenant: str, sha256: str) -> BlobRef | None:
        found = self._blobs.get((tenant, sha256))
        return BlobRef(sha256=sha256, size=len(found[0]), media_type=found[1]) if found else None

    async def stream_blob(self, tenant: str, sha256: str, chunk_size: int = 65536) -> AsyncIterator[bytes]:
        data = await self.get_blob(tenant, sha256)
        for start in range(0, len(data), chunk_size):
            yield data[start : start + chunk_size]

    async def append(self, tenant: str, stream: str, records: Sequence[Any], *, expected_seq: int | None = None) -> int:
        log = self._logs.get((tenant, stream), [])
        if expected_seq is not None and expected_seq != len(log):
            raise seq_conflict(stream, len(log), expected_seq)
        now = time.time()
        copies = [_json_copy(r) for r in records]  # validate all before appending any
        if not copies:
            return len(log)
        self._logs[(tenant, stream)] = log
        for data in copies:
            log.append(LogRecord(stream=stream, seq=len(log) + 1, data=data, time=now))
        self._notify()
        return len(log)

    async def read(self, tenant: str, stream: str, *, after: int = 0, limit: int | None = None) -> list[LogRecord]:
        log = self._logs.get((tenant, stream), [])
        end = len(log) if limit is None else min(len(log), after + limit)
        return [r.model_copy() for r in log[max(after, 0) : end]]

    async def subscribe(self, tenant: str, stream: str, *, after: int = 0) -> AsyncIterator[LogRecord]:
        while True:
            if self._changed is None:
                self._changed = anyio.Event()
            changed = self._changed
            records = await self.read(tenant, stream, after=after)
            for record in records:
                yield record
                after = record.seq
            if not records:
                await changed.wait()

    async def last_seq(self, tenant: str, stream: str) -> int:
        return len(self._logs.get((tenant, stream), []))

    async def list_streams(self, tenant: str, prefix: str = "") -> list[str]:
        return sorted(s for (t, s) in self._logs if t == tenant and s.startswith(prefix))

    async def delete_stream(self, tenant: str, stream: str) -> None:
        self._logs.pop((tenant, stream), None)

    async def purge(self, tenant: str, *, older_than: float) -> int:
        count = 0
        for (t, _ns), space in self._kv.items():
            if t != tenant:
                continue
            for key in [k for k, v in space.items() if v.updated_at < older_than]:
                del space[key]
                count += 1
        for t, stream in list(self._logs):
            log = self._logs[(t, stream)]
            if t == tenant and (not log or log[-1].time < older_than):
                del self._logs[(t, stream)]
                count += 1
        return count

    async def transact(self, tenant: str, ops: Sequence[WriteOp]) -> list[Any]:
        # Check every condition against a simulated state first, then apply. This store's own
        # methods never suspend (their awaits return at once), so no other task sees half of it.
        versions: dict[tuple[str, str], int] = {}
        seqs: dict[str, int] = {}
        results: list[Any] = []
        for i, op in enumerate(ops):
            try:
                if isinstance(op, Append):
                    _json_copy(list(op.records))
                    last = seqs.get(op.stream, len(self._logs.get((tenant, op.stream), [])))
                    if op.expected_seq is not None and op.expected_seq != last:
                        raise seq_conflict(op.stream, last, op.expected_seq)
                    seqs[op.stream] = last + len(op.records)
                    results.append(seqs[op.stream])
                    continue
                slot = (op.namespace, op.key)
                if slot not in versions:
                    item = self._kv.get((tenant, op.namespace), {}).get(op.key)
                    versions[slot] = item.version if item else 0
                current = versions[slot]
                check_version(op.namespace, op.key, current, op.expected_version)
                if isinstance(op, Put):
                    _json_copy(op.value)
                    versions[slot] = current + 1
                    results.append(current + 1)
                else:
                    versions[slot] = 0
                    results.append(current > 0)
            except ConflictError as err:
                raise conflict_in(i, op, err) from err
        for op in ops:
            if isinstance(op, Put):
                await self.put(tenant, op.namespace, op.key, op.value)
            elif isinstance(op, Delete):
                await self.delete(tenant, op.namespace, op.key)
            else:
                await self.append(tenant, op.stream, op.records)
        return results

    async def aclose(self) -> None:
        self._notify()

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None


def check_version(namespace: str, key: str, current: int, expected: int | None) -> None:
    """Raise :func:`version_conflict` unless ``expected`` is ``None`` or the key's ``current`` version."""
    if expected is not None and expected != current:
        raise version_conflict(namespace, key, current, expected)
