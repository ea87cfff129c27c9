"""The compact form the recorder ships a batch of events in, and the writer turns back into JSON.

Turning an event into its JSON text with pydantic-core costs about as much as 10% of the
execution that made it (1.3 to 3.7 us an event on the bench's workload: docs/observability.md,
Recording), so the execution's process does not do it. :func:`encode` hands the writer process
each event's fields as one JSON array written by orjson in one C call per batch (about
0.3 us an event, no Python call per event or per value): the writer (:func:`decode`) reads the
array back, rebuilds each event with :meth:`keel.RuntimeEvent.unchecked` and serializes it with
pydantic-core, so the text it writes is byte for byte the one the execution's process would have
made. That holds because what travels are JSON values that pydantic-core writes as it would the
originals:

- ``str``, ``int`` (64 bits), ``float``, ``bool``, ``None``, ``dict`` with ``str`` keys, ``list``,
  ``tuple``, ``uuid.UUID`` and enums travel as orjson writes them (the same values, the same text);
- a few kernel models whose JSON is their fields' JSON (:data:`PLAIN_MODELS`, checked by the
  tests) travel as their fields;
- a ``datetime``, ``date``, ``time``, ``timedelta``, ``Decimal`` or ``bytes`` travels as
  ``pydantic_core.to_jsonable_python(value)``: the str pydantic-core writes for it;
- any other value (a model of the user's, a dataclass, a ``set``, a subclass of a builtin...)
  travels as the plain values of pydantic-core's JSON of it (``repr`` for what it cannot
  serialize, as in the execution's process), once checked that writing those values gives the
  same text (tests/test_packing_properties.py found where it does not: keys that collide once made
  strings, a model's own ``ser_json_inf_nan``);
- an event none of that can carry (an ``int`` past 64 bits, a key that is not a ``str``, a lone
  surrogate, a cycle, deep nesting, colliding keys, a subclass of a kernel model, a bool in
  ``Usage``'s counts, an event of a ``RuntimeEvent`` subclass) travels as its whole JSON text,
  made here by pydantic-core, as a JSON string in the same array, in order. orjson refuses such a
  value rather than changing it, and the batch's other events still travel as fields (a batch
  that fails is halved until the odd events are alone).

One value is not checked: an ``orjson.Fragment`` is written by orjson as its raw bytes (no
``default`` call to refuse it), so it changes its event's text and, when not valid JSON, makes the
batch unreadable (a ``ValueError`` in :func:`decode`: the writer process counts that batch's
events as failed and goes on); finding one would cost a walk of every value.

The writer reads the array with orjson: the array holds nothing but JSON values, so reading it
builds nothing else and runs nothing, whatever the pipe carries.
"""

from __future__ import annotations

import datetime
import decimal
import logging
import operator
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from pydantic_core import PydanticSerializationError, to_jsonable_python
from pydantic_core import to_json as _to_json

import keel

__all__ = ["PLAIN_MODELS", "decode", "decode_items", "encode"]

log = logging.getLogger("keel.devtools")

_Event = keel.RuntimeEvent

#: kernel models whose JSON is the JSON of their fields (``__dict__``): no alias, no excluded or
#: computed field, no serializer of their own (tests/test_packing.py checks each one)
PLAIN_MODELS = frozenset({keel.ModelRequest, keel.Message, keel.ToolCall, keel.ToolSchema, keel.Usage})

# datetimes, dataclasses and subclasses of builtins go through _default (pydantic's JSON form),
# not orjson's own form of them (a datetime's offset, say, is written differently)
_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS
_ONLY_EVENTS = {_Event}
_fields = operator.attrgetter("__dict__")


#: values whose JSON form pydantic-core gives as one str (or number): nothing inside them can
#: change how it is written
_SCALARS = frozenset({datetime.datetime, datetime.date, datetime.time, datetime.timedelta, decimal.Decimal, bytes,
                      bytearray})  # fmt: skip
_PLAIN_BASES = tuple(PLAIN_MODELS)
_JSON = frozenset({dict, list, tuple, str, int, float, bool, type(None)})
#: the PLAIN_MODELS fields that hold a list of a model (model_construct can put any model there)
_MODEL_LISTS: dict[type, tuple[tuple[str, type], ...]] = {
    keel.Message: (("tool_calls", keel.ToolCall),),
    keel.ModelRequest: (("messages", keel.Message), ("tools", keel.ToolSchema)),
}


#: what a value orjson will not write (orjson.JSONEncodeError is a TypeError, as is _NotAsFields),
#: one pydantic-core cannot read back (a ValueError) or nesting too deep for either
_REFUSED = (TypeError, ValueError, RecursionError)


class _NotAsFields(TypeError):
    """A value whose plain JSON values would not be written as the value itself is: its event
    travels as its JSON text (orjson re-raises this from ``default``)."""


def _default(value: Any) -> Any:
    cls = type(value)
    if cls in PLAIN_MODELS:
        # an ``int`` field holding a bool (model_construct) is written 1, the bool alone true
        if cls is keel.Usage and (type(value.input_tokens) is bool or type(value.output_tokens) is bool):
            raise _NotAsFields(cls)
        fields = value.__dict__
        for name, declared in _MODEL_LISTS.get(cls, ()):  # another model, a dataclass... there is written {}
            items = fields.get(name)
            if type(items) is list:
                for item in items:
                    if type(item) is not declared and type(item) not in _JSON:
                        raise _NotAsFields(cls)
        return fields
    if cls in _SCALARS:
        return to_jsonable_python(value, fallback=repr)
    if isinstance(value, _PLAIN_BASES):
        # a subclass of a kernel model inside one is written as the declared model (its own
        # fields dropped): only the whole event's text has that right
        raise _NotAsFields(cls)
    return _checked(value)


