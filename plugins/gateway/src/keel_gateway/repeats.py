"""What a product log must not say twice after a restart.

A previous process kept each product event with the seq of the RuntimeEvent it was projected from
(``GatewayState.kept_products``). When this process finds the execution, the execution may tell
those RuntimeEvents again: a Temporal execution replays its steps and wait from the store, seq for
seq as every follower sees them; a found TriggerFlow execution says ``execution.started`` again.
Projected again, they would reach the log, its readers and push channels (with new product seqs,
so ``X-Keel-Delivery`` does not catch them) a second time. :class:`Repeats` tells which are repeats.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from keel import ProductEvent

__all__ = ["Repeats"]

_SAME = ("type", "message", "percent", "data", "waiting_for")


def _same(kept: ProductEvent, event: ProductEvent) -> bool:
    return kept.model_dump(mode="json", include=set(_SAME)) == event.model_dump(mode="json", include=set(_SAME))


class Repeats:
    """Which events of a re-projection a previous process emitted and kept already.

    A re-projection tells again a prefix of what was kept: an event is a repeat while its source
    seq is at or below the highest kept one and it projects to the very event kept for that source
    seq (a ``task.partial`` there is one too: never kept, but emitted then). The first event that is
    not (a source seq past them, or another event at that seq: a runner whose found execution
    numbers its events anew) and all after it are new. One exception, as docs/service.md promises:
    the wait the kept events end at is said once more, if the execution is still at it.
    """

    def __init__(self, kept: dict[int, ProductEvent], last: ProductEvent | None):
        self.kept = kept  #: source seq -> the product event kept for it
        self.top = max(kept, default=0)
        self.last = last  # the last event kept
        self.active = bool(kept)

    def repeat(self, source: int | None, event: ProductEvent, *, waiting: bool) -> bool:
        """Whether ``event``, projected from the RuntimeEvent with seq ``source``, is a repeat;
        ``waiting``: the execution is waiting now."""
        if not self.active:
            return False
        if source is None or source > self.top:
            self.active = False
            return False
        if event.type == "task.partial":
            return True
        kept = self.kept.get(source)
        if kept is None or not _same(kept, event):
            self.active = False
            return False
        if kept is self.last and event.type == "task.waiting" and waiting:
            self.active = False
            return False  # the question shown again: what it waits for, with the next seq
        return True
