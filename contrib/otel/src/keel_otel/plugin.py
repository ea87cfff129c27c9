"""The entry point ``otel`` (group ``keel``): spans for every runtime whose stack asks for them.

A runtime exports when its stack has a ``[settings.otel]`` table or the environment names an OTLP
endpoint (``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, or
``OTEL_TRACES_EXPORTER``); otherwise the plugin does nothing. Runtimes with the same settings share
one exporter. Cheap to import: OpenTelemetry is imported when the first runtime needs it.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import keel

if TYPE_CHECKING:
    from keel_otel.observer import OtelObserver

__all__ = ["flush", "observer_for", "otel_wanted", "shutdown"]

log = logging.getLogger("keel_otel")

_OFF: Any = object()  # this runtime exports nothing (cached, so the check runs once per runtime)
_by_runtime: weakref.WeakKeyDictionary[keel.Runtime, Any] = weakref.WeakKeyDictionary()
_by_settings: dict[str, OtelObserver] = {}  # one exporter per distinct configuration
_lock = threading.Lock()


def observer_for(runtime: keel.Runtime) -> OtelObserver | None:
    """The observer exporting ``runtime``'s events, built on first use; ``None`` when it exports
    nothing. Bad settings raise :class:`keel.StackError` naming the key and the fix."""
    found = _by_runtime.get(runtime)
    if found is not None:
        return None if found is _OFF else found  # type: ignore[no-any-return]
    with _lock:
        table = runtime.stack.settings("otel")
        if not otel_wanted(table):
            _by_runtime[runtime] = _OFF
            return None
        from keel_otel.observer import OtelObserver
        from keel_otel.settings import OtelSettings

        settings = OtelSettings.parse(table)
        key = settings.model_dump_json()
        observer = _by_settings.get(key)
        if observer is None:
            observer = _by_settings[key] = OtelObserver(settings)
        _by_runtime[runtime] = observer
        return observer


@keel.hookimpl
def keel_on_runtime_event(event: keel.RuntimeEvent, runtime: keel.Runtime) -> None:
    found = _by_runtime.get(runtime)
    if found is _OFF:
        return
    if found is None:
        try:
            found = observer_for(runtime)
        except keel.KeelError as err:  # said once, not once per event
            _by_runtime[runtime] = _OFF
            log.error("keel-otel exports nothing for this runtime: %s", err)
            return
        if found is None:
            return
    found.handle(event)


def flush(timeout: float = 30.0) -> bool:
    """Export every ended span of every runtime now (before a short script exits, in tests)."""
    return all(observer.force_flush(timeout) for observer in list(_by_settings.values()))


def shutdown() -> None:
    """Flush and stop every exporter the entry point built (the SDK also does this at exit)."""
    with _lock:
        observers = list(_by_settings.values())
        _by_settings.clear()
        _by_runtime.clear()
    for observer in observers:
        observer.shutdown()


def otel_wanted(table: Mapping[str, Any] | None, environ: Mapping[str, str] | None = None) -> bool:
    """Whether a runtime exports at all: a ``[settings.otel]`` table, or an OTLP endpoint (or an
    ``OTEL_TRACES_EXPORTER``) in the environment; ``OTEL_SDK_DISABLED=true`` and ``enabled = false``
    turn it off. Installed but unconfigured, the plugin does nothing (and costs nothing)."""
    env = environ if environ is not None else os.environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if table:
        return bool(table.get("enabled", True))
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    return bool(exporter or env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