def _checked(value: Any) -> Any:
    """A container's JSON form as plain values, when writing those gives the same text: not so
    when keys collide once made strings (``{1: .., "1": ..}`` is written with both) or a model's
    own config writes a float as ``Infinity``/``NaN`` (not JSON: ``orjson.loads`` refuses it)."""
    text = _to_json(value, fallback=repr, inf_nan_mode="null")  # the event's config: nan is null
    plain = orjson.loads(text)
    # orjson writes plain values as pydantic-core does: the same text back means nothing was lost
    # in reading it (a key written twice, an int past 64 bits read as a float); else: as text
    if orjson.dumps(plain) != text:
        raise _NotAsFields(type(value))
    return plain


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=_default, option=_OPTIONS)


def encode(
    batch: Sequence[keel.RuntimeEvent], as_json: Callable[[keel.RuntimeEvent], bytes | None]
) -> tuple[bytes, int]:
    """``batch`` in the compact form, and how many events it holds. ``as_json(event)`` gives the
    JSON text of an event whose fields cannot travel (``None``: the event is lost, and
    ``as_json`` counted it)."""
    whole = _array(batch)
    if whole is not None:  # the common case: one C call, the array as orjson made it (no copy)
        return whole, len(batch)
    parts: list[bytes] = []
    count = _split(batch, as_json, parts)
    return b"[" + b",".join(parts) + b"]", count


def _array(events: Sequence[keel.RuntimeEvent]) -> bytes | None:
    """The events' fields as one JSON array, or ``None`` when one of them cannot travel so."""
    if set(map(type, events)) - _ONLY_EVENTS:
        return None
    try:
        return _dumps(list(map(_fields, events)))
    except _REFUSED:  # a value orjson refuses, or _default sends as text (see the module's docstring)
        return None
    except Exception:  # anything else is a bug here or in a value's own code: said, and the events go one by one
        log.exception("DevTools: a batch of %d events could not be packed; they go one by one", len(events))
        return None


def _split(
    events: Sequence[keel.RuntimeEvent], as_json: Callable[[keel.RuntimeEvent], bytes | None], parts: list[bytes]
) -> int:
    """Halves until the events that cannot travel as fields are alone: those go as their JSON
    text, every other event still as fields (one odd event costs about two passes, not one
    Python call per event of the batch). Returns how many events went into ``parts``."""
    if len(events) == 1:
        item = _one(events[0], as_json)
        if item is None:
            return 0
        parts.append(item)
        return 1
    middle = len(events) // 2
    count = 0
    for half in (events[:middle], events[middle:]):
        array = _array(half)
        if array is not None:
            parts.append(array[1:-1])
            count += len(half)
        else:
            count += _split(half, as_json, parts)
    return count


def _one(event: keel.RuntimeEvent, as_json: Callable[[keel.RuntimeEvent], bytes | None]) -> bytes | None:
    if type(event) is _Event:
        try:
            return _dumps(event.__dict__)
        except _REFUSED:  # as its JSON text, below
            pass
        except Exception:
            log.exception("DevTools: an event of %s could not be packed; it goes as its JSON text", event.execution_id)
    text = as_json(event)
    return None if text is None else orjson.dumps(text.decode("utf-8", "replace"))  # pydantic's JSON is UTF-8


def decode(data: bytes) -> tuple[list[bytes], int]:
    """The batch's events as JSON texts, in order, and how many could not be turned into JSON
    (each one logged)."""
    items, failed = decode_items(data)
    return [text for _fields, text in items], failed


def decode_items(data: bytes) -> tuple[list[tuple[dict[str, Any] | None, bytes]], int]:
    """:func:`decode`, each text with the event's top-level fields when they travelled as values
    (``None`` for an event that travelled as its JSON text): the writer reads the envelope from
    them instead of parsing it again. Data that is not a JSON array is a ``ValueError``."""
    items = orjson.loads(data)
    if not isinstance(items, list):
        raise ValueError(f"a packed batch is a JSON array, not {type(items).__name__}")
    _Event.model_rebuild()  # its serializer is built once (a no-op after that)
    serialize = _Event.__pydantic_serializer__.to_json
    unchecked = _Event.unchecked
    lines: list[tuple[dict[str, Any] | None, bytes]] = []
    failed = 0
    for item in items:
        if isinstance(item, str):
            lines.append((None, item.encode()))
            continue
        try:
            if not isinstance(item, dict):
                raise ValueError(f"a packed event is an object or a string, not {type(item).__name__}")
            event = unchecked(item)
            try:
                line = serialize(event)
            except PydanticSerializationError:  # as in the execution's process: a value JSON cannot hold, as its repr
                line = serialize(event, fallback=repr)
            lines.append((item, line))
        except Exception:
            failed += 1
            log.exception("DevTools: an event of %s could not be recorded", _execution_of(item))
    return lines, failed


def _execution_of(item: Any) -> Any:
    return item.get("execution_id") if isinstance(item, dict) else None
