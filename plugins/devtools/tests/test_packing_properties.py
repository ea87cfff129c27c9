"""Property tests for the compact form (packing.py): whatever an event holds, the writer's text is
byte for byte pydantic-core's JSON of the event, or the event is counted as failed; its
neighbours are never lost, reordered or changed."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import math
import os
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field, SecretStr, computed_field, field_serializer

import keel
from keel_devtools import packing

# model_construct'ed kernel models with odd values make pydantic warn on every serialization
pytestmark = pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning")
keel.RuntimeEvent.model_rebuild()
TO_JSON = keel.RuntimeEvent.__pydantic_serializer__.to_json
FAST = settings(
    max_examples=int(os.environ.get("KEEL_FUZZ_EXAMPLES", "250")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
ENVELOPE = ("id", "kind", "time", "execution_id", "seq", "trace_id", "span_id", "parent_span_id", "source", "level",
            "tenant")  # fmt: skip


class Colour(enum.Enum):
    red = "red"
    pair = (1, "two")


class Level(enum.IntEnum):
    high = 3
    huge = 2**70


class Mood(enum.StrEnum):
    calm = "calm"
    odd = "\u2028🚀"


class Tagged(dict):  # type: ignore[type-arg]  # a dict subclass: travels as pydantic's JSON form of it
    pass


@dataclasses.dataclass
class Box:
    value: Any


class Wrapped(BaseModel):
    value: Any


class Shouting(BaseModel):
    value: Any

    @field_serializer("value")
    def _shout(self, value: Any) -> str:
        return f"<{type(value).__name__}:{value!r}>"


class Aliased(BaseModel):
    model_config = ConfigDict(serialize_by_alias=True, validate_by_name=True)
    value: Any = Field(alias="the value")


class Secret(BaseModel):
    token: SecretStr
    value: Any


class Hidden(BaseModel):
    value: Any
    hidden: Any = Field(default=None, exclude=True)


class Computed(BaseModel):
    value: Any

    @computed_field  # type: ignore[prop-decorator]
    @property
    def kind(self) -> str:
        return type(self.value).__name__


class Open(BaseModel):
    model_config = ConfigDict(extra="allow")
    value: Any


class Custom(keel.RuntimeEvent):  # an event of a subclass: travels as its JSON text
    pass


def want(e: keel.RuntimeEvent) -> bytes | None:
    """What the execution's process would have written (``None``: nothing, the event is lost)."""
    try:
        return TO_JSON(e)
    except Exception:
        try:
            return TO_JSON(e, fallback=repr)
        except Exception:
            return None


def pack(batch: list[keel.RuntimeEvent]) -> tuple[list[tuple[dict[str, Any] | None, bytes]], int]:
    data, count = packing.encode(batch, want)
    items, failed = packing.decode_items(data)
    assert count == len(items) + failed
    return items, failed


def assert_exact_or_counted(batch: list[keel.RuntimeEvent]) -> list[tuple[dict[str, Any] | None, bytes]]:
    wanted = [want(e) for e in batch]
    items, failed = pack(batch)
    assert [text for _, text in items] == [w for w in wanted if w is not None]  # same text, same order
    assert failed == 0  # a lost event is counted by as_json (want), in the execution's process
    assert len(items) == len(batch) - wanted.count(None)
    for fields, text in items:
        parsed = json.loads(text)
        if fields is not None:  # the writer reads the envelope from the fields: the text's envelope
            assert {k: fields[k] for k in ENVELOPE} == {k: parsed[k] for k in ENVELOPE}
    return items


def event(payload: dict[str, Any], seq: int = 1, **fields: Any) -> keel.RuntimeEvent:
    return keel.RuntimeEvent(kind="test.payload", execution_id="exe_1", seq=seq, payload=payload, **fields)


# -- values ---------------------------------------------------------------------------------------

SPECIAL_TEXT = ["", "\x00", "\x1f\x7f", "\u2028\u2029", '"\\/', "🚀𝄞", "\ufeff", "naïve"]
SPECIAL_INTS = [0, -1, 2**31, 2**53 + 1, 2**63 - 1, -(2**63), -(2**63) - 1, 2**63, 2**64 - 1, 2**64, 10**40, -(10**40)]
SPECIAL_FLOATS = [0.0, -0.0, math.nan, math.inf, -math.inf, 5e-324, 2.2250738585072014e-308, 1e16, 1e15, 1e-7,
                  0.1, 1.7976931348623157e308, 9007199254740993.0, 123456789.12345678]  # fmt: skip
