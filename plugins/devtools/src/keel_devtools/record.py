"""The recorder: every RuntimeEvent of every execution, written off the execution's path.

``observe(event)`` is the whole cost an execution's process pays on the bus's dispatcher: one
bounded ``deque`` append. A writer thread drains the queue in batches, turns each event into its
JSON form, masks secrets, runs the user's redactors, and writes the batch in one SQLite
transaction. When the queue is full (a slow disk, a stuck writer) the event is dropped and
counted, per execution and in total; the count is written with the next batch and shown by
``keel devtools`` beside the execution. Nothing here ever blocks or fails an execution.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import PydanticSerializationError

import keel
from keel_devtools.db import RecordingDB
from keel_devtools.prices import PriceTable
from keel_devtools.redact import Redactor, mask_keys, secret_keys, secret_pattern

__all__ = [
    "DevToolsSettings",
    "Recorder",
    "RecorderSettings",
    "Retention",
    "configure",
    "default_path",
    "recorder",
    "recorder_for",
]

log = logging.getLogger("keel.devtools")


class Retention(BaseModel):
    """How long recordings are kept: by age, by size, or both (``None`` = no limit)."""

    model_config = ConfigDict(extra="forbid")

    max_age_days: float | None = Field(default=14.0, gt=0, description="forget executions older than this")
    max_megabytes: float | None = Field(default=1024.0, gt=0, description="keep the recorded events under this size")
    every_seconds: float = Field(default=60.0, gt=0, description="how often the writer applies retention")


class RecorderSettings(BaseModel):
    """The recorder's options (``configure(**options)``)."""

    model_config = ConfigDict(extra="forbid")

    capacity: int = Field(default=100_000, ge=1, description="events held in memory before new ones are dropped")
    batch: int = Field(default=5_000, ge=1, description="events written per transaction, at most")
    interval: float = Field(default=0.2, gt=0, le=5, description="seconds between the writer's bursts")
    redact_keys: list[str] = Field(default_factory=list, description="more keys whose values are masked")
    mask_default_keys: bool = Field(default=True, description="mask password, api_key, authorization, ...")
    retention: Retention = Field(default_factory=Retention)


def default_path() -> Path:
    """``KEEL_DEVTOOLS_DB``, or ``.keel/devtools.db`` under the current directory."""
    return Path(os.environ.get("KEEL_DEVTOOLS_DB") or Path(".keel") / "devtools.db")


class Recorder:
    """Writes the events it observes to a :class:`RecordingDB`, in a thread of its own.

    :param path: the SQLite file (default :func:`default_path`).
    :param redactors: functions run on each event's JSON form after the secret keys are masked.
    :param prices: the price table the cost of each model answer comes from.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        settings: RecorderSettings | None = None,
        redactors: Iterable[Redactor] = (),
        prices: PriceTable | None = None,
    ):
        self.settings = settings or RecorderSettings()
        self.db = RecordingDB(path or default_path(), prices=prices)
        self.redactors: list[Redactor] = list(redactors)
        self._keys = secret_keys(self.settings.redact_keys, defaults=self.settings.mask_default_keys)
        self._secret = secret_pattern(self._keys)
        self._queue: deque[keel.RuntimeEvent] = deque()
        self._capacity = self.settings.capacity
        self._drops: dict[str, int] = {}
        self._drop_lock = threading.Lock()
        #: events observed, events dropped because the queue was full, events written
        self.observed = 0
        self.dropped = 0
        self.written = 0
        self.failed = 0  # events lost to a write error (logged)
        self._wake = threading.Event()
        self._stop = False
        self.closed = False
        self._last_retention = 0.0
        self._thread = threading.Thread(target=self._run, name="keel-devtools-recorder", daemon=True)
        self._thread.start()

    # --------------------------------------------------------------------------- observing

    def observe(self, event: keel.RuntimeEvent) -> None:
        """Queue an event; never blocks. A full queue drops the event and counts it."""
        self.observed += 1
        queue = self._queue
        if len(queue) >= self._capacity:
            self.dropped += 1
            key = event.execution_id or ""
            with self._drop_lock:
                self._drops[key] = self._drops.get(key, 0) + 1
            return
        queue.append(event)  # the writer wakes on its own: waking it per event would cost more

    def add_redactor(self, redactor: Redactor) -> None:
        """Run ``redactor`` on every event's JSON form before it is written."""
        self.redactors.append(redactor)

    # ----------------------------------------------------------------------------- writing

    def _serialize(self, event: keel.RuntimeEvent) -> str:
        """The event's JSON text, with secrets masked and the user's redactors applied."""
        try:
            text = event.model_dump_json()
        except PydanticSerializationError:  # a payload value JSON cannot hold: recorded as its repr
            text = event.model_dump_json(fallback=repr)
        if not self.redactors and (event.kind == "model.delta" or not self._secret.search(text.lower())):
            # the common case: nothing to mask, no second pass (a delta is a piece of text, with
            # no keys of its own: a secret key in it is not one the masking could find anyway)
            return text
        data = mask_keys(json.loads(text), self._keys)
        for redactor in self.redactors:
            data = redactor(data)
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"))

    def _run(self) -> None:
        queue = self._queue
        while True:
            if not queue:
                if self._stop:
                    return
                # write in bursts, not per event: a thread that wakes for every few events keeps
                # taking the GIL from the executions' thread, and that hand-over is what costs
                self._wake.wait(self.settings.interval)
                self._wake.clear()
                self._maybe_retain()
                continue
            batch: list[keel.RuntimeEvent] = []
            take = min(len(queue), self.settings.batch)
            for _ in range(take):
                batch.append(queue.popleft())
            with self._drop_lock:
                drops, self._drops = self._drops, {}
            try:
                rows: list[tuple[dict[str, Any], str]] = []
                for event in batch:
                    try:
                        head = {
                            "kind": event.kind,
                            "execution_id": event.execution_id,
                            "seq": event.seq,
                            "time": event.time,
                            "tenant": event.tenant,
                            "trace_id": event.trace_id,
                            "source": event.source,
                        }
                        rows.append((head, self._serialize(event)))
                    except Exception:  # a redactor that fails must not lose the rest of the batch
                        self.failed += 1
                        log.exception("DevTools: an event of %s could not be recorded", event.execution_id)
                self.db.ingest(rows, drops)
                self.written += len(rows)
            except Exception:
                self.failed += len(batch)
                log.exception("DevTools: a batch of %d events could not be written to %s", len(batch), self.db.path)
            self._maybe_retain()

    def _maybe_retain(self) -> None:
        retention = self.settings.retention
        now = time.monotonic()
        if now - self._last_retention < retention.every_seconds:
            return
        self._last_retention = now
        try:
            self.db.purge(
                max_age=retention.max_age_days * 86400 if retention.max_age_days else None,
                max_bytes=int(retention.max_megabytes * 1_000_000) if retention.max_megabytes else None,
            )
        except Exception:
            log.exception("DevTools: retention could not be applied to %s", self.db.path)

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every queued event is written; ``False`` if that took longer than ``timeout``."""
        deadline = time.monotonic() + timeout
        while self.written + self.failed + len(self._queue) < self.observed - self.dropped or self._queue:
            if time.monotonic() > deadline or not self._thread.is_alive():
                return False
            self._wake.set()
            time.sleep(0.005)
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued (for at most ``timeout`` seconds), stop the writer, close the file."""
        if self._stop:
            return
        self.flush(timeout)
        self._stop = self.closed = True
        self._wake.set()
        self._thread.join(timeout)
        self.db.close()

    def stats(self) -> dict[str, int]:
        return {
            "observed": self.observed,
            "written": self.written,
            "dropped": self.dropped,
            "failed": self.failed,
            "queued": len(self._queue),
        }


