"""History writer (group commit with fencing), leases and the execution index, all through a keel Store.

Layout in the store (tenant-scoped like every call):

- log ``triggerflow/<execution id>``: the append-only history, one small record per fact;
- log ``triggerflow/<execution id>/inbox``: answers sent by processes that do not own it;
- key ``triggerflow`` / ``exec:<id>``: the index row (flow, status, ref, times, and the history
  ``seq`` it describes, so a late write never overwrites a newer one) for ``ls`` and recovery;
- key ``triggerflow`` / ``lease:<id>``: the owner and expiry of the execution's lease.
"""

from __future__ import annotations

import time
from typing import Any

import anyio

from keel import ConflictError, Store
from keel_triggerflow.types import FlowError, LeaseError

NAMESPACE = "triggerflow"
BATCH_SIZE = 64


def stream_name(execution_id: str) -> str:
    return f"triggerflow/{execution_id}"


def inbox_name(execution_id: str) -> str:
    """Answers from processes that do not own the execution; its owner applies them."""
    return f"triggerflow/{execution_id}/inbox"


class History:
    """Appends records in order. Concurrent committers share one append (group commit); every
    append names the expected sequence, so a process that lost the execution cannot write."""

    def __init__(self, store: Store, tenant: str, execution_id: str, seq: int, mode: str):
        self.store = store
        self.tenant = tenant
        self.stream = stream_name(execution_id)
        self.seq = seq
        self.mode = mode
        self._pending: list[dict[str, Any]] = []
        self._done = anyio.Event()
        self._leader = False
        self.error: BaseException | None = None

    def add(self, record: dict[str, Any]) -> None:
        """Queue a record; it is written with the next commit (its order is kept)."""
        self._pending.append(record)

    async def commit(self, record: dict[str, Any] | None = None, *, force: bool = False) -> None:
        """Queue ``record`` and return once it is in the store (``sync``), or once a batch is
        due (``batch``: every 64 records; ``force`` writes now)."""
        if record is not None:
            self._pending.append(record)
        if self.mode == "batch" and not force and len(self._pending) < BATCH_SIZE:
            return
        await self.flush()

    async def flush(self) -> None:
        if self.error is not None:
            raise self.error
        if not self._pending and not self._leader:
            return
        done = self._done
        if self._leader:
            await done.wait()
            if self.error is not None:
                raise self.error
            return
        self._leader = True
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                done, self._done = self._done, anyio.Event()
                try:
                    self.seq = await self.store.append(self.tenant, self.stream, batch, expected_seq=self.seq)
                except ConflictError as err:
                    self.error = LeaseError(
                        f"execution history {self.stream} was written by another process ({err}); "
                        "this process no longer owns the execution"
                    )
                    raise self.error from err
                except BaseException as err:
                    self.error = err
                    raise
                finally:
                    done.set()
        finally:
            self._leader = False


class Lease:
    """One owner at a time: a compare-and-set key with an expiry that the owner renews."""

    def __init__(self, store: Store, tenant: str, execution_id: str, owner: str, ttl: float):
        self.store = store
        self.tenant = tenant
        self.key = f"lease:{execution_id}"
        self.owner = owner
        self.ttl = ttl
        self.version = 0

    async def acquire(self) -> None:
        current = await self.store.get(self.tenant, NAMESPACE, self.key)
        now = time.time()
        if current is not None:
            value = current.value or {}
            if value.get("owner") not in (None, self.owner) and float(value.get("expires", 0)) > now:
                raise LeaseError(
                    f"execution {self.key[6:]} is owned by {value.get('owner')} until "
                    f"{time.strftime('%H:%M:%S', time.localtime(value['expires']))}; "
                    "signal it through that process, or wait for its lease to expire"
                )
        expected = current.version if current is not None else 0
        try:
            self.version = await self.store.put(
                self.tenant,
                NAMESPACE,
                self.key,
                {"owner": self.owner, "expires": now + self.ttl},
                expected_version=expected,
            )
        except ConflictError as err:
            raise LeaseError(f"execution {self.key[6:]} was taken by another owner just now") from err

    async def renew(self) -> None:
        try:
            self.version = await self.store.put(
                self.tenant,
                NAMESPACE,
                self.key,
                {"owner": self.owner, "expires": time.time() + self.ttl},
                expected_version=self.version,
            )
        except ConflictError as err:
            raise LeaseError(f"lost the lease on execution {self.key[6:]}: another owner took it") from err

    async def release(self) -> None:
        try:
            await self.store.put(
                self.tenant, NAMESPACE, self.key, {"owner": None, "expires": 0}, expected_version=self.version
            )
        except ConflictError:
            pass  # someone else owns it now: nothing of ours to release


