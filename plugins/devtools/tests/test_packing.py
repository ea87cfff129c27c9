"""The compact form events travel to the writer process in: what the writer makes of it is byte for
byte the JSON the execution's process would have made, whatever the payload holds."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import json
import pickle
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import FINAL, invoice_agent, lookup_vendor, scripted, tool_reply
from pydantic import BaseModel, ConfigDict

import keel
from keel_devtools import packing
from keel_devtools.record import Recorder

keel.RuntimeEvent.model_rebuild()
TO_JSON = keel.RuntimeEvent.__pydantic_serializer__.to_json


class Colour(enum.Enum):
    red = "red"


class Level(enum.IntEnum):
    high = 3


class Invoice(BaseModel):  # a model of the user's: the writer cannot import it
    vendor: str
    lines: list[dict[str, Any]]


class Frozen(BaseModel):  # hashable: could be a key, is not JSON-ready as one
    model_config = ConfigDict(frozen=True)
    a: int


@dataclasses.dataclass
class Point:
    x: int
    y: float


class Opaque:  # no JSON form: recorded as its repr, as in the execution's process
    def __repr__(self) -> str:
        return "<Opaque thing>"


class Tagged(dict):  # a dict subclass
    pass


class Loud(str):  # a str subclass
    pass


class Custom(keel.RuntimeEvent):  # an event of a subclass: travels as its JSON text
    pass


def event(kind: str, payload: dict[str, Any], **fields: Any) -> keel.RuntimeEvent:
    return keel.RuntimeEvent(kind=kind, execution_id="exe_1", seq=fields.pop("seq", 1), payload=payload, **fields)


PAYLOADS: dict[str, dict[str, Any]] = {
    "builtins": {"a": 1, "b": 2.5, "c": None, "d": True, "e": "x", "f": [1, "2", None], "g": (1, 2)},
    "unicode": {"text": "naïve café — 日本語 ✓ 🚀 \u2028 \"quoted\" \\ back", "ключ": "значение", "emoji🙂": "🙂"},
    "big ints": {"big": 2**100, "negative": -(2**70), "i64": 2**63 - 1, "nested": [2**64, {"x": 10**40}]},
    "nested": {"a": {"b": {"c": [{"d": [1, [2, [3, {"e": "deep"}]]]}]}}, "empty": {}, "list": []},
    "floats": {"inf": float("inf"), "nan": float("nan"), "tiny": 5e-324, "neg": -0.0, "big": 1e308},
    "keys": {"map": {1: "int key", 2.5: "float key", None: "none key", False: "bool key", (1, 2): "tuple key"}},
    "bytes": {"raw": b"bytes \xc3\xa9", "array": bytearray(b"abc"), "set": {3, 1, 2}, "frozen": frozenset({"a"})},
    "user model": {"output": Invoice(vendor="Nordlys AS", lines=[{"sku": "A1", "qty": 2**65}])},
    "kernel model": {"usage": keel.Usage(input_tokens=3, output_tokens=4), "call": keel.ToolCall(id="c", name="n", arguments={"k": [1]})},
    "scalars": {"when": datetime.datetime(2026, 12, 3, 4, 5, 6, tzinfo=datetime.UTC), "id": uuid.UUID(int=7),
                "price": decimal.Decimal("1.50"), "colour": Colour.red, "level": Level.high, "path": Path("/tmp/x")},
    "times": {"offset": datetime.datetime(2026, 12, 3, 4, 5, 6, 789, tzinfo=datetime.timezone(datetime.timedelta(hours=2))),
              "naive": datetime.datetime(2026, 12, 3, 4, 5), "day": datetime.date(2026, 1, 2), "clock": datetime.time(3, 4, 5),
              "span": datetime.timedelta(days=-1, seconds=5), "negzero": -0.0, "i64min": -(2**63), "u64": 2**64 - 1},
    "scalar keys": {"map": {Colour.red: 1, Level.high: 2, uuid.UUID(int=1): 3}},
    "dataclass": {"point": Point(1, 2.5), "points": [Point(3, 4.0)]},
    "opaque": {"thing": Opaque(), "kind": Opaque},
    "subclasses": {"tagged": Tagged(a=1), "loud": Loud("shout")},
    "frozen model": {"frozen": Frozen(a=1)},
    "frozen model key": {"map": {Frozen(a=2): "as a key"}},
}  # fmt: skip


def round_trip(events: list[keel.RuntimeEvent]) -> tuple[list[bytes], int]:
    lost: list[keel.RuntimeEvent] = []

    def as_json(e: keel.RuntimeEvent) -> bytes | None:
        try:
            return TO_JSON(e)
        except Exception:
            try:
                return TO_JSON(e, fallback=repr)
            except Exception:
                lost.append(e)
                return None

    data, count = packing.encode(events, as_json)
    lines, failed = packing.decode(data)
    assert count == len(lines) + failed
    return lines, failed + len(lost)


def expected(e: keel.RuntimeEvent) -> bytes:
    try:
        return TO_JSON(e)
    except Exception:
        return TO_JSON(e, fallback=repr)


@pytest.mark.parametrize("name", list(PAYLOADS))
def test_a_payload_round_trips_to_the_same_json_alone_and_in_a_batch(name: str) -> None:
    target = event("test.payload", PAYLOADS[name])
    plain = event("model.delta", {"text": "hi"}, seq=2)
    for batch in ([target], [plain, target, plain]):
        lines, failed = round_trip(batch)
        assert failed == 0
        assert lines == [expected(e) for e in batch]
        json.loads(lines[batch.index(target)])  # valid JSON, not only equal text


def test_every_payload_in_one_batch_keeps_order_and_text() -> None:
    batch = [event(f"kind.{i}", payload, seq=i) for i, payload in enumerate(PAYLOADS.values())]
    batch.append(Custom(kind="custom", execution_id="exe_1", seq=99))
    lines, failed = round_trip(batch)
    assert failed == 0 and lines == [expected(e) for e in batch]


async def test_every_event_kind_of_real_executions_round_trips(host: keel.PluginHost) -> None:
    from keel import draws

    @keel.action(risk="write")
    def open_ticket(title: str) -> dict[str, Any]:
        """Open a ticket."""
        return {"id": draws.uuid(), "at": draws.now(), "urgent": draws.random() < 0.5}

    seen: list[keel.RuntimeEvent] = []
    async with keel.Runtime(host, keel.Stack()) as runtime:
        runtime.actions.add(lookup_vendor)
        runtime.actions.add(open_ticket)
        runtime.use_model(scripted(tool_reply(), FINAL))
        execution = await invoice_agent().start("Invoice from Nordlys AS", runtime=runtime)
        await execution.result()
        seen += [e async for e in execution.events()]
        call = keel.ToolCall(id="t1", name="open_ticket", arguments={"title": "disk"})
        from keel.testing import Reply

        runtime.use_model(scripted(Reply(tool_calls=[call]), "done"))
        execution = await keel.Agent("t", "Open.", actions=["open_ticket"]).start("go", runtime=runtime)
        await execution.result()
        seen += [e async for e in execution.events()]
    kinds = {e.kind for e in seen}
    assert {"execution.started", "model.request", "model.delta", "model.response", "draw"} <= kinds
    assert any(k.startswith("action.") for k in kinds) and "execution.completed" in kinds
    lines, failed = round_trip(seen)
    assert failed == 0 and lines == [TO_JSON(e) for e in seen]


def test_one_event_that_cannot_travel_as_fields_leaves_the_rest_of_the_batch_as_fields() -> None:
    # 2**100 is past what orjson writes: that event's JSON text is made here, the others still
    # travel as fields (the writer reads their envelope without parsing text), in order
    batch = [event("model.delta", {"text": str(i)}, seq=i) for i in range(1, 1200)]
    batch[700] = event("odd", {"big": 2**100}, seq=701)
    data, count = packing.encode(batch, TO_JSON)
    assert count == len(batch)
    items, failed = packing.decode_items(data)
    assert failed == 0 and [text for _, text in items] == [TO_JSON(e) for e in batch]
    assert [i for i, (fields, _) in enumerate(items) if fields is None] == [700]


def test_an_event_no_json_can_hold_is_counted_and_the_rest_written() -> None:
    circular: dict[str, Any] = {}
    circular["self"] = circular
    batch = [event("a", {"n": 1}, seq=1), event("b", {"loop": circular}, seq=2), event("c", {"n": 3}, seq=3)]
    lines, failed = round_trip(batch)
    assert failed == 1
    assert [json.loads(line)["kind"] for line in lines] == ["a", "c"]


def test_the_writer_reads_nothing_but_json_values() -> None:
    class Evil:
        def __reduce__(self) -> Any:
            return (print, ("ran",))

    with pytest.raises(ValueError):  # a pickle (or anything else that is not JSON) is refused, unread
        packing.decode(pickle.dumps([Evil()], protocol=5))
    with pytest.raises(ValueError, match="JSON array"):
        packing.decode(b'{"kind": "a"}')
    good = TO_JSON(event("a", {"n": 1}))
    lines, failed = packing.decode(
        b'[1, ["x"], {"kind": "missing fields"}, ' + json.dumps(good.decode()).encode() + b"]"
    )
    assert lines == [good] and failed == 3  # each item that is not an event is counted, the rest read


def test_plain_kernel_models_are_their_fields_json() -> None:
    # what lets a PLAIN_MODELS value travel as its __dict__: the JSON of its fields is its JSON
    message = keel.Message(
        role="assistant", content="x", tool_calls=[keel.ToolCall(id="c", name="n", arguments={"a": (1, 2)})]
    )
    samples = [
        keel.ModelRequest(messages=[keel.Message(role="system", content="s"), message],
                          tools=[keel.ToolSchema(name="t", description="d")], output_schema={"type": "object"},
                          options={"temperature": 0.5, "when": datetime.datetime(2026, 1, 2, tzinfo=datetime.UTC)}),
        message, keel.ToolCall(id="c", name="n"), keel.ToolSchema(name="t"), keel.Usage(input_tokens=1, output_tokens=2),
    ]  # fmt: skip
    assert {type(m) for m in samples} == set(packing.PLAIN_MODELS)
    for model in samples:
        cls = type(model)
        assert not cls.model_computed_fields, cls
        assert not cls.__pydantic_decorators__.field_serializers and not cls.__pydantic_decorators__.model_serializers
        assert cls.model_config.get("extra") != "allow" and not cls.model_config.get("serialize_by_alias")
        for name, field in cls.model_fields.items():
            assert not field.exclude and not field.metadata and field.serialization_alias is None, (cls, name)
        carried = event("m", {"v": model})
        data, _ = packing.encode([carried], TO_JSON)
        items, failed = packing.decode_items(data)
        assert failed == 0 and items[0][0] is not None  # as fields, not as text made here
        assert items[0][1] == TO_JSON(carried)
        assert json.loads(items[0][1])["payload"]["v"] == json.loads(model.model_dump_json())


@pytest.mark.parametrize("process", [True, False], ids=["writer-process", "writer-thread"])
async def test_recorded_rows_are_the_events_json_whatever_the_payload(
    host: keel.PluginHost, tmp_path: Path, process: bool
) -> None:
    from keel_devtools import configure

    rec: Recorder = configure(tmp_path / "r.db", process=process, mask_default_keys=False)
    try:
        batch = [event(f"test.{name}", payload, seq=i + 1) for i, (name, payload) in enumerate(PAYLOADS.items())]
        for e in batch:
            rec.observe(e)
        assert rec.flush() and rec.failed == 0
        raw = rec.db.raw_events("exe_1")
        assert raw == [expected(e).decode() for e in batch]
    finally:
        rec.close()


async def test_a_masked_envelope_field_is_masked_in_the_summary_too(tmp_path: Path) -> None:
    # the writer reads an event's envelope from the fields that travelled with it, unless masking
    # could change one of them: then from the masked text, as before
    from keel_devtools import configure

    rec: Recorder = configure(tmp_path / "r.db", redact_keys=["tenant"])
    try:
        rec.observe(keel.RuntimeEvent(kind="execution.started", execution_id="exe_t", seq=1, tenant="acme-secret"))
        assert rec.flush() and rec.failed == 0
        summary = rec.db.execution("exe_t")
        assert summary is not None and summary["tenant"] == "***"
        assert "acme-secret" not in "".join(rec.db.raw_events("exe_t"))
    finally:
        rec.close()