class DevToolsSettings(RecorderSettings):
    """The stack's ``[settings.devtools]`` table: the recorder's options, and where it writes."""

    enabled: bool = Field(default=True, description="false: record nothing for this stack")
    path: str | None = Field(default=None, description="the recording file (default .keel/devtools.db)")
    prices: str | None = Field(default=None, description='a TOML file of [prices."model"] input/output USD per Mtok')


_configured: Recorder | None = None  # configure() wins over every stack
_by_path: dict[Path, Recorder] = {}
_lock = threading.Lock()


def _disabled_by_env() -> bool:
    return os.environ.get("KEEL_DEVTOOLS", "on").lower() in ("off", "0", "false", "no")


def _shared(path: Path, build: Any) -> Recorder:
    key = path.resolve()
    with _lock:
        found = _by_path.get(key)
        if found is None or found.closed:
            found = _by_path[key] = build()
            atexit.register(found.close)
        return found


def recorder() -> Recorder | None:
    """The process's default recorder (``configure()``'s, or one over :func:`default_path`);
    ``None`` when ``KEEL_DEVTOOLS=off``."""
    if _configured is not None and not _configured.closed:
        return _configured
    if _disabled_by_env():
        return None
    path = default_path()
    return _shared(path, lambda: Recorder(path))


def recorder_for(runtime: keel.Runtime) -> Any:
    """The ``observe`` function for a runtime's events, or ``False`` to record nothing: the
    recorder ``configure()`` installed, else the one the stack's ``[settings.devtools]`` describe."""
    if _configured is not None and not _configured.closed:
        return _configured.observe
    if _disabled_by_env():
        return False
    try:
        settings = keel.parse_options(DevToolsSettings, runtime.stack.settings("devtools"), where="[settings.devtools]")
    except keel.KeelError as err:
        log.error("DevTools records nothing for this runtime: %s", err)
        return False
    if not settings.enabled:
        return False
    path = Path(settings.path) if settings.path else default_path()
    prices = PriceTable.from_file(settings.prices) if settings.prices else None
    options = RecorderSettings.model_validate(settings.model_dump(include=set(RecorderSettings.model_fields)))
    return _shared(path, lambda: Recorder(path, settings=options, prices=prices)).observe


def configure(
    path: str | Path | None = None,
    *,
    redactors: Iterable[Redactor] = (),
    prices: PriceTable | None = None,
    **options: Any,
) -> Recorder:
    """Record every runtime's events with a recorder built from these options (closing the one
    installed before), whatever the stacks say; for tests, scripts and custom redactors.

    :param options: :class:`RecorderSettings` fields (``capacity``, ``batch``, ``redact_keys``,
        ``retention=Retention(...)``...).
    """
    global _configured
    settings = keel.parse_options(RecorderSettings, options, where="keel_devtools.configure()", error=keel.KeelError)
    with _lock:
        previous, _configured = _configured, None
        if previous is not None:
            previous.close()
        _configured = Recorder(path, settings=settings, redactors=redactors, prices=prices)
        atexit.register(_configured.close)
    from keel_devtools import plugin

    plugin._reset()
    return _configured
