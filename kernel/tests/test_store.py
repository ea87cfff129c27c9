"""The memory store passes the same conformance suite every backend must pass."""

from __future__ import annotations

from typing import Any

import pytest

import keel
from keel.testing import make_host
from keel.testing.conformance import StoreConformance


class TestMemoryStore(StoreConformance):
    @pytest.fixture
    def store_spec(self) -> keel.StoreSpec:
        return make_host().stores()["memory"].spec

    @pytest.fixture
    def new_store(self, store_spec: keel.StoreSpec) -> Any:
        return lambda: store_spec.factory({})


async def test_non_json_values_are_refused_with_the_fix() -> None:
    store = keel.MemoryStore()
    with pytest.raises(keel.StoreError, match="put_blob"):
        await store.put("t", "ns", "k", {"raw": b"bytes"})
    with pytest.raises(keel.StoreError):
        await store.append("t", "s", [1, object()])
    assert await store.last_seq("t", "s") == 0, "a refused batch appends nothing"


async def test_stored_values_are_copies() -> None:
    store = keel.MemoryStore()
    value = {"items": [1]}
    await store.put("t", "ns", "k", value)
    value["items"].append(2)
    item = await store.get("t", "ns", "k")
    assert item is not None and item.value == {"items": [1]}
