"""History writer (group commit with fencing), leases and the execution index, all through a keel Store.

Layout in the store (tenant-scoped like every call):

- log ``triggerflow/<execution id>``: the append-only history, one small record per fact;
- log ``triggerflow/<execution id>/inbox``: answers sent by processes that do not own it;
- log ``triggerflow/<execution id>/stream``: the items steps put with ``ctx.put_into_stream``
  (``{"h": history seq before them, "p": step path, "item": item}``), for processes that follow
  the execution (``_follow``): written a moment after the put, and at the latest in the same
  transaction as the history records that follow them; replay never reads it;
- key ``triggerflow`` / ``exec:<id>``: the index row (flow, status, ref, times, and the history
  ``seq`` it describes, so a late write never overwrites a newer one) for ``ls`` and recovery;
- key ``triggerflow`` / ``by:<status>:<created>:<id>``: the same row's place in a status, so
  ``keel flow ls --status waiting --last 20`` and start-up adoption read one status in time order
  without reading every row;
- key ``triggerflow`` / ``due:<deadline>:<id>``: a waiting execution's nearest wait deadline, so
  start-up adoption arms its timers from these keys alone (reading no row and no history);
- key ``triggerflow`` / ``index`` : the index's version (``{"v": 2}``); a tenant whose executions
  were indexed by an older version is re-indexed from its rows once (:func:`ensure_index`);
- key ``triggerflow`` / ``lease:<id>``: the owner and expiry of the execution's lease;
- tenant ``_triggerflow``, key ``tenants`` / ``<tenant>``: the tenants that have executions, for
  start-up adoption (the store's calls are scoped by tenant; this is the one list across them).

The start record and the index row are written in one transaction, as are the end record and its
row: no crash leaves an execution out of the index, or its row ``running`` after its end.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import anyio

from keel import ConflictError, Store
from keel.store import Append, Delete, Put, WriteOp
from keel_triggerflow.types import FlowError, LeaseError

NAMESPACE = "triggerflow"
BATCH_SIZE = 64
TENANTS = "_triggerflow"  # the store tenant holding the list of tenants
FINISHED = frozenset({"completed", "failed", "cancelled"})


def stream_name(execution_id: str) -> str:
    return f"triggerflow/{execution_id}"


def items_name(execution_id: str) -> str:
    """Stream items of the execution, for followers in other processes (not part of its replay)."""
    return f"triggerflow/{execution_id}/stream"


def inbox_name(execution_id: str) -> str:
    """Answers from processes that do not own the execution; its owner applies them."""
    return f"triggerflow/{execution_id}/inbox"


class History:
    """Appends records in order. Concurrent committers share one append (group commit).

    Fencing: every append is one transaction with a compare-and-set of the lease (the lease's
    version is the fencing token, and the write renews it) and names the expected sequence; a
    process whose lease another owner took cannot write a single record, even when its event loop
    was blocked past the TTL and it does not know yet that it lost the execution."""

    def __init__(self, store: Store, tenant: str, execution_id: str, seq: int, mode: str, lease: Lease | None = None):
        self.store = store
        self.lease = lease
        self.tenant = tenant
        self.stream = stream_name(execution_id)
        self.seq = seq
        self.mode = mode
        self._pending: list[Mapping[str, Any]] = []
        self._items: list[dict[str, Any]] = []  # stream items, written with the next records
        self._done = anyio.Event()
        self._leader = False
        self.error: BaseException | None = None
        self._writing = anyio.Lock()

    def add(self, record: Mapping[str, Any]) -> None:
        """Queue a record; it is written with the next commit (its order is kept)."""
        self._pending.append(record)

    def add_item(self, path: str, item: Any) -> None:
        """Queue a stream item (JSON data) for followers: written by :meth:`write_items`, or at the
        latest with the next commit, before the records that follow it."""
        self._items.append({"p": path, "item": item})

    async def write_items(self) -> None:
        """Write the queued stream items now, on their own (followers see them before the step ends)."""
        async with self._writing:  # taken inside the lock: never after items a later commit took
            ops = self._take_items()
            for op in ops:
                assert isinstance(op, Append)
                await self.store.append(self.tenant, op.stream, op.records)

    def _take_items(self) -> list[WriteOp]:
        if not self._items:
            return []
        items, self._items = self._items, []
        for item in items:
            item["h"] = self.seq
        return [Append(items_name(self.stream.removeprefix("triggerflow/")), items)]

    async def commit(self, record: Mapping[str, Any] | None = None, *, force: bool = False) -> None:
        """Queue ``record`` and return once it is in the store (``sync``), or once a batch is
        due (``batch``: every 64 records; ``force`` writes now)."""
        if record is not None:
            self._pending.append(record)
        if self.mode == "batch" and not force and len(self._pending) < BATCH_SIZE:
            return
        await self.flush()

    async def commit_with_index(self, record: Mapping[str, Any], **fields: Any) -> None:
        """Write ``record`` (and whatever is queued) and the index row's ``fields`` in one
        transaction: a crash keeps both or neither."""
        await self.flush()
        execution_id = self.stream.removeprefix("triggerflow/")

        async def ops() -> list[WriteOp]:
            extra = await index_ops(self.store, self.tenant, execution_id, self.seq + 1, fields)
            return [Append(self.stream, [record], expected_seq=self.seq), *extra]

        await self._write(ops)

    async def _write(self, build: Any) -> None:
        """Run ``build()``'s ops with the lease fence in one transaction; retry when only our own
        lease renewal or the index row moved in between; otherwise the execution is lost. One
        write at a time: a second one would see the first's sequence move and think it lost."""
        async with self._writing:
            await self._write_locked(build)

    async def _write_locked(self, build: Any) -> None:
        while True:
            ops: list[WriteOp] = await build()
            fence = self.lease.fence() if self.lease is not None else None
            try:
                results = await self.store.transact(self.tenant, [*([fence] if fence else []), *ops])
            except ConflictError as err:
                owned = await self.lease.still_owned() if self.lease is not None else True
                if owned and await self.store.last_seq(self.tenant, self.stream) == self.seq:
                    continue  # our own heartbeat or a background index write moved a version
                self.error = LeaseError(
                    f"execution history {self.stream} was taken over by another process ({err}); "
                    "this process no longer owns the execution and wrote nothing"
                )
                raise self.error from err
            if self.lease is not None:
                self.lease.version = results[0]
            self.seq = results[1 if self.lease is not None else 0]
            return

    async def flush(self) -> None:
        if self.error is not None:
            raise self.error
        if not self._pending and not self._items and not self._leader:
            return
        done = self._done
        if self._leader:
            await done.wait()
            if self.error is not None:
                raise self.error
            return
        self._leader = True
        try:
            while self._pending or self._items:
                batch, self._pending = self._pending, []
                items = self._take_items()
                done, self._done = self._done, anyio.Event()
                try:
                    if self.lease is None and not items:
                        self.seq = await self.store.append(self.tenant, self.stream, batch, expected_seq=self.seq)
                    elif self.lease is None:
                        ops_now: list[WriteOp] = [Append(self.stream, batch, expected_seq=self.seq), *items]
                        self.seq = (await self.store.transact(self.tenant, ops_now))[0]
                    else:

                        async def ops(
                            batch: list[Mapping[str, Any]] = batch, items: list[WriteOp] = items
                        ) -> list[WriteOp]:
                            return [Append(self.stream, batch, expected_seq=self.seq), *items]

                        await self._write(ops)
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
            # a flush that came after the last batch was taken (it had nothing of its own queued,
            # as an answer's commit_with_index) waits on this event: no next batch will set it
            self._done.set()
            self._done = anyio.Event()


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
        while True:
            try:
                self.version = await self.store.put(
                    self.tenant,
                    NAMESPACE,
                    self.key,
                    {"owner": self.owner, "expires": time.time() + self.ttl},
                    expected_version=self.version,
                )
                return
            except ConflictError as err:
                if not await self.still_owned():  # else: a history append renewed it in between
                    raise LeaseError(f"lost the lease on execution {self.key[6:]}: another owner took it") from err

    def fence(self) -> Put:
        """The op that makes a transaction conditional on still holding the lease (and renews it)."""
        return Put(NAMESPACE, self.key, {"owner": self.owner, "expires": time.time() + self.ttl}, self.version)

    async def still_owned(self) -> bool:
        """Whether the lease is still ours (re-read; takes its current version when it is)."""
        current = await self.store.get(self.tenant, NAMESPACE, self.key)
        if current is None or (current.value or {}).get("owner") != self.owner:
            return False
        self.version = current.version
        return True

    async def release(self) -> None:
        try:
            await self.store.put(
                self.tenant, NAMESPACE, self.key, {"owner": None, "expires": 0}, expected_version=self.version
            )
        except ConflictError:
            pass  # someone else owns it now: nothing of ours to release


