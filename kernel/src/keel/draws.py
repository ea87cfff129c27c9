"""Draws: the clock readings, random numbers and ids an execution takes, recorded.

Code that runs inside an execution (an agent's actions, its output handling) and reads the clock,
draws a random number or makes an id through these functions leaves a ``draw`` RuntimeEvent
(payload ``kind``: ``clock``, ``random`` or ``id``, and the ``value``). A replay (DevTools) serves
the recorded values back in the same order, so code that branches on them takes the same path.
Outside an execution they are the plain ``time.time()``, ``random.random()`` and a random hex id.

    from keel import draws

    @keel.action(risk="write")
    def open_ticket(title: str) -> dict:
        "Open a ticket."
        return {"id": draws.uuid(), "opened_at": draws.now(), "title": title}
"""

from __future__ import annotations

import random as _random
import time
import uuid as _uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

__all__ = ["Drawer", "drawing", "now", "random", "uuid"]

#: ``drawer(kind, real)`` returns the value to use (and records it); ``real()`` draws a fresh one
Drawer = Callable[[str, Callable[[], Any]], Any]

_drawer: ContextVar[Drawer | None] = ContextVar("keel_drawer", default=None)


def _draw(kind: str, real: Callable[[], Any]) -> Any:
    drawer = _drawer.get()
    return real() if drawer is None else drawer(kind, real)


def now() -> float:
    """Seconds since the epoch (``time.time()``), recorded when inside an execution."""
    return float(_draw("clock", time.time))


def random() -> float:
    """A number in [0, 1) (``random.random()``), recorded when inside an execution."""
    return float(_draw("random", _random.random))


def uuid() -> str:
    """A random 32-hex-digit id, recorded when inside an execution."""
    return str(_draw("id", lambda: _uuid.uuid4().hex))


@contextmanager
def drawing(drawer: Drawer) -> Iterator[None]:
    """Route the draws made in this context (and the tasks it starts) through ``drawer``."""
    token = _drawer.set(drawer)
    try:
        yield
    finally:
        _drawer.reset(token)
