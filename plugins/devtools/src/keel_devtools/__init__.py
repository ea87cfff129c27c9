"""Keel DevTools: every execution recorded, seen, compared and replayed, locally.

Installing ``keel-devtools`` is enough to record: its ``keel_on_runtime_event`` observer writes
every RuntimeEvent to ``.keel/devtools.db`` (or ``KEEL_DEVTOOLS_DB``). See docs/observability.md.
"""

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
from keel_devtools.replay import ModelComparison, ReplayDivergence, ReplayError, ReplayResult, compare, replay

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