def _by_key(status: str, created: float, execution_id: str) -> str:
    return f"by:{status}:{created:017.6f}:{execution_id}"


def _due_key(row: dict[str, Any]) -> str | None:
    """The deadline-index key of a row (a waiting execution with a timed wait), or ``None``."""
    deadline = row.get("deadline")
    if row.get("status") != "waiting" or not isinstance(deadline, (int, float)) or isinstance(deadline, bool):
        return None
    return f"due:{float(deadline):017.6f}:{row['id']}"


INDEX_VERSION = 2  # 1: rows only; 2: rows, status keys (by:) and deadline keys (due:)


_known_tenants: dict[int, set[str]] = {}  # id(store) -> tenants registered through it (saves a read)


async def index_ops(store: Store, tenant: str, execution_id: str, seq: int, fields: dict[str, Any]) -> list[WriteOp]:
    """The writes that bring the index row to what the history says at ``seq`` (none when the row
    already describes a later point): the row, its status key, and the tenant's registration."""
    key = f"exec:{execution_id}"
    current = await store.get(tenant, NAMESPACE, key)
    row: dict[str, Any] = dict(current.value) if current is not None else {"id": execution_id}
    created = float(row.setdefault("created", time.time()))
    if int(row.get("seq", 0)) > seq:
        return []
    old_status, old_due = row.get("status"), _due_key(row)
    row.update(fields, updated=time.time(), seq=seq)
    if row.get("status") != "waiting" or "deadline" not in fields:
        row.pop("deadline", None)  # a deadline belongs to the wait it was written with
    ops: list[WriteOp] = [Put(NAMESPACE, key, row, expected_version=current.version if current else 0)]
    if old_status != row.get("status"):
        if old_status is not None:
            ops.append(Delete(NAMESPACE, _by_key(str(old_status), created, execution_id)))
        if row.get("status") is not None:
            ops.append(Put(NAMESPACE, _by_key(str(row["status"]), created, execution_id), {"id": execution_id}))
    new_due = _due_key(row)
    if old_due != new_due:
        if old_due is not None:
            ops.append(Delete(NAMESPACE, old_due))
        if new_due is not None:
            ops.append(Put(NAMESPACE, new_due, {"id": execution_id}))
    if current is None:
        known = _known_tenants.setdefault(id(store), set())
        if tenant not in known:
            if await store.get(TENANTS, "tenants", tenant) is None:
                if not await store.list_keys(tenant, NAMESPACE, "exec:"):
                    # a new tenant: its index starts at the current version (nothing to re-index)
                    await store.put(tenant, NAMESPACE, "index", {"v": INDEX_VERSION})
                await store.put(TENANTS, "tenants", tenant, {"since": time.time()})
            known.add(tenant)
    return ops