TZ = [datetime.UTC, datetime.timezone(datetime.timedelta(hours=5, minutes=30)),
      datetime.timezone(-datetime.timedelta(hours=23, minutes=59))]  # fmt: skip


def texts(surrogates: bool = False) -> st.SearchStrategy[str]:
    chars = st.characters(codec="utf-8")  # every code point but the surrogates
    if surrogates:  # make lone surrogates common, not one in a million
        chars = st.one_of(chars, st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF))
    return st.one_of(st.sampled_from(SPECIAL_TEXT), st.text(chars, max_size=12))


ints = st.one_of(st.sampled_from(SPECIAL_INTS), st.integers(), st.integers(min_value=-(2**70), max_value=2**70))
floats = st.one_of(st.sampled_from(SPECIAL_FLOATS), st.floats(allow_subnormal=True))
datetimes = st.one_of(
    st.datetimes(),
    st.datetimes(timezones=st.sampled_from(TZ)),
    st.datetimes(timezones=st.sampled_from(TZ)).map(lambda d: d.replace(microsecond=0)),
)
scalars = st.one_of(
    datetimes,
    st.dates(),
    st.times(),
    st.times(timezones=st.sampled_from(TZ)),
    st.timedeltas(),
    st.uuids(),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.sampled_from([*Colour, *Level, *Mood]),
)


