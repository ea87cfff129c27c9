"""DevTools' price table, registered through keel_model_prices, as the kernel's cost budgets read it."""

from __future__ import annotations

from typing import Any

import pytest

from keel.testing.conformance import PriceConformance
from keel_devtools import plugin


class TestDevToolsPrices(PriceConformance):
    @pytest.fixture
    def price_plugin(self) -> Any:
        return plugin