async def write_index(store: Store, tenant: str, execution_id: str, *, seq: int, **fields: Any) -> None:
    """Update the index row with what the history says at ``seq``. Writes may land out of order (a
    'waiting' written in the background can arrive after 'completed'): a row already describing a
    later point of the history is left alone, and concurrent writers compare-and-set."""
    while True:
        ops = await index_ops(store, tenant, execution_id, seq, fields)
        if not ops:
            return
        try:
            await store.transact(tenant, ops)
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


async def rows_by_status(store: Store, tenant: str, status: str, *, last: int | None = None) -> list[dict[str, Any]]:
    """Index rows of one status, oldest first (only the ``last`` most recent ones when given): reads
    the status's keys, then only the rows it returns."""
    keys = await store.list_keys(tenant, NAMESPACE, f"by:{status}:")
    if last is not None:
        keys = keys[-last:] if last > 0 else []
    rows = []
    for key in keys:
        item = await store.get(tenant, NAMESPACE, f"exec:{key.rsplit(':', 1)[1]}")
        if item is not None and item.value.get("status") == status:
            rows.append(item.value)
    return rows


async def due_waits(store: Store, tenant: str) -> list[tuple[float, str]]:
    """(deadline, execution id) of every waiting execution with a timed wait, nearest first: read
    from the deadline keys alone."""
    found = []
    for key in await store.list_keys(tenant, NAMESPACE, "due:"):
        _, deadline, execution_id = key.split(":", 2)
        found.append((float(deadline), execution_id))
    return found


async def list_tenants(store: Store) -> list[str]:
    """Every tenant that has had an execution in this store."""
    return await store.list_keys(TENANTS, "tenants")


