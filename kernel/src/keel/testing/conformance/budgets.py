"""Conformance for the kernel's budgets: a runnable whose executions make model requests stops at
its budget (through the kernel: ``keel.Agent`` and ``keel.call_action`` count), and a price plugin
(``keel_model_prices``) gives prices the kernel can use.

Example::

    from keel.testing.conformance import BudgetConformance

    class TestMyFlowHonoursBudgets(BudgetConformance):
        @pytest.fixture
        def budget_case(self):
            # a runnable that makes at least two model requests, the input, and the model to use
            return my_flow, {"ticket": 7}, ScriptedModel(["one", "two", "three"])
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio
import pytest

from keel.budgets import BudgetError, BudgetExceeded, ModelPrice
from keel.runtime import Runtime
from keel.stack import Stack

__all__ = ["BudgetConformance", "PriceConformance"]


def _refused(error: BaseException | None) -> bool:
    """The execution failed because a budget refused a call (directly, as a cause, or by name)."""
    while error is not None:
        if isinstance(error, BudgetExceeded) or getattr(error, "error_type", None) == "BudgetExceeded":
            return True
        error = error.__cause__
    return False


class BudgetConformance:
    """Fixtures: ``budget_case`` -> ``(runnable, input, model)``: the runnable's executions make at
    least two model requests through the kernel when answered by ``model``; and ``budget_host``
    (default: the kernel's built-ins only) with the plugins the runnable needs."""

    pytestmark = [pytest.mark.anyio]

    @pytest.fixture
    def budget_host(self) -> Any:
        from keel.testing import make_host

        return make_host()

    async def test_a_model_request_past_the_budget_is_never_sent(
        self, budget_case: tuple[Any, Any, Any], budget_host: Any
    ) -> None:
        from keel.budgets import Budget

        runnable, value, model = budget_case
        async with Runtime(budget_host, Stack()) as runtime:
            runtime.use_model(model)
            execution = await runtime.start(runnable, value, budget=Budget(model_requests=1))
            error: BaseException | None = None
            with anyio.fail_after(60):
                try:
                    await execution.result()
                except Exception as err:
                    error = err
            assert _refused(error), f"the execution did not stop at its budget: it ended with {error!r}"
            requests = getattr(model, "requests", None)
            if requests is not None:
                assert len(requests) == 1, f"{len(requests)} model requests were sent under model_requests = 1"
            kinds = [event.kind async for event in execution.events()]
            assert "budget.exceeded" in kinds, "the execution must publish budget.exceeded for the UI"
            usage = await runtime.budgets.usage(execution.id, execution.tenant)
            assert usage is not None and usage["model_requests"] == 1


class PriceConformance:
    """Fixture: ``price_plugin``: an object or module implementing ``keel_model_prices``."""

    def _prices(self, price_plugin: Any) -> Mapping[str, Any]:
        from keel.testing import make_host

        host = make_host(price_plugin)
        assert not host.problems, host.problems
        (impl,) = [i for i in host.pm.hook.keel_model_prices.get_hookimpls() if i.plugin is price_plugin]
        given: Any = impl.function()
        return dict(given or {})

    def test_every_price_is_a_valid_model_price(self, price_plugin: Any) -> None:
        prices = self._prices(price_plugin)
        assert prices, "keel_model_prices() returned no price"
        for name, price in prices.items():
            assert isinstance(name, str) and name, f"a model name must be a non-empty string, got {name!r}"
            ModelPrice.model_validate(price if isinstance(price, ModelPrice) else dict(price))

    def test_the_kernel_prices_each_model_with_it(self, price_plugin: Any) -> None:
        from keel.testing import make_host

        runtime = Runtime(make_host(price_plugin), Stack())
        for name in self._prices(price_plugin):
            try:
                assert runtime.budgets.price_of(name) is not None, f"model {name!r} is not priced"
            except BudgetError as err:  # it disagrees with the kernel's own (scripted) price
                raise AssertionError(str(err)) from None
