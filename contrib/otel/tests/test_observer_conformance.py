"""keel-otel's observer honours the kernel's observer contract (keel.testing.conformance)."""

from __future__ import annotations

from typing import Any

import pytest

from keel.testing.conformance import ObserverConformance
from keel_otel import OtelObserver


class TestOtelObserver(ObserverConformance):
    @pytest.fixture
    def observer_plugin(self, observer: OtelObserver) -> Any:
        return observer
