"""The entry point ``devtools`` (group ``keel``): records every RuntimeEvent, adds ``keel devtools``
and ``keel replay``. Cheap to import: the recorder, its database and the web UI load on first use."""

from __future__ import annotations

import weakref
from typing import Any

import keel

# which recorder each runtime's events go to (its stack's [settings.devtools] decide)
_observers: weakref.WeakKeyDictionary[keel.Runtime, Any] = weakref.WeakKeyDictionary()


@keel.hookimpl
def keel_on_runtime_event(event: keel.RuntimeEvent, runtime: keel.Runtime) -> None:
    observe = _observers.get(runtime)
    if observe is None:
        from keel_devtools.record import recorder_for

        observe = _observers[runtime] = recorder_for(runtime)
    if observe is not False:
        observe(event)


def _reset() -> None:
    """Forget which recorder each runtime uses (``configure()`` installs a new one)."""
    _observers.clear()


@keel.hookimpl
def keel_commands(cli: Any) -> None:
    from keel_devtools.cli import devtools, replay

    cli.add_command(devtools)
    cli.add_command(replay)