def hashables(text: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    base = st.one_of(text, ints, floats, st.booleans(), st.none(), st.uuids(), st.sampled_from([*Colour, *Level, *Mood]),
                     datetimes, st.dates())  # fmt: skip
    return st.one_of(base, st.tuples(base, base), st.frozensets(base, max_size=3))


def kernel_models(value: st.SearchStrategy[Any], text: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    args = st.dictionaries(text, value, max_size=3)
    call = st.builds(keel.ToolCall, id=text, name=text, arguments=args)
    schema = st.builds(keel.ToolSchema, name=text, description=text, parameters=args)
    role = st.sampled_from(["system", "user", "assistant", "tool"])
    message = st.builds(keel.Message, role=role, content=text, tool_calls=st.lists(call, max_size=2),
                        tool_call_id=st.none() | text, name=st.none() | text)  # fmt: skip
    request = st.builds(keel.ModelRequest, messages=st.lists(message, max_size=2), tools=st.lists(schema, max_size=2),
                        output_schema=st.none() | args, output_name=text, options=args)  # fmt: skip
    usage = st.builds(keel.Usage, input_tokens=ints, output_tokens=ints)
    odd = st.one_of(  # built without validation: any value in any field, as model_construct allows
        st.builds(lambda a, b: keel.Usage.model_construct(input_tokens=a, output_tokens=b), value, value),
        st.builds(lambda c, t: keel.Message.model_construct(role="user", content=c, tool_calls=t), value, value),
        st.builds(lambda n, a: keel.ToolCall.model_construct(id="c", name=n, arguments=a), value, value),
    )
    return st.one_of(call, schema, message, request, usage, odd)


def user_models(value: st.SearchStrategy[Any], text: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.builds(Box, value),
        st.builds(Wrapped, value=value),
        st.builds(Shouting, value=value),
        st.builds(lambda v: Aliased(**{"the value": v}), value),
        st.builds(Secret, token=text.map(SecretStr), value=value),
        st.builds(Hidden, value=value, hidden=value),
        st.builds(Computed, value=value),
        st.builds(lambda v, k, x: Open(value=v, **{k: x}), value, st.sampled_from(["extra", "value2", "ü"]), value),
        st.dictionaries(text, value, max_size=3).map(Tagged),
    )


def values(surrogates: bool = False, depth: int = 6) -> st.SearchStrategy[Any]:
    text = texts(surrogates)
    keys = hashables(text)
    leaves = st.one_of(text, ints, floats, st.booleans(), st.none(), st.binary(max_size=8),
                       st.binary(max_size=8).map(bytearray), scalars, keys)  # fmt: skip

    def extend(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.one_of(
            st.lists(inner, max_size=4),
            st.lists(inner, max_size=3).map(tuple),
            st.sets(keys, max_size=3),
            st.dictionaries(text, inner, max_size=4),
            st.dictionaries(keys, inner, max_size=3),  # keys that are not str
            user_models(inner, text),
            kernel_models(inner, text),
        )

    return st.recursive(leaves, extend, max_leaves=2**depth // 2)


def payloads(surrogates: bool = False) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(texts(surrogates), values(surrogates), max_size=4)


# -- 1. round trip --------------------------------------------------------------------------------


@FAST
@given(st.lists(payloads(), min_size=1, max_size=5))
def test_any_payload_is_written_as_pydantic_would_or_counted(batch_payloads: list[dict[str, Any]]) -> None:
    assert_exact_or_counted([event(p, seq=i) for i, p in enumerate(batch_payloads)])


@FAST
@given(st.lists(payloads(surrogates=True), min_size=1, max_size=5))
def test_lone_surrogates_are_exact_or_counted_and_spare_neighbours(batch_payloads: list[dict[str, Any]]) -> None:
    plain = event({"text": "neighbour"}, seq=0)
    batch = [plain, *(event(p, seq=i + 1) for i, p in enumerate(batch_payloads)), plain]
    items = assert_exact_or_counted(batch)
    assert items[0][0] is not None and items[0][1] == items[-1][1] == TO_JSON(plain)


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=1, max_value=320), st.sampled_from(["dict", "list", "mixed"]))
def test_very_deep_nesting_is_exact_or_counted(depth: int, shape: str) -> None:
    value: Any = "bottom"
    for level in range(depth):
        value = {"a": value} if shape == "dict" or (shape == "mixed" and level % 2) else [value]
    batch = [event({"n": 1}, seq=1), event({"deep": value}, seq=2), event({"n": 3}, seq=3)]
    items = assert_exact_or_counted(batch)
    assert [json.loads(t)["seq"] for _, t in items][:: len(items) - 1] == [1, 3]


# -- 2. batches mixing events that travel as fields and events that travel as text ------------------

ODD = {
    "big int": lambda i: event({"big": 2**64 + i}, seq=i),
    "small int": lambda i: event({"nested": [{"n": -(2**63) - 1 - i}]}, seq=i),
    "int key": lambda i: event({"map": {i: "x"}}, seq=i),
    "tuple key": lambda i: event({"map": {(i, None): 1.5}}, seq=i),
    "enum key": lambda i: event({"map": {Colour.red: i}}, seq=i),
    "huge seq": lambda i: event({}, seq=2**65 + i),
    "subclass": lambda i: Custom(kind="custom", execution_id="exe_1", seq=i, payload={"i": i}),
}


@settings(max_examples=60, deadline=None)
@given(
    st.integers(min_value=1, max_value=3000),
    st.lists(
        st.tuples(st.floats(min_value=0, max_value=1, exclude_max=True), st.sampled_from(sorted(ODD))), max_size=8
    ),
)
def test_odd_events_anywhere_leave_the_rest_as_fields(size: int, odd: list[tuple[float, str]]) -> None:
    batch = [event({"text": str(i), "n": i}, seq=i) for i in range(size)]
    positions: dict[int, str] = {int(where * size): name for where, name in odd}
    for index, name in positions.items():
        batch[index] = ODD[name](index)
    items = assert_exact_or_counted(batch)
    assert len(items) == size
    assert [i for i, (fields, _) in enumerate(items) if fields is None] == sorted(positions)


# -- 3. odd envelopes -----------------------------------------------------------------------------


@FAST
@given(
    execution_id=st.none() | texts(),
    seq=st.none() | ints,
    tenant=texts(),
    time=floats,
    trace=st.none() | texts(),
    kind=texts(),
    level=texts(),
)
def test_odd_envelopes_round_trip(**fields: Any) -> None:
    odd = keel.RuntimeEvent(kind=fields["kind"], execution_id=fields["execution_id"], seq=fields["seq"],
                            tenant=fields["tenant"], time=fields["time"], trace_id=fields["trace"],
                            span_id=fields["trace"], level=fields["level"])  # fmt: skip
    items = assert_exact_or_counted([event({}, seq=1), odd, event({}, seq=3)])
    assert len(items) == 3
    if fields["seq"] is None or -(2**63) <= fields["seq"] < 2**64:
        assert items[1][0] is not None  # travelled as fields


# -- 4. the writer on any bytes -------------------------------------------------------------------

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**64 - 1), st.floats(allow_nan=False),
              texts()),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts(), inner, max_size=3),
    max_leaves=8,
)  # fmt: skip


def decode_safely(data: bytes) -> tuple[list[tuple[dict[str, Any] | None, bytes]], int] | None:
    try:
        return packing.decode_items(data)
    except ValueError:  # not JSON, or not an array: the whole batch is refused, as documented
        return None


@FAST
@given(st.binary(max_size=200))
def test_any_bytes_are_read_or_refused_with_value_error(data: bytes) -> None:
    result = decode_safely(data)
    if result is not None:
        items, failed = result
        assert len(items) + failed == len(orjson.loads(data))


