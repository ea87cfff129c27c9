"""``runtime.budgets``: the :class:`Budgets` of a runtime — the stack's ``[budgets]`` plus what code
declares, the prices, each execution's :class:`keel.budgets.Meter`, and the tenants' totals in the
store. The limits themselves and the meters are in :mod:`keel.budgets` (docs/budgets.md).
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

from keel.budgets import (
    _CURRENT,
    _REQUESTED,
    LIMITS,
    NAMESPACE,
    Budget,
    BudgetError,
    BudgetsConfig,
    BudgetUsage,
    Emit,
    Meter,
    ModelPrice,
    TenantBudget,
)
from keel.errors import ConflictError

if TYPE_CHECKING:
    from keel.runtime import Runtime

__all__ = ["Budgets"]


def _prices_of(impl: Any) -> dict[str, ModelPrice]:
    """One plugin's ``keel_model_prices()``, checked: a wrong shape is an error naming the plugin."""
    try:
        given: Any = impl.function()
        return {
            str(model): price if isinstance(price, ModelPrice) else ModelPrice.model_validate(dict(price))
            for model, price in dict(given or {}).items()
        }
    except (TypeError, ValueError) as err:
        raise BudgetError(
            f"plugin {impl.plugin_name!r}: keel_model_prices() must return {{model: {{'input': usd, 'output': usd}}}} "
            f"(USD per million tokens): {err}"
        ) from err


