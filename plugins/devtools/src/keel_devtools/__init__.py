"""Keel DevTools: every execution recorded, seen, compared and replayed, locally.

Installing ``keel-devtools`` is enough to record: its ``keel_on_runtime_event`` observer writes
every RuntimeEvent to ``.keel/devtools.db`` (or ``KEEL_DEVTOOLS_DB``). See docs/observability.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from keel import lazy_exports

if TYPE_CHECKING:
    from keel_devtools.db import ExecutionFilter, RecordingDB, RecordingError
    from keel_devtools.exchange import (
        FORMAT,
        VERSION,
        Recording,
        export_execution,
        import_execution,
        read_execution,
        recordings,
    )
    from keel_devtools.prices import DEFAULT_PRICES, Price, PricesError, PriceTable
    from keel_devtools.record import (
        DevToolsSettings,
        Recorder,
        RecorderSettings,
        Retention,
        configure,
        default_path,
        recorder,
    )
    from keel_devtools.redact import DEFAULT_SECRET_KEYS, MASK, Redactor, mask_keys
    from keel_devtools.replayer import ModelComparison, ReplayDivergence, ReplayError, ReplayResult, compare, replay

__all__ = [
    "DEFAULT_PRICES",
    "DEFAULT_SECRET_KEYS",
    "FORMAT",
    "MASK",
    "ModelComparison",
    "VERSION",
    "DevToolsSettings",
    "ExecutionFilter",
    "Price",
    "PriceTable",
    "PricesError",
    "Recorder",
    "RecorderSettings",
    "Recording",
    "RecordingDB",
    "RecordingError",
    "Redactor",
    "ReplayDivergence",
    "ReplayError",
    "ReplayResult",
    "Retention",
    "configure",
    "compare",
    "default_path",
    "export_execution",
    "import_execution",
    "mask_keys",
    "read_execution",
    "recorder",
    "recordings",
    "replay",
]

#: loaded on first use: the entry point (keel_devtools.plugin) imports this package, and discovery
#: (`keel plugins`, every `keel` start) must not import the database, recorder and replay modules
_LAZY = {
    "ExecutionFilter": "keel_devtools.db",
    "RecordingDB": "keel_devtools.db",
    "RecordingError": "keel_devtools.db",
    "FORMAT": "keel_devtools.exchange",
    "VERSION": "keel_devtools.exchange",
    "Recording": "keel_devtools.exchange",
    "export_execution": "keel_devtools.exchange",
    "import_execution": "keel_devtools.exchange",
    "read_execution": "keel_devtools.exchange",
    "recordings": "keel_devtools.exchange",
    "DEFAULT_PRICES": "keel_devtools.prices",
    "Price": "keel_devtools.prices",
    "PricesError": "keel_devtools.prices",
    "PriceTable": "keel_devtools.prices",
    "DevToolsSettings": "keel_devtools.record",
    "Recorder": "keel_devtools.record",
    "RecorderSettings": "keel_devtools.record",
    "Retention": "keel_devtools.record",
    "configure": "keel_devtools.record",
    "default_path": "keel_devtools.record",
    "recorder": "keel_devtools.record",
    "DEFAULT_SECRET_KEYS": "keel_devtools.redact",
    "MASK": "keel_devtools.redact",
    "Redactor": "keel_devtools.redact",
    "mask_keys": "keel_devtools.redact",
    "ModelComparison": "keel_devtools.replayer",
    "ReplayDivergence": "keel_devtools.replayer",
    "ReplayError": "keel_devtools.replayer",
    "ReplayResult": "keel_devtools.replayer",
    "compare": "keel_devtools.replayer",
    "replay": "keel_devtools.replayer",
}


def __getattr__(name: str) -> Any:
    return _lazy(name)


_lazy = lazy_exports(globals(), _LAZY)
