"""The scheduler's own extension points: broker trigger sources, and who keeps the schedules.
keel-scheduler adds these specs to the host through the kernel's ``keel_addhooks`` hook, whichever
order plugins load in.

A source plugin (contrib/source-nats) implements the hook in the module its ``keel`` entry point
names, with ``optionalhook=True`` so that it loads (and does nothing) where the scheduler is absent.
It never imports keel_scheduler: a source gets an ``accept`` callable and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pluggy import HookspecMarker

hookspec = HookspecMarker("keel")


@hookspec
def keel_scheduler_sources() -> Iterable[Any]:
    """Register broker trigger sources for ``keel intake``.

    Each item has ``name`` (what ``driver = "..."`` in ``[settings.scheduler.brokers.<name>]``
    names) and ``factory(options: dict) -> source``, where ``source.run(accept)`` is an async
    function that consumes until cancelled. For each message it calls ``await accept(delivery_id,
    payload)``, which commits the inbox row and its job in one transaction and returns ``(status,
    body)`` (202 recorded, 200 a duplicate, 422 nothing to do); the source acknowledges the
    message **only after** ``accept`` returned, and leaves it unacknowledged (for redelivery) when
    ``accept`` raised. ``delivery_id`` must be the same on every redelivery (the broker's message id).

    :returns: source descriptors.

    Example::

        @keel.hookimpl(optionalhook=True)
        def keel_scheduler_sources():
            yield SimpleNamespace(name="nats", factory=lambda options: NatsSource(**options))
    """
    raise NotImplementedError


@hookspec(firstresult=True)
def keel_scheduler_schedules(runtime: Any) -> Any:
    """Keep the stack's schedules somewhere other than keel-scheduler's database.

    Called by ``keel schedule ...`` and ``keel scheduler`` with the stack's runtime (not opened,
    its ``runnables`` not loaded yet: be cheap, connect to nothing). Return ``None`` to leave the
    stack's schedules to keel-scheduler (its tables, fired by ``keel scheduler``), or an engine
    that keeps and fires them itself (keel-runner-temporal: Temporal Schedules when ``runner =
    "temporal"``). The engine has ``where`` (a phrase naming where they are kept and what fires
    them) and these async methods, which take and give plain data:

    - ``add(spec, *, replace)``: ``spec`` is a validated schedule as JSON data
      (``Schedule.model_dump(mode="json")``); refuse what the engine cannot do as the spec says
      with a ``KeelError`` naming the field and the fix;
    - ``get(id)``, ``list()``, ``pause(id)``, ``resume(id)``: the state, ``{"schedule": spec,
      "paused", "runs", "failures", "last_fire", "next_fire", "created_at"}`` (epoch seconds),
      and ``"skipped"`` when the engine counts ticks skipped for overlap; an unknown id raises
      ``keel.NotFoundError``;
    - ``remove(id)``; ``trigger(id)`` and ``backfill(id, start, end)``: a dict saying what was done.

    :returns: the engine, or ``None``; the first plugin that answers keeps them.

    Example::

        @keel.hookimpl(optionalhook=True)
        def keel_scheduler_schedules(runtime):
            if runtime.stack.choice("runner").name == "temporal":
                return TemporalSchedules(...)
            return None
    """
    raise NotImplementedError
