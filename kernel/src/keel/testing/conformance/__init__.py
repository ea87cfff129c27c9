"""Conformance kit: subclass one of these in your plugin's tests to prove your driver honours the
kernel's contract (as langchain's standard-tests serve every chat model).

Each class names the fixtures a subclass must provide. Async tests run through anyio; set
``anyio_mode = "auto"`` in your pytest configuration or mark the module ``pytest.mark.anyio``.

Example::

    from keel.testing.conformance import StoreConformance

    class TestMyStore(StoreConformance):
        @pytest.fixture
        def new_store(self, tmp_path):
            return lambda: MyStore(tmp_path / "db")  # the kit closes each store it makes
"""

from __future__ import annotations

from keel.testing.conformance.budgets import BudgetConformance, PriceConformance
from keel.testing.conformance.drivers import (
    ActionConformance,
    ChannelConformance,
    EnvironmentConformance,
    EvaluatorConformance,
    ModelConformance,
    SlotConformance,
)
from keel.testing.conformance.execution import TERMINAL_KINDS, AdoptionConformance, ExecutionConformance
from keel.testing.conformance.observers import ObserverConformance
from keel.testing.conformance.store import StoreConformance

__all__ = [
    "ActionConformance",
    "AdoptionConformance",
    "BudgetConformance",
    "ChannelConformance",
    "EnvironmentConformance",
    "EvaluatorConformance",
    "ExecutionConformance",
    "ModelConformance",
    "ObserverConformance",
    "PriceConformance",
    "SlotConformance",
    "StoreConformance",
    "TERMINAL_KINDS",
]
