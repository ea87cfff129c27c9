"""The entry point ``devtools`` (group ``keel``): records every RuntimeEvent, adds ``keel devtools``
and ``keel replay``. Cheap to import: the recorder, its database and the web UI load on first use."""

from __future__ import annotations

import weakref
from typing import Any

import keel

# which recorder each runtime's events go to (its stack's [settings.devtools] decide)
_observers: weakref.WeakKeyDictionary[keel.Runtime, Any] = weakref.WeakKeyDictionary()


# the last runtime seen (weakly: a closed runtime is not kept alive) and its observer: events come
# in runs from one runtime, and an identity check costs less per event than a weak-dictionary look-up
_last: tuple[Any, Any] = (lambda: None, None)


# inline (keel.inline_observer): the bus calls it from publish, without the dispatcher's per-event
# hop through a queue and the event loop; all it does per event is one deque append (Recorder.observe)
@keel.hookimpl
@keel.inline_observer
def keel_on_runtime_event(event: keel.RuntimeEvent, runtime: keel.Runtime) -> None:
    global _last
    last_runtime, observe = _last
    if last_runtime() is not runtime:
        observe = _observers.get(runtime)
        if observe is None:
            from keel_devtools.record import recorder_for

            observe = _observers[runtime] = recorder_for(runtime)
        _last = (weakref.ref(runtime), observe)
    if observe is not False:
        observe(event)


@keel.hookimpl
def keel_model_prices() -> dict[str, Any]:
    # the table DevTools prices recordings with also prices the kernel's cost budgets
    from keel_devtools.prices import DEFAULT_PRICES

    return {name: price.model_dump() for name, price in DEFAULT_PRICES.items()}


def _reset() -> None:
    """Forget which recorder each runtime uses (``configure()`` installs a new one)."""
    global _last
    _observers.clear()
    _last = (lambda: None, None)


@keel.hookimpl
def keel_commands(cli: Any) -> None:
    # by reference: the commands' module loads when one runs, every other `keel` start goes without it
    cli.add_lazy_command(
        "devtools",
        "keel_devtools.cli:devtools",
        help="Recorded executions: with no sub-command, serve the local web UI (127.0.0.1 by default).",
    )
    cli.add_lazy_command(
        "replay",
        "keel_devtools.cli:replay",
        help="Re-run recorded executions against today's code: an execution ID, a FILE, or a DIR of files.",
    )


@keel.hookimpl
def keel_doctor_checks() -> list[keel.DoctorCheck]:
    from keel_devtools.doctor_rows import check_recorded_state

    return [
        keel.DoctorCheck(
            name="devtools.recorded-state", row="state", title="recorded state holds no large values",
            check=check_recorded_state,
        )
    ]  # fmt: skip
