"""The compact form the recorder ships a batch of events in, and the writer turns back into JSON.

Turning an event into its JSON text costs about as much as 10% of the execution that made it
(pydantic-core, 1.3 to 3.7 us an event on the bench's workload: docs/observability.md, Recording),
so the execution's process does not do it. :func:`encode` hands the writer process each event's
fields as they are, pickled in one C call (protocol 5): builtin values (``str``, ``int`` of any
size, ``float``, ``bool``, ``None``, ``bytes``, ``bytearray``, ``dict``, ``list``, ``tuple``,
``set``, ``frozenset``) go as they are. A value that repeats from event to event (the execution
id, the trace id, the tenant, the field names, the kinds: the same objects) is written once per
batch and referred to after that. The writer process (:func:`decode`) rebuilds each event with
:meth:`keel.RuntimeEvent.unchecked` and serializes it with the same pydantic-core serializer, so
the text it writes is byte for byte the one the execution's process would have made.

Any other value is turned into JSON here, by pydantic-core, as it would have been inside the
event, and only the event's builtin values travel as they are:

- a value that cannot be a dict key (a pydantic model, the kernel's ``ModelRequest`` and its
  messages included, a dataclass, a ``dict`` or ``list`` subclass) travels as its JSON text, which
  the writer puts back in place (sending a kernel model as its class and fields instead measured
  slower: the pickler's Python callbacks cost more than pydantic-core's JSON of the same model);
- a value that can be a key (an enum, a ``datetime``, a ``UUID``, a ``Decimal``, an object
  recorded as its ``repr``) travels as its JSON-ready form (``to_jsonable_python``), what
  pydantic-core makes of it as a key and as a value;
- anything else (an event of a ``RuntimeEvent`` subclass, a value none of the above can carry):
  the whole event is serialized here and travels as its JSON text, in the same batch, in order.

The batch is a pickle of a list of items, each an event's fields (the event's own ``__dict__``)
or its JSON text (``bytes``). The writer unpickles it with an unpickler that builds nothing but
builtin values and this module's two helpers: the pipe comes from its own parent process, and even
so a batch cannot make it import or run anything else.
"""

from __future__ import annotations

import io
import logging
import pickle
import re
import secrets
from collections.abc import Callable, Sequence
from typing import Any

from pydantic_core import PydanticSerializationError, to_json, to_jsonable_python

import keel

__all__ = ["decode", "decode_items", "encode"]

log = logging.getLogger("keel.devtools")

_Event = keel.RuntimeEvent
_KEY_READY = (str, int, float, bool, type(None))


class _Unsendable(Exception):
    """A value that takes the whole event's JSON (raised inside the pickler)."""


def _raw(text: bytes) -> Any:
    """Unpickled in the writer: a value's JSON text, put back in place by :func:`decode`."""
    return _Raws.current.add(text)


def _same(value: Any) -> Any:
    """Unpickled in the writer: a value's JSON-ready form, as it is."""
    return value


class _Pickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        # called only for what pickle does not write natively (builtins never come here)
        if obj is _raw or obj is _same:
            return NotImplemented  # pickled by reference (a module-level name)
        if type(obj).__hash__ is None:  # cannot be a dict key: its JSON text, put back in place
            return _raw, (to_json(obj, fallback=repr),)
        ready = to_jsonable_python(obj, fallback=repr)
        if type(ready) in _KEY_READY:
            return _same, (ready,)
        raise _Unsendable


def _dumps(items: list[Any]) -> bytes:
    buffer = io.BytesIO()
    _Pickler(buffer, 5).dump(items)
    return buffer.getvalue()


def encode(
    batch: Sequence[keel.RuntimeEvent], as_json: Callable[[keel.RuntimeEvent], bytes | None]
) -> tuple[bytes, int]:
    """``batch`` in the compact form, and how many events it holds. ``as_json(event)`` gives the
    JSON text of an event whose fields cannot travel (``None``: the event is lost, and
    ``as_json`` counted it)."""
    if {type(event) for event in batch} <= {_Event}:
        try:
            return _dumps([event.__dict__ for event in batch]), len(batch)  # the common case: one C call
        except Exception:  # some event's fields cannot travel: find which
            pass
    items: list[Any] = []
    for event in batch:
        if type(event) is _Event:
            try:
                _dumps([event.__dict__])
                items.append(event.__dict__)
                continue
            except Exception:
                pass
        text = as_json(event)
        if text is not None:
            items.append(text)
    return _dumps(items), len(items)


class _Raws:
    """The JSON texts of one batch's values, each standing in its event as a unique string."""

    current: _Raws

    def __init__(self) -> None:
        self.nonce = secrets.token_hex(16)
        self.texts: list[bytes] = []
        self.pattern = re.compile(rb'"\\u0000%s:(\d+)"' % self.nonce.encode())

    def add(self, text: bytes) -> str:
        self.texts.append(text)
        return f"\x00{self.nonce}:{len(self.texts) - 1}"

    def put_back(self, line: bytes) -> bytes:
        if not self.texts or self.nonce.encode() not in line:
            return line
        return self.pattern.sub(lambda match: self.texts[int(match[1])], line)


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == __name__ and name in ("_raw", "_same"):
            return globals()[name]
        raise pickle.UnpicklingError(f"DevTools' writer builds no {module}.{name}")


def decode(data: bytes) -> tuple[list[bytes], int]:
    """The batch's events as JSON texts, in order, and how many could not be turned into JSON
    (each one logged)."""
    items, failed = decode_items(data)
    return [text for _fields, text in items], failed


def decode_items(data: bytes) -> tuple[list[tuple[dict[str, Any] | None, bytes]], int]:
    """:func:`decode`, each text with the event's top-level fields when they travelled as values
    (``None`` for an event that travelled as its JSON text): the writer reads the envelope from
    them instead of parsing it again."""
    _Event.model_rebuild()  # its serializer is built once (a no-op after that)
    serialize = _Event.__pydantic_serializer__.to_json
    unchecked = _Event.unchecked
    raws = _Raws.current = _Raws()
    items = _Unpickler(io.BytesIO(data)).load()
    lines: list[tuple[dict[str, Any] | None, bytes]] = []
    failed = 0
    for item in items:
        if isinstance(item, bytes):
            lines.append((None, item))
            continue
        try:
            event = unchecked(item)
            try:
                line = serialize(event)
            except PydanticSerializationError:  # as in the execution's process: a value JSON cannot hold, as its repr
                line = serialize(event, fallback=repr)
            lines.append((item, raws.put_back(line)))
        except Exception:
            failed += 1
            log.exception("DevTools: an event of %s could not be recorded", _execution_of(item))
    return lines, failed


def _execution_of(item: Any) -> Any:
    return item.get("execution_id") if isinstance(item, dict) else None
