"""TriggerFlow on Temporal: ``runner = "temporal"`` runs a flow definition as a Temporal workflow.

    [runner]
    driver = "temporal"
    address = "127.0.0.1:7233"
    task_queue = "keel"

See ``docs/scale-out.md``. Names load on first use: Keel's plugin discovery imports
``keel_runner_temporal.plugin`` only, and Temporal's workflow sandbox re-imports this package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keel_runner_temporal.activities import ChunkContext
    from keel_runner_temporal.devserver import DevServer, DevServerError, dev_server, find_cli
    from keel_runner_temporal.errors import TemporalExecutionFailed, TemporalRunnerError, TemporalUnavailableError
    from keel_runner_temporal.execution import TemporalExecution
    from keel_runner_temporal.runner import TemporalRunner, TemporalRunnerOptions

_WHERE = {
    **{name: "devserver" for name in ("DevServer", "DevServerError", "dev_server", "find_cli")},
    "ChunkContext": "activities",
    **{name: "errors" for name in ("TemporalExecutionFailed", "TemporalRunnerError", "TemporalUnavailableError")},
    "TemporalExecution": "execution",
    **{name: "runner" for name in ("TemporalRunner", "TemporalRunnerOptions")},
}

__all__ = [
    "ChunkContext",
    "DevServer",
    "DevServerError",
    "TemporalExecution",
    "TemporalExecutionFailed",
    "TemporalRunner",
    "TemporalRunnerError",
    "TemporalRunnerOptions",
    "TemporalUnavailableError",
    "dev_server",
    "find_cli",
]


# Not keel.lazy_exports: Temporal's workflow sandbox imports this package, and importing keel
# there fails (anyio is restricted), so this module imports nothing of keel.
def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'keel_runner_temporal' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"keel_runner_temporal.{_WHERE[name]}"), name)
    globals()[name] = value
    return value
