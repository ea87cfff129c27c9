from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import keel
from keel import Runtime, load_stack
from keel.testing import make_host


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class SharedStore:
    """A plugin registering one store instance: several runtimes over it act as several processes."""

    def __init__(self, store: Any):
        self.store = store

    @keel.hookimpl
    def keel_stores(self) -> Any:
        yield keel.StoreSpec(name="shared", durable=True, factory=lambda options: self.store)


@pytest.fixture
def make_runtime(tmp_path: Path) -> Any:
    """``make_runtime(store)``: a fresh Runtime (a 'process') whose stack store is ``store``."""
    stack_file = tmp_path / "keel.toml"
    stack_file.write_text('store = "shared"\n')

    def build(store: Any) -> Runtime:
        return Runtime(make_host(SharedStore(store)), load_stack(stack_file))

    return build