_indexed: dict[int, set[str]] = {}  # id(store) -> tenants whose index this process found current


async def ensure_index(store: Store, tenant: str) -> int:
    """Bring a tenant's index to the current version, once per store and process: one read when it
    is current. Executions indexed by an older version (before the status and deadline keys) get
    those keys from their rows, and the tenant is registered for start-up adoption. Returns how
    many rows were re-indexed (what ``keel flow reindex`` prints)."""
    done = _indexed.setdefault(id(store), set())
    if tenant in done:
        return 0
    marker = await store.get(tenant, NAMESPACE, "index")
    count = 0
    if marker is None or int((marker.value or {}).get("v", 1)) < INDEX_VERSION:
        count = await reindex(store, tenant)
    done.add(tenant)
    return count


async def reindex(store: Store, tenant: str) -> int:
    """Add the status and deadline keys a tenant's index rows call for and are missing; register
    the tenant; mark the index current. Only adds: safe to run again and beside a live process (a
    key left over from a row that changed meanwhile is harmless: readers check the row itself)."""
    rows = {}
    for key in await store.list_keys(tenant, NAMESPACE, "exec:"):
        item = await store.get(tenant, NAMESPACE, key)
        if item is not None and isinstance(item.value, dict):
            rows[key[5:]] = item.value
    wanted: set[str] = set()
    for execution_id, row in rows.items():
        row.setdefault("id", execution_id)
        if row.get("status") is not None:
            wanted.add(_by_key(str(row["status"]), float(row.get("created", 0)), execution_id))
        due = _due_key(row)
        if due is not None:
            wanted.add(due)
    have = set(await store.list_keys(tenant, NAMESPACE, "by:")) | set(await store.list_keys(tenant, NAMESPACE, "due:"))
    ops: list[WriteOp] = [Put(NAMESPACE, key, {"id": key.rsplit(":", 1)[1]}) for key in sorted(wanted - have)]
    for start in range(0, len(ops), 500):  # bounded transactions
        await store.transact(tenant, ops[start : start + 500])
    if rows and await store.get(TENANTS, "tenants", tenant) is None:
        await store.put(TENANTS, "tenants", tenant, {"since": time.time()})
    await store.put(tenant, NAMESPACE, "index", {"v": INDEX_VERSION})
    return len(rows)


async def lease_expiry(store: Store, tenant: str, execution_id: str) -> float | None:
    """When the execution's current lease expires, or ``None`` when nobody holds it now."""
    lease = await store.get(tenant, NAMESPACE, f"lease:{execution_id}")
    if lease is None or not lease.value.get("owner"):
        return None
    expires = float(lease.value.get("expires", 0))
    return expires if expires > time.time() else None


async def lease_is_live(store: Store, tenant: str, execution_id: str) -> bool:
    """Whether a process holds the execution's lease now."""
    lease = await store.get(tenant, NAMESPACE, f"lease:{execution_id}")
    return bool(lease is not None and lease.value.get("owner") and float(lease.value.get("expires", 0)) > time.time())


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
        if row.get("status") in FINISHED and row.get("updated", 0) < cutoff
    ]


async def delete_execution(store: Store, tenant: str, execution_id: str) -> None:
    """Delete an execution's history, inbox, index row and lease."""
    await store.delete_stream(tenant, stream_name(execution_id))
    await store.delete_stream(tenant, inbox_name(execution_id))
    await store.delete_stream(tenant, items_name(execution_id))
    row = await store.get(tenant, NAMESPACE, f"exec:{execution_id}")
    if row is not None and row.value.get("status"):
        await store.delete(
            tenant, NAMESPACE, _by_key(row.value["status"], float(row.value.get("created", 0)), execution_id)
        )
    due = _due_key({**row.value, "id": execution_id}) if row is not None else None
    if due is not None:
        await store.delete(tenant, NAMESPACE, due)
    await store.delete(tenant, NAMESPACE, f"exec:{execution_id}")
    await store.delete(tenant, NAMESPACE, f"lease:{execution_id}")


async def purge_executions(store: Store, *, older_than: float, tenant: str = "default") -> int:
    """Retention: delete every finished execution that finished more than ``older_than`` seconds
    ago (see :func:`expired_executions`); returns how many were deleted."""
    rows = await expired_executions(store, older_than=older_than, tenant=tenant)
    for row in rows:
        await delete_execution(store, tenant, row["id"])
    return len(rows)
