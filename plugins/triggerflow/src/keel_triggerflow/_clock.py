"""The clock a flow's wait deadlines and timers are measured against: ``time.time``, unless the
stack's local runner names another with ``[runner] clock = "module:attr"`` (a test or a simulation
that lets time pass without waiting for it). One per runtime, resolved on first use."""

from __future__ import annotations

import time
from collections.abc import Callable
from weakref import WeakKeyDictionary

from keel import Runtime, load_ref
from keel_triggerflow.types import FlowError

__all__ = ["Clock", "clock_of", "load_clock"]

Clock = Callable[[], float]  #: seconds since the epoch, as ``time.time``

_clocks: WeakKeyDictionary[Runtime, Clock] = WeakKeyDictionary()


def load_clock(ref: str) -> Clock:
    """The callable ``ref`` (``"module:attr"``) names; an error says how to fix anything else."""
    found = load_ref(ref, what="[runner] clock", error=FlowError)
    if not callable(found):
        raise FlowError(
            f"[runner] clock {ref!r} names {found!r}, not a function: name one that returns "
            "seconds since the epoch, as 'time:time' does"
        )
    return found  # type: ignore[no-any-return]


def clock_of(runtime: Runtime) -> Clock:
    """The clock of ``runtime``'s flows (the local runner's ``clock`` option, else ``time.time``)."""
    found = _clocks.get(runtime)
    if found is None:
        choice = runtime.stack.choice("runner")
        ref = choice.options.get("clock") if choice.name == "local" else None
        found = _clocks[runtime] = time.time if ref is None else load_clock(str(ref))
    return found
