"""The recorder's writing side: masking, pricing, step paths and SQLite, off the execution's process.

:class:`Sink` turns batches of events (each one's JSON text, as bytes) into rows: it masks the
values of secret keys, then writes the batch in one transaction and applies retention. By default
it runs in a process of its own (``python -m keel_devtools.writer``), so that none of that work
competes with the executions for the GIL; the recorder ships it batches over a pipe.

The pipe speaks lines (an event's JSON text has no raw newline):

- ``{...}`` an event's JSON text, already redacted by the user's redactor functions (sent when
  there are some: they run in the recorder's process, Python callables cannot travel);
- ``M<n> <count>`` followed by ``n`` bytes: a batch of ``count`` events in
  :mod:`keel_devtools.packing`'s compact form (what the recorder sends when there is no redactor
  of the user's): this process makes their JSON text, byte for byte what the recorder's process
  would have made; a batch that cannot be read is counted as failed and the writer goes on;
- ``D{"execution id": n, ...}`` events the recorder dropped, per execution;
- ``E`` the end of a batch: write what came since the last one;
- ``F<n>`` write everything received, then answer ``A<n> <written> <failed> <cpu seconds>`` on
  stdout (the recorder's ``flush``).

The first line is the configuration (:class:`SinkConfig` as JSON). End of input: write what is
pending, close the file, exit. A crash of the recorder's process therefore loses only what it had
not shipped yet (at most one interval's batch); a crash of this process loses the batch in flight.
"""

from __future__ import annotations

import gc
import json
import logging
import signal
import sys
import time
from typing import IO, Any

from pydantic import BaseModel, ConfigDict

from keel_devtools import packing
from keel_devtools.db import RecordingDB
from keel_devtools.prices import Price, PriceTable
from keel_devtools.redact import mask_keys, secret_pattern

__all__ = ["Sink", "SinkConfig", "main"]

log = logging.getLogger("keel.devtools")


#: a packed event as the writer holds it: its top-level fields (None: it travelled as JSON text), its JSON text
Packed = tuple[dict[str, Any] | None, bytes]


class SinkConfig(BaseModel):
    """What the writing side needs to know: where, which keys to mask, prices, retention."""

    model_config = ConfigDict(extra="forbid")

    path: str
    keys: list[str]
    prices: dict[str, Price] | None = None  # None: the defaults plus KEEL_DEVTOOLS_PRICES
    max_age: float | None = None  # seconds
    max_bytes: int | None = None
    retain_every: float = 60.0


class Sink:
    """Writes batches of events' JSON text to a :class:`RecordingDB`, masked."""

    def __init__(self, config: SinkConfig, db: RecordingDB | None = None):
        self.config = config
        prices = PriceTable(config.prices, defaults=False) if config.prices is not None else None
        self.db = db or RecordingDB(config.path, prices=prices)
        self._keys = frozenset(config.keys)
        self._secret = secret_pattern(self._keys)
        self.written = 0
        self.failed = 0
        self._last_retention = 0.0

    def _masked(self, text: str) -> str | None:
        """The event's text masked, or ``None`` when there is nothing to mask (the text as it is)."""
        if '"kind":"model.delta"' in text[:100] or not self._secret.search(text.lower()):
            # the common case: no key to mask, no second pass (a delta is a piece of text, with no
            # keys of its own: a secret key in it is not one the masking could find anyway)
            return None
        return json.dumps(mask_keys(json.loads(text), self._keys), ensure_ascii=False, separators=(",", ":"))

    def write(self, lines: list[bytes | Packed], drops: dict[str, int] | None = None) -> None:
        """Mask and write one batch in one transaction; a failure is logged and counted. A line is
        an event's JSON text, or ``(top-level fields or None, JSON text)`` from a packed batch."""
        if not lines and not drops:
            return
        rows: list[str | tuple[dict[str, Any], str]] = []
        for line in lines:
            try:
                fields, data = line if isinstance(line, tuple) else (None, line)
                text = data.decode("utf-8", "replace")
                masked = self._masked(text)
                if masked is not None:
                    rows.append(masked)
                elif fields is not None:  # the text is the fields' JSON: ingest reads them (payload too), not the text
                    rows.append((fields, text))
                else:
                    rows.append(text)
            except ValueError:  # not JSON: counted, the rest of the batch goes on
                self.failed += 1
                log.exception("DevTools: an event could not be read")
        try:
            self.db.ingest(rows, drops)
            self.written += len(rows)
        except Exception:
            self.failed += len(rows)
            log.exception("DevTools: a batch of %d events could not be written to %s", len(rows), self.db.path)
        self.retain()

    def retain(self, *, force: bool = False) -> None:
        config = self.config
        now = time.monotonic()
        if not force and now - self._last_retention < config.retain_every:
            return
        self._last_retention = now
        if config.max_age is None and config.max_bytes is None:
            return
        try:
            self.db.purge(max_age=config.max_age, max_bytes=config.max_bytes)
        except Exception:
            log.exception("DevTools: retention could not be applied to %s", self.db.path)


