"""Instant events: the incremental JSON tokenizer and its laws, over any chunking."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import keel
from keel.instant import InstantEvent, InstantParser, reset_event


def feed_all(text: str, sizes: list[int] | int = 1) -> tuple[InstantParser, list[InstantEvent]]:
    parser = InstantParser()
    events: list[InstantEvent] = []
    cycle = [sizes] if isinstance(sizes, int) else sizes
    pos = i = 0
    while pos < len(text):
        size = cycle[i % len(cycle)]
        events += parser.feed(text[pos : pos + size])
        pos += size
        i += 1
    events += parser.finish()
    return parser, events


def completed(events: list[InstantEvent]) -> list[str]:
    return [e.path for e in events if e.is_complete]


def test_the_example_from_the_docstring() -> None:
    parser = InstantParser()
    first = parser.feed('{"title": "Hel')
    assert [(e.path, e.delta, e.value, e.is_complete) for e in first] == [
        ("", "", {}, False),
        ("title", "Hel", "Hel", False),
    ]
    second = parser.feed('lo"}')
    assert [(e.path, e.delta, e.value, e.is_complete) for e in second] == [
        ("title", "lo", "Hello", True),
        ("", "", {"title": "Hello"}, True),
    ]
    assert parser.done and parser.root == {"title": "Hello"}


def test_paths_deltas_and_values_of_a_nested_answer() -> None:
    doc = {"items": [{"title": "Alpha", "n": 12}, {"title": "Beta", "tags": ["x", True, None]}], "sum": -1.5e3}
    _, events = feed_all(json.dumps(doc), 1)
    assert completed(events) == [
        "items[0].title",
        "items[0].n",
        "items[0]",
        "items[1].title",
        "items[1].tags[0]",
        "items[1].tags[1]",
        "items[1].tags[2]",
        "items[1].tags",
        "items[1]",
        "items",
        "sum",
        "",
    ]
    title = [e for e in events if e.path == "items[1].title"]
    assert [e.delta for e in title] == ["B", "e", "t", "a", ""]
    assert [e.value for e in title] == ["B", "Be", "Bet", "Beta", "Beta"]
    number = [e for e in events if e.path == "items[0].n"]
    assert [(e.delta, e.value, e.is_complete) for e in number] == [("12", 12, True)]


def test_escapes_split_anywhere_are_decoded() -> None:
    doc = {"t": 'a "quoted" \\ line\nnext \u00e9 \U0001f600 \t end', "keys with space": 1, "ü": "x"}
    for text in (json.dumps(doc), json.dumps(doc, ensure_ascii=False)):
        for size in (1, 2, 3, 5):
            parser, events = feed_all(text, size)
            assert parser.root == doc
            assert "".join(e.delta for e in events if e.path == "t") == doc["t"]
            assert '["keys with space"]' in completed(events)


def test_prose_and_fences_around_the_answer_are_skipped() -> None:
    text = 'Sure, here it is:\n```json\n{"a": [1, 2,], "b": {"c": "d",},}\n```\nAnything {else}?'
    parser, events = feed_all(text, 3)
    assert parser.root == {"a": [1, 2], "b": {"c": "d"}}
    assert completed(events) == ["a[0]", "a[1]", "a", "b.c", "b", ""]
    assert not parser.failed


def test_text_that_is_not_json_stops_the_events_without_raising() -> None:
    parser, events = feed_all('{"a": 1, "b": nonsense, "c": 2}', 4)
    assert parser.failed
    assert completed(events) == ["a"]
    assert parser.feed('"more"') == []


def test_an_unfinished_answer_leaves_its_fields_incomplete() -> None:
    parser, events = feed_all('{"a": "unfinished', 4)
    assert parser.failed and not parser.done
    assert all(not e.is_complete for e in events)


def test_reset_events_name_the_abandoned_attempt() -> None:
    event = reset_event(2, "output.retry")
    assert (event.kind, event.attempt, event.is_complete) == ("reset", 2, True)
    assert event.to_dict()["kind"] == "reset"
    assert keel.InstantEvent is InstantEvent


def test_a_long_string_in_one_character_chunks_gives_one_event_per_character() -> None:
    body = "x" * 20_000
    parser, events = feed_all(json.dumps({"body": body}), 1)
    deltas = [e for e in events if e.path == "body"]
    assert len(deltas) == 20_001  # every character, then the closing quote
    assert parser.root == {"body": body}


# ------------------------------------------------------------------------------ the laws


def expected_completions(value: Any, path: str = "") -> list[str]:
    """Post-order paths, computed independently of the parser."""
    out: list[str] = []
    if isinstance(value, dict):
        for key, child in value.items():
            sub = (f"{path}.{key}" if path else key) if key.isidentifier() else f"{path}[{json.dumps(key)}]"
            out += expected_completions(child, sub)
    elif isinstance(value, list):
        for i, child in enumerate(value):
            out += expected_completions(child, f"{path}[{i}]")
    out.append(path)
    return out


scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=20,
)
roots = st.lists(json_values, max_size=4) | st.dictionaries(st.text(max_size=6), json_values, max_size=5)


@settings(max_examples=300, deadline=None)
@given(
    doc=roots,
    chunk_sizes=st.lists(st.integers(min_value=1, max_value=12), min_size=1, max_size=8),
    indent=st.sampled_from([None, 0, 2]),
    ascii_only=st.booleans(),
)
def test_any_chunking_gives_the_same_value_and_completions(
    doc: Any, chunk_sizes: list[int], indent: int | None, ascii_only: bool
) -> None:
    text = json.dumps(doc, indent=indent, ensure_ascii=ascii_only)
    whole, whole_events = feed_all(text, len(text) or 1)
    ones, one_events = feed_all(text, 1)
    cut, cut_events = feed_all(text, chunk_sizes)
    expected = expected_completions(doc)
    for parser, events in ((whole, whole_events), (ones, one_events), (cut, cut_events)):
        assert parser.done and not parser.failed
        assert parser.root == doc
        paths = completed(events)
        assert paths == expected  # document order, each exactly once
        assert len(set(paths)) == len(paths)
        # nothing is reported about a path after it completed
        finished: set[str] = set()
        strings: dict[str, str] = {}
        for event in events:
            assert event.path not in finished
            if event.is_complete:
                finished.add(event.path)
            value = event.value
            if isinstance(value, str):
                strings[event.path] = strings.get(event.path, "") + event.delta
                assert strings[event.path] == value  # deltas add up to the value so far
