"""Hostile inputs: masking never lets a secret through, a damaged file is always a RecordingError."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keel_devtools import MASK, RecordingError, mask_keys, read_execution
from keel_devtools.redact import DEFAULT_SECRET_KEYS, secret_keys, secret_pattern

SECRET = "s3cr3t-VALUE"
keys = st.sampled_from(["password", "API-Key", "Authorization", "name", "text", "x_api_key", "Cookie", "value"])
scalars = st.one_of(st.just(SECRET), st.integers(), st.text(max_size=8), st.none(), st.booleans())
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=20,
)


def secret_values(value: Any, under_secret: bool = False) -> list[Any]:
    """Every scalar that sits directly under a secret key."""
    if isinstance(value, dict):
        found = []
        for key, item in value.items():
            is_secret = key.lower().replace("-", "_") in DEFAULT_SECRET_KEYS
            if is_secret and not isinstance(item, (dict, list)):
                found.append(item)
            else:
                found += secret_values(item)
        return found
    if isinstance(value, list):
        return [x for item in value for x in secret_values(item)]
    return []


@given(documents)
@settings(max_examples=300, deadline=None)
def test_masking_leaves_no_value_under_a_secret_key_and_is_idempotent(document: Any) -> None:
    masked = mask_keys(document, DEFAULT_SECRET_KEYS)
    assert all(v in (MASK, None, "") for v in secret_values(masked))
    assert mask_keys(masked, DEFAULT_SECRET_KEYS) == masked
    # and a document inside a string is masked too
    carried = mask_keys({"content": json.dumps(document)}, DEFAULT_SECRET_KEYS)["content"]
    if isinstance(document, (dict, list)):
        assert all(v in (MASK, None, "") for v in secret_values(json.loads(carried)))


@given(documents)
@settings(max_examples=300, deadline=None)
def test_the_fast_check_never_misses_a_key_masking_would_mask(document: Any) -> None:
    """The recorder skips masking when the quick scan finds no secret key: that scan must find
    every one the masking would act on."""
    text = json.dumps({"payload": document, "text": json.dumps(document)}, separators=(",", ":"))
    if mask_keys(json.loads(text), DEFAULT_SECRET_KEYS) != json.loads(text):
        assert secret_pattern(secret_keys()).search(text.lower())


@given(st.lists(st.text(max_size=60), min_size=1, max_size=5))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_damaged_file_is_a_recording_error(tmp_path: Path, lines: list[str]) -> None:
    file = tmp_path / "damaged.jsonl"
    file.write_text("\n".join(lines), encoding="utf-8")
    try:
        read_execution(file)
    except RecordingError:
        pass  # the only way a bad file may fail


def test_a_file_that_is_not_utf8_is_a_recording_error(tmp_path: Path) -> None:
    file = tmp_path / "latin1.jsonl"
    file.write_bytes(b'{"format": "keel-execution", "x": "\xff\xfe"}\n')
    with pytest.raises(RecordingError, match="UTF-8"):
        read_execution(file)


@given(
    st.sets(st.text(alphabet="abcdekpst_-", min_size=1, max_size=8), min_size=1, max_size=6),
    st.text(alphabet='abcdekpst_-"\\', max_size=40),
)
@settings(max_examples=300, deadline=None)
def test_the_fast_check_finds_exactly_the_quoted_names(names: set[str], text: str) -> None:
    """The scan's pattern is the names as a trie: it finds what the list of every name (longest
    first) found, no more, no less, whatever the names share (a name that is a prefix of another)."""
    found = secret_pattern(frozenset(names)).search(text)
    variants = {v for k in names for v in (k, k.replace("_", "-"))}
    plain = any(f'"{v}"' in text or f'"{v}\\"' in text for v in variants)
    assert bool(found) == plain