#: the writer process collects garbage itself once per this many events (see :class:`_Collector`)
COLLECT_EVERY = 20_000


class _Collector:
    """Garbage collection in the writer process: by hand, at a bounded cadence.

    A batch is decoded all at once (``orjson.loads`` of the whole array: a dict per event and per
    nested object), and the automatic collector, which counts allocations, runs in the middle of
    that: each run traverses every young container still alive, and every few runs every object
    of the process. That was 20 to 30% of this process's CPU on the bench's workload. What the
    writer builds is acyclic (JSON values, events whose ``__dict__`` is such a value, rows of
    strings and numbers): reference counting frees it all once a batch is written. So what
    start-up made (modules, the serializer, the sink) is frozen, never traversed again, the
    automatic collector is off, and a full collection runs after every ``every`` events handled:
    the cycles a rare path makes (an exception's traceback when a batch fails, logging) are freed
    then, so garbage stays bounded by the work done, whatever the process's life. Only in the
    writer process: a recorder writing from a thread of the execution's process leaves that
    process's collector alone.
    """

    def __init__(self, every: int) -> None:
        self.every = every
        self.pending = 0
        self._was_enabled = gc.isenabled()
        gc.collect()
        gc.freeze()
        gc.disable()

    def tick(self, events: int) -> None:
        self.pending += events
        if self.pending >= self.every:
            self.pending = 0
            gc.collect()

    def stop(self) -> None:
        gc.unfreeze()
        if self._was_enabled:
            gc.enable()


def serve(source: IO[bytes], answer: IO[bytes], *, collect_every: int | None = None) -> None:
    """Read the pipe until its end (see the module's docstring). ``collect_every``: collect
    garbage by hand, once per that many events (the writer process; see :class:`_Collector`)."""
    config = SinkConfig.model_validate_json(source.readline())
    sink = Sink(config)
    pending: list[bytes | Packed] = []
    drops: dict[str, int] = {}
    collector = _Collector(collect_every) if collect_every else None
    try:
        while line := source.readline():
            head = line[:1]
            if head == b"{":
                pending.append(line.rstrip(b"\n"))
            elif head == b"M":
                size, _, count = line[1:].partition(b" ")
                data = source.read(int(size))
                if len(data) < int(size):  # the recorder's process died mid-batch: the batch in flight is lost
                    break
                try:
                    items, failed = packing.decode_items(data)
                except ValueError:  # not a JSON array (an orjson.Fragment of bad JSON in a payload): this batch only
                    log.exception("DevTools: a batch of %s events could not be read; they are not recorded", count)
                    sink.failed += int(count or 0)
                    continue
                pending.extend(items)
                sink.failed += failed
            elif head == b"E":
                sink.write(pending, drops)
                handled = len(pending) + 1  # a batch of drops only is work too
                pending, drops = [], {}
                if collector is not None:
                    collector.tick(handled)  # once the batch is freed: a collection does not traverse it
            elif head == b"D":
                for key, count in json.loads(line[1:]).items():
                    drops[key] = drops.get(key, 0) + int(count)
            elif head == b"F":
                sink.write(pending, drops)
                handled = len(pending) + 1
                pending, drops = [], {}
                if collector is not None:
                    collector.tick(handled)
                token = line[1:].strip().decode()
                answer.write(f"A{token} {sink.written} {sink.failed} {time.process_time():.6f}\n".encode())
                answer.flush()
        sink.write(pending, drops)
    finally:
        sink.db.close()
        if collector is not None:
            collector.stop()


def main() -> None:
    # Ctrl-C reaches the whole process group: the recorder's process decides when this one ends
    # (it closes the pipe after its last flush), so an interrupted run still gets written
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="keel-devtools writer: %(message)s")
    serve(sys.stdin.buffer, sys.stdout.buffer, collect_every=COLLECT_EVERY)


def write_config(config: SinkConfig) -> bytes:
    return config.model_dump_json().encode() + b"\n"


def config_from(path: str, keys: frozenset[str], prices: PriceTable | None, retention: Any) -> SinkConfig:
    return SinkConfig(
        path=path,
        keys=sorted(keys),
        prices=dict(prices._prices) if prices is not None else None,
        max_age=retention.max_age_days * 86400 if retention.max_age_days else None,
        max_bytes=int(retention.max_megabytes * 1_000_000) if retention.max_megabytes else None,
        retain_every=retention.every_seconds,
    )


if __name__ == "__main__":
    main()