async def write_index(store: Store, tenant: str, execution_id: str, *, seq: int, **fields: Any) -> None:
    """Update the index row with what the history says at ``seq``. Writes may land out of order (a
    'waiting' written in the background can arrive after 'completed'): a row already describing a
    later point of the history is left alone, and concurrent writers compare-and-set."""
    key = f"exec:{execution_id}"
    while True:
        current = await store.get(tenant, NAMESPACE, key)
        row: dict[str, Any] = dict(current.value) if current is not None else {"id": execution_id}
        row.setdefault("created", time.time())
        if int(row.get("seq", 0)) > seq:
            return
        row.update(fields, updated=time.time(), seq=seq)
        try:
            await store.put(tenant, NAMESPACE, key, row, expected_version=current.version if current else 0)
            return
        except ConflictError:
            continue  # another writer updated it in between: look again


async def list_index(store: Store, tenant: str) -> list[dict[str, Any]]:
    rows = []
    for key in await store.list_keys(tenant, NAMESPACE, "exec:"):
        item = await store.get(tenant, NAMESPACE, key)
        if item is not None:
            rows.append(item.value)
    return sorted(rows, key=lambda r: r.get("created", 0))


_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(value: str | float | int) -> float:
    """An age in seconds from a number of seconds or a text such as ``"90s"``, ``"12h"``, ``"30d"``, ``"2w"``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        text = str(value).strip().lower()
        unit = _AGE_UNITS.get(text[-1:]) if text else None
        try:
            seconds = float(text[:-1]) * unit if unit else float(text)
        except ValueError:
            seconds = -1.0
    if not seconds >= 0:  # also refuses NaN
        raise FlowError(
            f"invalid age {value!r}: give seconds (3600) or a number with a unit s, m, h, d or w ('12h', '30d')"
        )
    return seconds


async def expired_executions(store: Store, *, older_than: float, tenant: str = "default") -> list[dict[str, Any]]:
    """Index rows of the finished executions (completed, failed, cancelled) last updated more than
    ``older_than`` seconds ago: what :func:`purge_executions` deletes. Waiting ones never expire."""
    cutoff = time.time() - older_than
    return [
        row
        for row in await list_index(store, tenant)
        if row.get("status") in {"completed", "failed", "cancelled"} and row.get("updated", 0) < cutoff
    ]


async def delete_execution(store: Store, tenant: str, execution_id: str) -> None:
    """Delete an execution's history, inbox, index row and lease."""
    await store.delete_stream(tenant, stream_name(execution_id))
    await store.delete_stream(tenant, inbox_name(execution_id))
    await store.delete(tenant, NAMESPACE, f"exec:{execution_id}")
    await store.delete(tenant, NAMESPACE, f"lease:{execution_id}")


async def purge_executions(store: Store, *, older_than: float, tenant: str = "default") -> int:
    """Retention: delete every finished execution that finished more than ``older_than`` seconds
    ago (see :func:`expired_executions`); returns how many were deleted."""
    rows = await expired_executions(store, older_than=older_than, tenant=tenant)
    for row in rows:
        await delete_execution(store, tenant, row["id"])
    return len(rows)