GOOD = [event({"text": "a", "when": datetime.datetime(2026, 1, 2, tzinfo=datetime.UTC)}, seq=1),
        event({"big": 2**70}, seq=2), event({"list": [1, 2.5, None]}, seq=3)]  # fmt: skip
GOOD_DATA, _ = packing.encode(GOOD, TO_JSON)


@FAST
@given(st.integers(min_value=0, max_value=len(GOOD_DATA)), st.integers(min_value=0, max_value=255), st.booleans())
def test_a_damaged_batch_is_read_or_refused_with_value_error(where: int, byte: int, truncate: bool) -> None:
    data = GOOD_DATA[:where] if truncate else GOOD_DATA[:where] + bytes([byte]) + GOOD_DATA[where + 1 :]
    result = decode_safely(data)
    if result is not None:
        items, failed = result
        assert len(items) + failed == len(orjson.loads(data))


@FAST
@given(st.lists(st.tuples(st.integers(min_value=0, max_value=len(GOOD)), json_values), max_size=6))
def test_junk_items_are_counted_and_good_items_kept(junk: list[tuple[int, Any]]) -> None:
    good_items = orjson.loads(GOOD_DATA)
    array: list[Any] = list(good_items)
    for where, value in sorted(junk, key=lambda j: -j[0]):
        array.insert(where, value)
    items, failed = packing.decode_items(orjson.dumps(array))
    texts_out = [text for _, text in items]
    assert len(items) + failed == len(array)
    kept = iter(texts_out)
    for good in (TO_JSON(e) for e in GOOD):  # every good event, in order, among what was read
        assert any(text == good for text in kept)
    strings = sum(isinstance(v, str) for _, v in junk)  # a string is an event's text: passed on as is
    assert failed >= len(junk) - strings - sum(_looks_like_event(v) for _, v in junk)


def _looks_like_event(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == set(keel.RuntimeEvent.model_fields)


@pytest.mark.parametrize("data", [b"", b"[", b"{}", b'"x"', b"1", b"null", b"[1,", b'["\\ud800"]', b"\xff", b"[]" * 2])
def test_damaged_or_foreign_data_is_a_value_error(data: bytes) -> None:
    assert decode_safely(data) is None


# -- what the properties found (each broke the guarantee before packing.py checked for it) --------


class Infinite(BaseModel):  # a model of the user's that writes inf as JSON cannot hold it
    model_config = ConfigDict(ser_json_inf_nan="constants")
    f: float


class InfiniteText(BaseModel):
    model_config = ConfigDict(ser_json_inf_nan="strings")
    f: float


class LongCall(keel.ToolCall):  # inside a kernel model, written as the declared ToolCall
    note: str = "dropped"


FOUND = {
    "keys colliding in a dict subclass": {"t": Tagged({1: "a", "1": "b"})},
    "keys colliding in a dataclass": {"t": Box({None: 1, "None": 2})},
    "keys colliding in a model": {"t": Wrapped(value={1.5: "a", "1.5": "b"})},
    "ser_json_inf_nan constants": {"t": Infinite(f=math.inf)},
    "ser_json_inf_nan strings": {"t": InfiniteText(f=math.nan)},
    "bool in Usage": {"u": keel.Usage.model_construct(input_tokens=0, output_tokens=False)},
    "another model in a kernel model's list": {
        "m": keel.Message.model_construct(role="user", tool_calls=[Wrapped(value=1)])
    },
    "a dataclass in a kernel model's list": {"m": keel.ModelRequest.model_construct(messages=[Box(1)], tools=[])},
    "kernel model subclass inside one": {"m": keel.Message(role="assistant", tool_calls=[LongCall(id="c", name="n")])},
}


@pytest.mark.parametrize("name", list(FOUND))
def test_found_values_are_written_as_pydantic_would(name: str) -> None:
    target = event(FOUND[name], seq=2)
    items = assert_exact_or_counted([event({"n": 1}, seq=1), target, event({"n": 3}, seq=3)])
    assert items[1][1] == TO_JSON(target)
    assert items[0][0] is not None and items[2][0] is not None  # the neighbours still travel as fields


@pytest.mark.xfail(strict=True, raises=ValueError, reason="an orjson.Fragment is written raw (packing.py docstring)")
def test_an_orjson_fragment_is_not_checked() -> None:
    assert_exact_or_counted([event({"n": 1}), event({"raw": orjson.Fragment(b"]]")}), event({"n": 3})])
