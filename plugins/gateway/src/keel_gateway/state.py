"""The gateway's durable state, in the stack's Store, so that it survives a restart and is the same
for every worker over one store:

- ``gateway/run:<execution id>``: the runnable an execution was started from (``runnable`` in its view);
- ``gateway/idem:<Idempotency-Key>``: the execution a key started (``{"execution": id}``), or a
  claim while the start is under way (``{"execution": null, "at": <epoch s>}``);
- stream ``gateway.product.<execution id>``: its product events but ``task.partial`` (which exist
  only while an answer streams), each with its ``seq``, so that ``Last-Event-ID`` and ``seq`` go on
  in the next process, and the seq of the RuntimeEvent it was projected from (``source``), so that
  the next process does not say it again when the execution tells that event again.

All keys and streams are per tenant. Answers' request ids are not kept here: the ``Execution``
protocol promises that a request id is delivered once, and a durable execution keeps them in its
history. The rate limiter is not kept here either: it is per process (see docs/service.md).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from keel import ConflictError, ProductEvent

if TYPE_CHECKING:
    from keel import Runtime

__all__ = ["CLAIM_TTL", "NAMESPACE", "GatewayState", "product_stream"]

NAMESPACE = "gateway"
#: seconds after which an idempotency claim whose start never finished (its process died) is taken over
CLAIM_TTL = 60.0


def product_stream(execution_id: str) -> str:
    return f"gateway.product.{execution_id}"


class GatewayState:
    """Reads and writes the gateway's keys and streams in ``runtime.store()``."""

    def __init__(self, runtime: Runtime):
        self.runtime = runtime

    # ------------------------------------------------------------------------------- runnables

    async def remember_runnable(self, tenant: str, execution_id: str, runnable: str) -> None:
        await self.runtime.store().put(tenant, NAMESPACE, f"run:{execution_id}", {"runnable": runnable})

    async def runnable_of(self, tenant: str, execution_id: str) -> str | None:
        row = await self.runtime.store().get(tenant, NAMESPACE, f"run:{execution_id}")
        name = row.value.get("runnable") if row is not None and isinstance(row.value, dict) else None
        return name if isinstance(name, str) else None

    # -------------------------------------------------------------------------- idempotency keys

    async def claim(self, tenant: str, key: str, *, now: float | None = None) -> str | None:
        """Claim ``key`` for a new start (``None``: go ahead, then :meth:`settle`), or the id of the
        execution it already started. A start under way elsewhere is a :class:`keel.ConflictError`."""
        store = self.runtime.store()
        now = time.time() if now is None else now
        for _ in range(3):
            row = await store.get(tenant, NAMESPACE, f"idem:{key}")
            value: dict[str, Any] = row.value if row is not None and isinstance(row.value, dict) else {}
            if isinstance(value.get("execution"), str):
                return str(value["execution"])
            if row is not None and now - float(value.get("at", 0)) < CLAIM_TTL:
                raise ConflictError(
                    f"a start with Idempotency-Key {key!r} is under way: retry in a moment for its execution"
                )
            try:  # no row, or a stale claim (its process died between claim and settle): take it
                await store.put(
                    tenant, NAMESPACE, f"idem:{key}", {"execution": None, "at": now},
                    expected_version=0 if row is None else row.version,
                )  # fmt: skip
                return None
            except ConflictError:
                continue  # another request claimed it first: read again
        raise ConflictError(f"Idempotency-Key {key!r} is contended: retry")

    async def settle(self, tenant: str, key: str, execution_id: str | None) -> None:
        """Record the execution a claimed key started, or release the claim (``None``: it failed)."""
        store = self.runtime.store()
        if execution_id is None:
            await store.delete(tenant, NAMESPACE, f"idem:{key}")
        else:
            await store.put(tenant, NAMESPACE, f"idem:{key}", {"execution": execution_id, "at": time.time()})

    # ---------------------------------------------------------------------------- product events

    async def product_events(self, tenant: str, execution_id: str) -> list[ProductEvent]:
        return [event for event, _source in await self.kept_products(tenant, execution_id)]

    async def kept_products(self, tenant: str, execution_id: str) -> list[tuple[ProductEvent, int | None]]:
        """The kept product events, each with the seq of the RuntimeEvent it was projected from
        (``None``: not known, e.g. kept by an older version)."""
        records = await self.runtime.store().read(tenant, product_stream(execution_id))
        kept: list[tuple[ProductEvent, int | None]] = []
        for record in records:
            data = dict(record.data)
            source = data.pop("source", None)
            kept.append((ProductEvent.model_validate(data), source if isinstance(source, int) else None))
        return kept

    async def append_product(self, tenant: str, execution_id: str, event: ProductEvent, expected_seq: int) -> None:
        """Append one product event; a :class:`keel.ConflictError` when another process wrote there."""
        await self.append_products(tenant, execution_id, [event], expected_seq)

    async def append_products(
        self,
        tenant: str,
        execution_id: str,
        events: list[ProductEvent],
        expected_seq: int,
        sources: list[int | None] | None = None,
    ) -> None:
        """Append product events in one write (all or none), each with the seq of the RuntimeEvent
        it was projected from (``sources``, which a restart reads to not say it again); a
        :class:`keel.ConflictError` when another process wrote there."""
        records = [event.model_dump(mode="json") for event in events]
        for record, source in zip(records, sources or [], strict=False):
            if source is not None:
                record["source"] = source
        await self.runtime.store().append(tenant, product_stream(execution_id), records, expected_seq=expected_seq)
