"""A part of one flow execution (its journal, its waits) that refers back to the execution."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from keel_triggerflow._engine import FlowExecution


class ExecutionPart:
    """Held by its execution, it holds the execution weakly (``x``): a strong reference back made a
    reference cycle that kept every finished execution until a full garbage collection."""

    def __init__(self, execution: FlowExecution):
        self._x = weakref.ref(execution)

    @property
    def x(self) -> FlowExecution:
        x = self._x()
        if x is None:  # pragma: no cover - the execution owns this object and outlives its use
            raise RuntimeError("the flow execution is gone")
        return x