class Budgets:
    """A runtime's budgets (``runtime.budgets``): the stack's ``[budgets]`` plus what code declares.

    ::

        runtime.budgets.limit(tokens=20_000, model_requests=10)          # every execution
        runtime.budgets.limit(runnable="triage", cost=0.05)               # one runnable's executions
        runtime.budgets.limit(tenant="acme", cost=5.0, period="day")      # a tenant, all together
        runtime.budgets.price("my-model", input=0.5, output=1.5)          # USD per million tokens
        execution = await runtime.start("triage", text, budget=keel.Budget(action_calls=3))
        print(await runtime.budgets.usage(execution.id))
    """

    def __init__(self, runtime: Runtime, config: BudgetsConfig | None = None, *, source: str = "the stack"):
        self._runtime = weakref.ref(runtime)
        self.config = config or BudgetsConfig()
        self.source = source
        #: the clock of wall_time and of tenant periods (seconds since the epoch); tests inject one
        self.clock: Callable[[], float] = time.time
        self._python: dict[str, Budget] = {}  # "" | "runnable:<name>"
        self._python_tenants: dict[str, TenantBudget] = {}
        self._python_prices: dict[str, ModelPrice] = {}
        self._plugin_prices: dict[str, tuple[ModelPrice, str]] | None = None
        self._meters: weakref.WeakValueDictionary[tuple[str, str], Meter] = weakref.WeakValueDictionary()

    # ------------------------------------------------------------------------- declaring

    def limit(
        self,
        *,
        runnable: str | None = None,
        tenant: str | None = None,
        period: Literal["day", "month", "total"] = "day",
        **limits: float | None,
    ) -> None:
        """Set limits in code; they replace the stack's, key by key, for the same scope."""
        if runnable is not None and tenant is not None:
            raise BudgetError("limit(): give runnable or tenant, not both")
        try:
            if tenant is not None:
                self._python_tenants[tenant] = TenantBudget(period=period, **limits)  # type: ignore[arg-type]
            else:
                self._python["" if runnable is None else f"runnable:{runnable}"] = Budget(**limits)  # type: ignore[arg-type]
        except ValueError as err:
            raise BudgetError(f"runtime.budgets.limit(): {err}; valid limits: {', '.join(LIMITS)}") from err

    def price(self, model: str, *, input: float, output: float) -> None:
        """Price a model (USD per million tokens), over what plugins register."""
        self._python_prices[model] = ModelPrice(input=input, output=output)

    # ----------------------------------------------------------------------------- reading

    def limits_for(self, runnable: str, requested: Budget | None = None) -> dict[str, tuple[float, str]]:
        """The per-execution limits of ``runnable``'s executions, each with where it was declared."""
        layers: list[tuple[Budget | None, str]] = [
            (self.config, f"[budgets] in {self.source}"),
            (self._python.get(""), "runtime.budgets.limit()"),
            (self.config.runnables.get(runnable), f"[budgets.runnables.{runnable}] in {self.source}"),
            (self._python.get(f"runnable:{runnable}"), f"runtime.budgets.limit(runnable={runnable!r})"),
            (requested, "runtime.start(..., budget=...)"),
        ]
        out: dict[str, tuple[float, str]] = {}
        for budget, source in layers:
            if budget is not None:
                out.update({name: (value, source) for name, value in Budget.limits(budget).items()})
        return out

    def tenant_budget(self, tenant: str) -> tuple[TenantBudget, str] | None:
        """A tenant's budget and where it was declared, or ``None``."""
        if tenant in self._python_tenants:
            return self._python_tenants[tenant], f"runtime.budgets.limit(tenant={tenant!r})"
        if tenant in self.config.tenants:
            return self.config.tenants[tenant], f"[budgets.tenants.{tenant}] in {self.source}"
        return None

    def is_set(self) -> bool:
        """Whether any budget at all is declared."""
        return bool(
            self.config.limits() or self.config.runnables or self.config.tenants or self._python or self._python_tenants
        )

    def price_of(self, model: str | None) -> ModelPrice | None:
        """A model's price: the stack's, then code's, then the plugins'; an exact name first, then the
        longest known prefix (``gpt-4o-mini-2024-07-18`` is priced as ``gpt-4o-mini``)."""
        if not model:
            return None
        plugin = self.plugin_prices()
        for table in (self.config.prices, self._python_prices, {k: v for k, (v, _p) in plugin.items()}):
            if model in table:
                return table[model]
            best = max((name for name in table if model.startswith(name)), key=len, default="")
            if best:
                return table[best]
        return None

    def plugin_prices(self) -> dict[str, tuple[ModelPrice, str]]:
        """Prices from ``keel_model_prices()``; two plugins pricing one model differently is an error
        naming both (set the price in ``[budgets.prices]`` to decide)."""
        if self._plugin_prices is None:
            runtime = self._runtime()
            found: dict[str, tuple[ModelPrice, str]] = {}
            if runtime is not None:
                hook = runtime.host.pm.hook.keel_model_prices
                for impl in hook.get_hookimpls():
                    for model, value in _prices_of(impl).items():
                        other = found.get(model)
                        if other is not None and other[0] != value and model not in self.config.prices:
                            raise BudgetError(
                                f"model {model!r} is priced by plugin {other[1]!r} ({other[0]}) and by plugin "
                                f'{impl.plugin_name!r} ({value}); decide with [budgets.prices."{model}"] in keel.toml'
                            )
                        found[model] = (value, impl.plugin_name)
            self._plugin_prices = found
        return self._plugin_prices

    # ------------------------------------------------------------------------------ meters

    def meter(self, execution_id: str, *, runnable: str, tenant: str, emit: Emit | None = None) -> Meter:
        """A new execution's meter (not saved: the execution lives in this process). Its parent is
        the meter of the execution whose task starts it; a budget given to ``runtime.start`` applies."""
        requested = _REQUESTED.get()
        meter = Meter(
            self, execution_id, runnable=runnable, tenant=tenant, limits=self.limits_for(runnable, requested),
            requested=requested, parent=_CURRENT.get(), emit=emit,
        )  # fmt: skip
        self._meters[(tenant, execution_id)] = meter
        return meter

    async def open(self, execution_id: str, *, runnable: str, tenant: str, emit: Emit | None = None) -> Meter:
        """A durable execution's meter: its usage so far comes back from the store (after a crash, in
        another process), and every change is saved there before the call it counts."""
        live = self._meters.get((tenant, execution_id))
        if live is not None:
            live.emit = emit or live.emit
            return live
        found = await self.store().get(tenant, NAMESPACE, f"execution:{execution_id}")
        requested, usage = _REQUESTED.get(), None
        if found is not None:
            usage = BudgetUsage.model_validate(found.value.get("usage", {}))
            if "requested" in found.value:
                requested = Budget.model_validate(found.value["requested"])
        meter = Meter(
            self, execution_id, runnable=runnable, tenant=tenant, limits=self.limits_for(runnable, requested),
            requested=requested, parent=_CURRENT.get(), emit=emit, durable=True, usage=usage,
        )  # fmt: skip
        self._meters[(tenant, execution_id)] = meter
        if found is None:
            await meter.save()  # its start time: wall_time counts across restarts
        return meter

    async def usage(self, execution_id: str, tenant: str = "default") -> dict[str, Any] | None:
        """An execution's usage (tokens, cost, model requests, action calls, wall time) and limits: a
        live one's, or what a durable one saved; ``None`` when nothing was counted for it."""
        meter = self._meters.get((tenant, execution_id))
        if meter is not None:
            return meter.summary()
        found = await self.store().get(tenant, NAMESPACE, f"execution:{execution_id}")
        if found is None:
            return None
        usage = BudgetUsage.model_validate(found.value.get("usage", {}))
        requested = found.value.get("requested")
        limits = self.limits_for(str(found.value.get("runnable", "")), Budget.model_validate(requested or {}))
        return {**usage.summary(self.clock()), "limits": {name: value for name, (value, _s) in limits.items()}}

    async def tenant_usage(self, tenant: str) -> dict[str, Any]:
        """A tenant's usage in its budget's current period (``{}`` with no tenant budget)."""
        declared = self.tenant_budget(tenant)
        if declared is None:
            return {}
        key = self._period_key(declared[0])
        found = await self.store().get(tenant, NAMESPACE, key)
        usage = BudgetUsage.model_validate(found.value) if found is not None else BudgetUsage()
        return {**usage.summary(), "period": key.partition(":")[2], "limits": declared[0].limits()}

    # ----------------------------------------------------------------------------- tenants

    def store(self) -> Any:
        runtime = self._runtime()
        if runtime is None:
            raise BudgetError("the runtime of these budgets is gone")
        return runtime.store()

    def _period_key(self, budget: TenantBudget) -> str:
        now = time.gmtime(self.clock())
        period = {"day": "%Y-%m-%d", "month": "%Y-%m", "total": "total"}[budget.period]
        return f"tenant:{time.strftime(period, now)}"

    async def _tenant_update(
        self, meter: Meter, add: Mapping[str, float], check: Mapping[str, float] | None = None, call: str = ""
    ) -> None:
        """Check ``check`` against the tenant's period usage (when given), then add ``add`` to it,
        compare-and-set: every process sharing the store counts into one total."""
        declared = self.tenant_budget(meter.tenant)
        if declared is None:
            return
        budget, source = declared
        key = self._period_key(budget)
        store = self.store()
        for _ in range(100):  # another execution wrote between our read and write: read again
            found = await store.get(meter.tenant, NAMESPACE, key)
            usage = BudgetUsage.model_validate(found.value) if found is not None else BudgetUsage()
            for name, limit in budget.limits().items():
                used = usage.value(name, 0.0)
                if check is not None and name in check and used + check[name] > limit:
                    scope = f"tenant {meter.tenant!r} ({key.partition(':')[2]})"
                    meter._refuse(None, name, limit, used, scope, source, call)
            for name, value in add.items():
                setattr(usage, name, getattr(usage, name) + value)
            try:
                await store.put(
                    meter.tenant, NAMESPACE, key, usage.model_dump(), expected_version=found.version if found else 0
                )
                return
            except ConflictError:
                continue
        raise BudgetError(f"tenant {meter.tenant!r}: its usage kept changing under 100 writes; try again")

    async def _tenant_charge(self, meter: Meter, adds: Mapping[str, float], call: str) -> None:
        counted = {name: value for name, value in adds.items() if name in ("model_requests", "action_calls")}
        await self._tenant_update(meter, counted, adds, call)

    async def _tenant_add(self, meter: Meter, adds: Mapping[str, float]) -> None:
        await self._tenant_update(meter, adds)
