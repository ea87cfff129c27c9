"""Keel's pytest plugin (entry point ``pytest11``): fixtures that never auto-load installed plugins."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from keel.plugins import PluginHost
from keel.runtime import Runtime
from keel.stack import Stack
from keel.testing import make_host


@pytest.fixture
def make_keel_host() -> Callable[..., PluginHost]:
    """Build a host from exactly the plugin modules (or objects) you pass."""
    return make_host


@pytest.fixture
def keel_host() -> PluginHost:
    """A host with only the kernel's built-ins (memory store, scripted model)."""
    return make_host()


@pytest.fixture
async def keel_runtime(keel_host: PluginHost) -> AsyncIterator[Runtime]:
    """A started runtime over ``keel_host`` and an empty stack (store: memory fallback)."""
    async with Runtime(keel_host, Stack()) as runtime:
        yield runtime
