"""A flow's agents count against the flow's budget: the kernel's BudgetConformance on TriggerFlow."""

from __future__ import annotations

from typing import Any

import pytest

import keel
from keel.testing import ScriptedModel, make_host
from keel.testing.conformance import BudgetConformance
from keel_triggerflow import TriggerFlow
from keel_triggerflow import plugin as triggerflow_plugin


class TestFlowsHonourBudgets(BudgetConformance):
    @pytest.fixture
    def budget_case(self) -> tuple[Any, Any, Any]:
        flow = TriggerFlow("two-agents")
        flow.to(keel.Agent("first", "Answer.")).to(keel.Agent("second", "Answer."))
        return flow, "ticket 7", ScriptedModel(["one", "never sent"])

    @pytest.fixture
    def budget_host(self) -> Any:
        return make_host(triggerflow_plugin)
