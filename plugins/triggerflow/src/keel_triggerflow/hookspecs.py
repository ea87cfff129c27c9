"""TriggerFlow's own extension point: runners. keel-triggerflow adds this spec to the host through
the kernel's ``keel_addhooks`` hook, whichever order plugins load in.

A runner plugin implements the hook in a module named by an entry point in the group ``keel``::

    @keel.hookimpl
    def keel_triggerflow_runners():
        yield RunnerSpec(name="temporal", factory=lambda runtime, options: TemporalRunner(runtime, options))
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from pluggy import HookspecMarker

from keel import hookimpl as _hookimpl  # noqa: F401  (re-exported for runner authors)

if TYPE_CHECKING:
    from keel_triggerflow.runners import RunnerSpec

hookspec = HookspecMarker("keel")


@hookspec
def keel_triggerflow_runners() -> Iterable[RunnerSpec]:
    """Register TriggerFlow runners: what executes a flow definition.

    The stack's ``runner`` slot picks one by name (``runner = "local"``, the embedded default).
    A runner receives the same :class:`keel_triggerflow.TriggerFlow` definition whatever it is:
    ``local`` runs chunks in-process on anyio; a Temporal runner runs each chunk as an activity
    and each ``pause_for`` as a signal wait.

    :returns: runner specs; the same name twice is an error naming both plugins.

    Example::

        @keel.hookimpl
        def keel_triggerflow_runners():
            yield RunnerSpec(name="local", factory=LocalRunner)
    """
    raise NotImplementedError
