"""The entry point ``devtools`` (group ``keel``): records every RuntimeEvent, adds ``keel devtools``
and ``keel replay``. Cheap to import: the recorder, its database and the web UI load on first use."""

from __future__ import annotations

from typing import Any

import keel


def _bind(runtime: keel.Runtime) -> Any:
    """Once per runtime (its stack's ``[settings.devtools]`` decide): the recorder's ``observe``,
    which the bus then calls with each event directly, or ``None`` when nothing is recorded."""
    from keel_devtools.record import recorder_for

    observe = recorder_for(runtime)
    return observe or None


# inline (keel.inline_observer): the bus calls the recorder's observe from publish, bound once per
# runtime: per event, one bounded deque append (Recorder.observe), no look-up, no hop through a queue
@keel.hookimpl
@keel.inline_observer(bind=_bind)
def keel_on_runtime_event(event: keel.RuntimeEvent, runtime: keel.Runtime) -> None:
    # what a direct pm.hook call runs (the bus calls the bound observe instead)
    observe = _bind(runtime)
    if observe is not None:
        observe(event)


@keel.hookimpl
def keel_model_prices() -> dict[str, Any]:
    # the table DevTools prices recordings with also prices the kernel's cost budgets
    from keel_devtools.prices import DEFAULT_PRICES

    return {name: price.model_dump() for name, price in DEFAULT_PRICES.items()}


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
