"""The recorder: every RuntimeEvent of every execution, written off the execution's path.

``observe(event)`` is the whole cost an execution pays on the bus's dispatcher: one bounded
``deque`` append, no serialization, no redaction. A shipping thread wakes every ``interval``
seconds and hands the queued events, in one burst, to the writer process
(:mod:`keel_devtools.writer`), in a compact form (:mod:`keel_devtools.packing`: the events' fields
pickled in one C call, the values repeated across the batch sent once); the writer process turns
them into their JSON text (byte for byte what pydantic-core makes of them here), masks secret
keys, prices the answers, keeps the executions' summaries and writes to SQLite: that work never
competes with the executions for the GIL. With redactor functions of the user's, the shipping
thread serializes each event here and runs them on its JSON form (a Python function cannot
travel to the writer). With ``process = false`` the writer is a thread of this process instead
(the same code, sharing the GIL), fed the events' JSON text.

Guarantees: the queue is bounded and a full queue drops the event and counts it, per execution and
in total (shown by ``keel devtools`` beside the execution); nothing here ever blocks or fails an
execution; secrets are masked, and the user's redactors run, before anything is written;
:meth:`Recorder.close` (run at a clean exit) writes everything queued. A crash of the execution's
process loses what was still queued (at most one interval's events); a crash of the writer
process loses the batch in flight, and the recorder goes on with a writer thread.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import PydanticSerializationError

import keel
from keel_devtools import packing
from keel_devtools.db import RecordingDB
from keel_devtools.prices import PriceTable
from keel_devtools.redact import Redactor, mask_keys, secret_keys
from keel_devtools.writer import Sink, SinkConfig, config_from, write_config

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
    batch: int = Field(default=5_000, ge=1, description="events shipped per batch (one transaction), at most")
    interval: float = Field(default=0.2, gt=0, le=5, description="seconds between the shipper's bursts")
    redact_keys: list[str] = Field(default_factory=list, description="more keys whose values are masked")
    mask_default_keys: bool = Field(default=True, description="mask password, api_key, authorization, ...")
    retention: Retention = Field(default_factory=Retention)
    process: bool = Field(
        default=True,
        description="write from a process of its own (false: a thread of this one, which shares the GIL)",
    )


def default_path() -> Path:
    """``KEEL_DEVTOOLS_DB``, or ``.keel/devtools.db`` under the current directory."""
    return Path(os.environ.get("KEEL_DEVTOOLS_DB") or Path(".keel") / "devtools.db")


class _Channel(Protocol):
    written: int
    failed: int
    sent: int
    cpu: float | None  # the writing side's CPU seconds, when it is a process of its own

    def send(self, lines: list[bytes], drops: dict[str, int]) -> None: ...
    def sync(self, timeout: float) -> bool: ...
    def close(self, timeout: float) -> None: ...


class _ThreadChannel:
    """The writing side in this process: the shipper writes each batch itself."""

    cpu = None

    def __init__(self, sink: Sink):
        self._sink = sink
        self.sent = 0

    @property
    def written(self) -> int:
        return self._sink.written

    @property
    def failed(self) -> int:
        return self._sink.failed

    def send(self, lines: list[bytes], drops: dict[str, int]) -> None:
        self.sent += len(lines)
        self._sink.write(lines, drops)

    def sync(self, timeout: float) -> bool:
        return True

    def close(self, timeout: float) -> None:
        self._sink.retain(force=True)


def _import_roots() -> list[str]:
    """Where this process found keel and keel_devtools (a script may have put them on sys.path)."""
    import keel_devtools

    return [str(Path(m.__file__ or "").resolve().parent.parent) for m in (keel, keel_devtools)]


def _widen(pipe: IO[bytes]) -> None:
    """Give the pipe 1 MiB (Linux; 64 KiB by default): a batch crosses in fewer hand-overs."""
    try:
        import fcntl

        fcntl.fcntl(pipe.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
    except (ImportError, OSError):
        pass


def _drops_line(drops: dict[str, int]) -> bytes:
    return b"D" + json.dumps(drops).encode() + b"\n" if drops else b""


class _ProcessChannel:
    """The writing side in a process of its own, fed over a pipe (see :mod:`keel_devtools.writer`)."""

    def __init__(self, config: SinkConfig):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([*_import_roots(), env.get("PYTHONPATH", "")])
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "keel_devtools.writer"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
        )
        self._stdin: IO[bytes] = self._proc.stdin  # type: ignore[assignment]
        _widen(self._stdin)
        self._lock = threading.Lock()  # one writer of the pipe at a time
        self._answers = threading.Condition()
        self.sent = self.written = self.failed = self._asked = self._answered = 0
        self.cpu: float | None = 0.0
        self.dead = False
        self._stdin.write(write_config(config))
        self._stdin.flush()
        self._reader = threading.Thread(target=self._read, name="keel-devtools-answers", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self._proc.stdout or ():
            if line.startswith(b"A"):
                token, written, failed, cpu = line[1:].split()
                with self._answers:
                    self._answered, self.written, self.failed = int(token), int(written), int(failed)
                    self.cpu = float(cpu)
                    self._answers.notify_all()
        with self._answers:
            self.dead = True
            self._answers.notify_all()

    def _write(self, *data: bytes, timeout: float = -1) -> bool:
        if not self._lock.acquire(timeout=timeout):
            return False
        try:
            for part in data:  # one after the other: a batch is not copied into one buffer first
                self._stdin.write(part)
            self._stdin.flush()
        finally:
            self._lock.release()
        return True

    def send(self, lines: list[bytes], drops: dict[str, int]) -> None:
        data = b"\n".join(lines) + b"\n" if lines else b""
        self._write(data + _drops_line(drops) + b"E\n")
        self.sent += len(lines)

    def send_packed(self, data: bytes, count: int, drops: dict[str, int]) -> None:
        """A batch of ``count`` events in :mod:`keel_devtools.packing`'s form."""
        self._write(b"M%d %d\n" % (len(data), count), data, _drops_line(drops) + b"E\n")
        self.sent += count

    def sync(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        self._asked += 1
        token = self._asked
        try:
            if not self._write(b"F%d\n" % token, timeout=timeout):
                return False
        except OSError:
            return False
        with self._answers:
            self._answers.wait_for(lambda: self._answered >= token or self.dead, max(deadline - time.monotonic(), 0))
            return self._answered >= token

    def close(self, timeout: float) -> None:
        try:
            with self._lock:
                self._stdin.close()
        except OSError:
            pass
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.error("DevTools: the writer process did not finish in %.0f s; stopped", timeout)
            self._proc.kill()
            self._proc.wait()
        self._reader.join(timeout)


class Recorder:
    """Writes the events it observes to a :class:`RecordingDB`, off the execution's path.

    :param path: the SQLite file (default :func:`default_path`).
    :param redactors: functions run on each event's JSON form after the secret keys are masked
        (in this process, by the shipping thread: a Python function cannot travel to the writer;
        with one, the events' JSON is made here instead of in the writer process).
    :param prices: the price table the cost of each model answer comes from (read when the
        recorder starts: the writer process holds a copy).
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
        self.path = Path(path or default_path())
        self._prices = prices
        self._db: RecordingDB | None = None
        self.redactors: list[Redactor] = list(redactors)
        self._keys = secret_keys(self.settings.redact_keys, defaults=self.settings.mask_default_keys)
        self._queue: deque[keel.RuntimeEvent] = deque()
        # 0 until the first event starts the recorder (Recorder._full): a runtime that publishes
        # nothing opens no file and starts no writer, and observe checks nothing else per event
        self._capacity = 0
        self._drops: dict[str, int] = {}
        self._drop_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._db_lock = threading.Lock()
        #: events dropped because the queue was full
        self.dropped = 0
        self._taken = 0  # events the shipper took from the queue
        self._shipper_cpu = 0.0  # CPU seconds of the shipper thread
        self._lost = 0  # events lost before the writer had them (a redactor that failed, a dead writer)
        self._retired = (0, 0)  # (written, failed) by a writer process that died
        self._channel: _Channel | None = None
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._shipping = False
        self._stop = False
        self.closed = False

    @property
    def db(self) -> RecordingDB:
        """The readers' connection to the recording (opened, and the file created, on first use)."""
        with self._db_lock:  # its own lock: _start holds _start_lock, configure() holds _lock while it closes
            if self._db is None:
                self._db = RecordingDB(self.path, prices=self._prices)
                if self.settings.process:
                    self._db.prices.frozen = (
                        "the writer process prices the answers with the table it was started with; pass "
                        "prices=PriceTable({...}) to keel_devtools.configure() or a prices file in [settings.devtools]"
                    )
            return self._db

    def _start(self) -> None:
        """Open the recording and start the writer and the shipper (on the first event)."""
        with self._start_lock:
            if self._thread is not None or self.closed:
                return
            self._config = config_from(str(self.db.path), self._keys, self._prices, self.settings.retention)
            keel.RuntimeEvent.model_rebuild()  # its serializer is built once, here, not in the shipper
            self._to_json = keel.RuntimeEvent.__pydantic_serializer__.to_json
            self._channel = self._open_channel()
            self._thread = threading.Thread(target=self._run, name="keel-devtools-recorder", daemon=True)
            self._thread.start()
            self._capacity = self.settings.capacity

    def _open_channel(self) -> _Channel:
        if self.settings.process:
            try:
                return _ProcessChannel(self._config)
            except OSError as err:
                log.error("DevTools: no writer process (%s); writing from a thread of this process", err)
        return _ThreadChannel(Sink(self._config, self.db))

    # --------------------------------------------------------------------------- observing

    def observe(self, event: keel.RuntimeEvent) -> None:
        """Queue an event; never blocks. A full queue drops the event and counts it. The bus calls
        it with every event of the runtimes bound to this recorder: a length check and an append."""
        queue = self._queue
        if len(queue) >= self._capacity:
            self._full(event)
            return
        queue.append(event)  # the shipper wakes on its own: waking it per event would cost more

    def _full(self, event: keel.RuntimeEvent) -> None:
        if self._thread is None and not self.closed:  # the first event: start, then queue it
            self._start()
            if len(self._queue) < self._capacity:
                self._queue.append(event)
                return
        current = _configured
        if self.closed and current is not None and current is not self and not current.closed:
            current.observe(event)  # a runtime bound before configure() replaced this recorder
            return
        self.dropped += 1
        key = event.execution_id or ""
        with self._drop_lock:
            self._drops[key] = self._drops.get(key, 0) + 1

    @property
    def observed(self) -> int:
        """Events observed: shipped, queued or dropped."""
        return self._taken + len(self._queue) + self.dropped

    def add_redactor(self, redactor: Redactor) -> None:
        """Run ``redactor`` on every event's JSON form before it is written."""
        self.redactors.append(redactor)

    @property
    def written(self) -> int:
        """Events the writer has written (as of its last answer: :meth:`flush` asks)."""
        return self._retired[0] + (self._channel.written if self._channel is not None else 0)

    @property
    def failed(self) -> int:
        """Events lost to an error (each one logged)."""
        return self._retired[1] + (self._channel.failed if self._channel is not None else 0) + self._lost

    # ----------------------------------------------------------------------------- shipping

    def _serialize(self, event: keel.RuntimeEvent) -> bytes:
        """The event's JSON text; with the user's redactors (secret keys masked first) if any."""
        serializer = type(event).__pydantic_serializer__
        try:
            text: bytes = serializer.to_json(event)
        except PydanticSerializationError:  # a payload value JSON cannot hold: recorded as its repr
            text = serializer.to_json(event, fallback=repr)
        if not self.redactors:
            return text  # the writer masks the secret keys
        data = mask_keys(json.loads(text), self._keys)
        for redactor in self.redactors:
            data = redactor(data)
        return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()

    def _json_or_lost(self, event: keel.RuntimeEvent) -> bytes | None:
        """:meth:`_serialize`, or ``None`` (counted, logged) when it fails."""
        try:
            return self._serialize(event)
        except Exception:  # a redactor that fails must not lose the rest of the batch
            self._lost += 1
            log.exception("DevTools: an event of %s could not be recorded", event.execution_id)
            return None

    def _lines(self, batch: list[keel.RuntimeEvent]) -> list[bytes]:
        """The batch's JSON texts (a writer thread, or a redactor of the user's). With no
        redactor and every value one JSON can hold, one comprehension over pydantic-core with no
        Python call per event."""
        if not self.redactors:
            to_json = self._to_json
            try:
                return [to_json(event) for event in batch]
            except Exception:  # the event that failed takes the slow path below, with the rest
                pass
        return [line for event in batch if (line := self._json_or_lost(event)) is not None]

    def _run(self) -> None:
        queue = self._queue
        while True:
            if not queue and not self._drops:
                if self._stop:
                    return
                # ship in bursts, not per event: a thread that wakes for every few events keeps
                # taking the GIL from the executions' thread, and that hand-over is what costs
                # (shipping every 20 ms while events come, fresher in the caches: no gain measured)
                self._wake.wait(self.settings.interval)
                self._wake.clear()
                continue
            self._shipping = True
            started = time.thread_time()
            batch = [queue.popleft() for _ in range(min(len(queue), self.settings.batch))]
            self._taken += len(batch)
            with self._drop_lock:
                drops, self._drops = self._drops, {}
            self._ship(batch, drops)
            self._shipper_cpu += time.thread_time() - started
            self._shipping = False

    def _ship(self, batch: list[keel.RuntimeEvent], drops: dict[str, int]) -> None:
        """Hand a batch to the writing side. To a writer process with no redactor of the user's to
        run, in :mod:`keel_devtools.packing`'s compact form: the writer makes the JSON, not this
        process. Otherwise each event's JSON text, made here."""
        channel = self._channel
        assert channel is not None  # the shipper runs once the recorder started
        if isinstance(channel, _ProcessChannel) and not self.redactors:
            data, count = packing.encode(batch, self._json_or_lost)
            send = lambda: channel.send_packed(data, count, drops)  # noqa: E731
        else:
            lines = self._lines(batch)
            count = len(lines)
            send = lambda: channel.send(lines, drops)  # noqa: E731
        try:
            send()
        except OSError as err:  # the writer process is gone: go on in this process
            self._retired = (self.written, self._retired[1] + channel.failed + channel.sent - channel.written)
            self._lost += count
            log.error("DevTools: the writer process stopped (%s); writing from a thread of this process", err)
            self._channel = _ThreadChannel(Sink(self._config, self.db))
            self._channel.send([], drops)

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every queued event is written; ``False`` if that took longer than ``timeout``."""
        deadline = time.monotonic() + timeout
        thread, channel = self._thread, self._channel
        if thread is None or channel is None:
            return True  # not started: nothing observed
        while self._queue or self._drops or self._shipping:
            if time.monotonic() > deadline or not thread.is_alive():
                return False
            self._wake.set()
            time.sleep(0.005)
        return self._channel.sync(max(deadline - time.monotonic(), 0.0)) if self._channel is not None else False

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued (for at most ``timeout`` seconds), stop the writer, close the file."""
        if self._stop:
            return
        self.flush(timeout)
        self._stop = self.closed = True
        self._capacity = 0  # every later observe takes the slow path: to the recorder in force, or dropped
        self._wake.set()
        with self._start_lock:  # no start after this
            thread, channel = self._thread, self._channel
        if thread is not None:
            thread.join(timeout)
        if channel is not None:
            channel.close(timeout)
        if self._db is not None:
            self._db.close()

    def stats(self) -> dict[str, Any]:
        return {
            "observed": self.observed,
            "written": self.written,
            "dropped": self.dropped,
            "failed": self.failed,
            "queued": len(self._queue),
            "writer_cpu_seconds": self._channel.cpu if self._channel is not None else None,
            # what shipping cost this process (taking batches, encoding, the pipe), on its own thread
            "shipper_cpu_seconds": self._shipper_cpu,
        }


class DevToolsSettings(RecorderSettings):
    """The stack's ``[settings.devtools]`` table: the recorder's options, and where it writes."""

    enabled: bool = Field(default=True, description="false: record nothing for this stack")
    path: str | None = Field(default=None, description="the recording file (default .keel/devtools.db)")
    prices: str | None = Field(default=None, description='a TOML file of [prices."model"] input/output USD per Mtok')
    artifact_threshold: int = Field(
        default=64 * 1024, ge=1, description="keel doctor: a recorded input, output or action result past it fails"
    )


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
    return _configured
