"""Budgets: how many tokens, dollars, model requests, action calls and seconds an execution may use.

The kernel owns them, so no agent, flow or plugin can forget to check: every model request an
:class:`keel.Agent` makes and every action call that goes through :func:`keel.call_action` asks the
execution's :class:`Meter` first, and a call that would pass a limit is never made: it raises
:class:`BudgetExceeded` (which budget, its limit, the usage) and the execution publishes a
``budget.exceeded`` event. Three scopes, all checked before each call:

- **per execution**: ``[budgets]`` (every execution), ``[budgets.runnables.<name>]`` (the executions
  of one runnable, key by key over the defaults), or ``runtime.start(..., budget=Budget(...))``;
- **per parent**: an agent started inside a flow (or inside another agent's action) also counts
  against the flow's budget, through the flow's meter;
- **per tenant**: ``[budgets.tenants.<id>]``, all of a tenant's executions together, per ``period``
  (``day``, ``month`` or ``total``), kept in the stack's store with compare-and-set.

A durable execution (a TriggerFlow flow) keeps its usage in the stack's store under its id
(namespace ``keel.budgets``), so after a crash the usage already spent still counts. Cost comes
from prices: ``[budgets.prices."<model>"]``, ``runtime.budgets.price()``, then what plugins
register through ``keel_model_prices()`` (DevTools' table); a cost limit on a model with no price
is refused, never guessed. See docs/budgets.md.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal

import anyio
from pydantic import BaseModel, ConfigDict, Field, model_validator

from keel.errors import KeelError

if TYPE_CHECKING:
    from keel.budget_manager import Budgets

__all__ = [
    "LIMITS",
    "Budget",
    "BudgetError",
    "BudgetExceeded",
    "BudgetUsage",
    "BudgetsConfig",
    "Meter",
    "ModelPrice",
    "TenantBudget",
    "current_meter",
]

#: the limits a budget may set, in the order they are reported
LIMITS = ("tokens", "cost", "model_requests", "action_calls", "wall_time")
#: the store namespace of recorded usage (keys ``execution:<id>`` and ``tenant:<period>``)
NAMESPACE = "keel.budgets"

Emit = Callable[..., Any]


class BudgetError(KeelError):
    """A budget that cannot be checked (a cost limit on a model with no price, a bad declaration)."""

    code = "budget.invalid"


class BudgetExceeded(BudgetError):
    """A call was refused because it would pass a budget; nothing was called.

    :ivar budget: ``tokens``, ``cost``, ``model_requests``, ``action_calls`` or ``wall_time``.
    :ivar limit: the limit in force.
    :ivar usage: what was used before the refused call.
    :ivar scope: ``execution``, ``parent <id>`` or ``tenant <id> (<period>)``.
    :ivar source: where the limit was declared (``[budgets.runnables.x] in keel.toml``...).
    """

    code = "budget.exceeded"

    def __init__(
        self, budget: str, limit: float, usage: float, *, scope: str, source: str, execution_id: str, call: str
    ):
        self.budget, self.limit, self.usage = budget, limit, usage
        self.scope, self.source, self.execution_id, self.call = scope, source, execution_id, call
        super().__init__(
            f"budget {budget!r} of {scope} would be exceeded by {call} (limit {_fmt(limit)}, used {_fmt(usage)}; "
            f"execution {execution_id}); nothing was called. Raise the limit ({source}) or make the task smaller"
        )


def _fmt(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


# ------------------------------------------------------------------------------------ declarations


class Budget(BaseModel):
    """Limits; an unset one is no limit. ``cost`` is in US dollars, ``wall_time`` in seconds from the
    execution's start (waits included: a durable execution's clock runs across restarts)."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    tokens: int | None = Field(default=None, ge=0, description="input + output tokens")
    cost: float | None = Field(default=None, ge=0, description="US dollars, from the model prices")
    model_requests: int | None = Field(default=None, ge=0, description="requests sent to a model")
    action_calls: int | None = Field(default=None, ge=0, description="action (tool) calls")
    wall_time: float | None = Field(default=None, gt=0, description="seconds since the execution started")

    def limits(self) -> dict[str, float]:
        """The limits that are set."""
        return {name: value for name in LIMITS if (value := getattr(self, name)) is not None}


class TenantBudget(Budget):
    """A tenant's limits over all its executions, per ``period`` (UTC calendar day or month, or
    ``total``). ``wall_time`` is per execution, so a tenant budget cannot set it."""

    period: Literal["day", "month", "total"] = Field(default="day", description="when the usage starts again")

    @model_validator(mode="after")
    def _no_wall_time(self) -> TenantBudget:
        if self.wall_time is not None:
            raise ValueError("wall_time is per execution: set it in [budgets] or [budgets.runnables.<name>]")
        return self


class ModelPrice(BaseModel):
    """What a million tokens of a model cost, in US dollars."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    input: float = Field(ge=0, description="USD per million input (prompt) tokens")
    output: float = Field(ge=0, description="USD per million output (completion) tokens")


class BudgetsConfig(Budget):
    """The ``[budgets]`` table of a stack: its own keys limit every execution."""

    runnables: dict[str, Budget] = Field(default_factory=dict, description="[budgets.runnables.<name>]")
    tenants: dict[str, TenantBudget] = Field(default_factory=dict, description="[budgets.tenants.<id>]")
    prices: dict[str, ModelPrice] = Field(default_factory=dict, description='[budgets.prices."<model>"]')


class BudgetUsage(BaseModel):
    """What an execution (or a tenant) has used, as it is stored and shown."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    model_requests: int = 0
    action_calls: int = 0
    started_at: float = 0.0
    #: models answered with no known price (their cost is not in ``cost``)
    unpriced: list[str] = Field(default_factory=list)

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def value(self, budget: str, now: float) -> float:
        if budget == "wall_time":
            return round(max(now - self.started_at, 0.0), 3)
        return float(self.cost) if budget == "cost" else int(getattr(self, budget))

    def summary(self, now: float | None = None) -> dict[str, Any]:
        """Plain data for events, ``keel flow show`` and APIs: every counter and the wall time."""
        data = self.model_dump(exclude={"started_at"})
        data["tokens"] = self.tokens
        data["cost"] = round(self.cost, 6)
        if self.started_at:
            data["wall_time"] = self.value("wall_time", time.time() if now is None else now)
        return data


# ------------------------------------------------------------------------------------------- meters

_CURRENT: contextvars.ContextVar[Meter | None] = contextvars.ContextVar("keel_budget_meter", default=None)
_REQUESTED: contextvars.ContextVar[Budget | None] = contextvars.ContextVar("keel_budget_requested", default=None)


def current_meter() -> Meter | None:
    """The meter of the execution whose task this is (``None`` outside one)."""
    return _CURRENT.get()


@contextmanager
def metering(meter: Meter) -> Iterator[Meter]:
    """Run the block as ``meter``'s execution: calls in it count there, executions started in it
    count there too (as their parent). An execution's own task enters it once."""
    token = _CURRENT.set(meter)
    requested = _REQUESTED.set(None)  # a budget given to runtime.start() is this execution's, not its children's
    try:
        yield meter
    finally:
        _REQUESTED.reset(requested)
        _CURRENT.reset(token)


@contextmanager
def requesting(budget: Budget | None) -> Iterator[None]:
    """``runtime.start(..., budget=...)``: the execution the block starts takes ``budget``."""
    token = _REQUESTED.set(budget)
    try:
        yield
    finally:
        _REQUESTED.reset(token)


class Meter:
    """One execution's usage and limits; the parent's meter and the tenant's ledger are checked too.

    An execution's owner calls :meth:`before_model_request` / :meth:`after_model_response` around each
    model request and :meth:`before_action_call` before each action call (``keel.Agent`` and
    ``keel.call_action`` do). Checks and reservations happen without an ``await`` between them, so
    concurrent calls of one execution cannot both pass the last unit of a limit.
    """

    def __init__(
        self,
        budgets: Budgets,
        execution_id: str,
        *,
        runnable: str,
        tenant: str,
        limits: dict[str, tuple[float, str]],
        requested: Budget | None = None,
        parent: Meter | None = None,
        emit: Emit | None = None,
        durable: bool = False,
        usage: BudgetUsage | None = None,
    ):
        self.budgets = budgets
        self.execution_id = execution_id
        self.runnable = runnable
        self.tenant = tenant
        #: budget -> (limit, where it was declared)
        self.limits = limits
        self.requested = requested
        self.parent = parent
        self.emit = emit
        self.durable = durable
        self.usage = usage or BudgetUsage(started_at=budgets.clock())
        self._last_input = 0  # the last request's input tokens: a lower bound for the next one
        self._lock: anyio.Lock | None = None

    def __repr__(self) -> str:
        return f"Meter({self.execution_id!r}, runnable={self.runnable!r}, limits={self.limits})"

    def summary(self) -> dict[str, Any]:
        """The usage, with the limits in force (``limits``: budget -> limit)."""
        data = self.usage.summary(self.budgets.clock())
        data["limits"] = {name: value for name, (value, _source) in self.limits.items()}
        return data

    def _chain(self) -> Iterator[Meter]:
        meter: Meter | None = self
        while meter is not None:
            yield meter
            meter = meter.parent

    # ------------------------------------------------------------------------------- checking

    def _refuse(
        self, owner: Meter | None, budget: str, limit: float, used: float, scope: str, source: str, call: str
    ) -> None:
        error = BudgetExceeded(
            budget, limit, used, scope=scope, source=source, execution_id=self.execution_id, call=call
        )
        payload = {
            "budget": budget, "limit": limit, "usage": used, "scope": scope, "source": source, "call": call,
            "execution_id": self.execution_id, "runnable": self.runnable, "message": str(error),
        }  # fmt: skip
        for meter in {id(m): m for m in (self, owner) if m is not None}.values():
            if meter.emit is not None:
                meter.emit("budget.exceeded", payload, level="warning")
        raise error

    def _check(self, adds: Mapping[str, float], call: str) -> None:
        """Refuse ``call`` when, in this meter or a parent, usage plus ``adds`` passes a limit."""
        now = self.budgets.clock()
        for meter in self._chain():
            for budget, (limit, source) in meter.limits.items():
                used = meter.usage.value(budget, now)
                if (budget == "wall_time" or budget in adds) and used + adds.get(budget, 0) > limit:
                    scope = "execution" if meter is self else f"parent execution {meter.execution_id}"
                    self._refuse(meter, budget, limit, used, scope, source, call)

    def _adds(self, model: str | None) -> dict[str, float]:
        lower = self._last_input
        adds: dict[str, float] = {"model_requests": 1, "tokens": max(lower, 1)}
        if self._wants_cost():
            price = self.budgets.price_of(model)
            if price is None:
                raise BudgetError(
                    f"execution {self.execution_id} has a cost budget, but model {model!r} has no price: nothing "
                    f'was called. Add [budgets.prices."{model}"] input = ..., output = ... (USD per million tokens) '
                    "to keel.toml, or runtime.budgets.price(...)"
                )
            adds["cost"] = lower * price.input / 1_000_000
        return adds

    def _wants_cost(self) -> bool:
        if any("cost" in m.limits for m in self._chain()):
            return True
        tenant = self.budgets.tenant_budget(self.tenant)
        return tenant is not None and tenant[0].cost is not None

    def _reserve(self, counter: str) -> None:
        for meter in self._chain():
            setattr(meter.usage, counter, getattr(meter.usage, counter) + 1)

    def _release(self, counter: str) -> None:
        for meter in self._chain():
            setattr(meter.usage, counter, getattr(meter.usage, counter) - 1)

    # ------------------------------------------------------------------------------ the calls

    async def before_model_request(self, model: str | None) -> None:
        """Refuse a model request that would pass a budget; otherwise count it (and save the count)."""
        call = f"a request to model {model!r}"
        adds = self._adds(model)
        self._check(adds, call)
        self._reserve("model_requests")
        try:
            await self.budgets._tenant_charge(self, adds, call)
        except BaseException:
            self._release("model_requests")
            raise
        await self._save()

    async def after_model_response(self, model: str | None, input_tokens: int, output_tokens: int) -> None:
        """Count an answer's tokens and cost here, in every parent, and for the tenant."""
        self._last_input = input_tokens
        price = self.budgets.price_of(model)
        cost = (input_tokens * price.input + output_tokens * price.output) / 1_000_000 if price else 0.0
        for meter in self._chain():
            usage = meter.usage
            usage.input_tokens += input_tokens
            usage.output_tokens += output_tokens
            usage.cost += cost
            if price is None and model and model not in usage.unpriced and (input_tokens or output_tokens):
                usage.unpriced.append(model)
        adds = {"input_tokens": input_tokens, "output_tokens": output_tokens, "cost": cost}
        await self.budgets._tenant_add(self, adds)
        await self._save()

    async def before_action_call(self, action: str) -> None:
        """Refuse an action call that would pass a budget; otherwise count it (and save the count)."""
        call = f"a call of action {action!r}"
        self._check({"action_calls": 1}, call)
        self._reserve("action_calls")
        try:
            await self.budgets._tenant_charge(self, {"action_calls": 1}, call)
        except BaseException:
            self._release("action_calls")
            raise
        await self._save()

    def check_action_call(self, action: str) -> None:
        """Refuse early (before policy and approval) an action call this execution has no room for."""
        self._check({"action_calls": 1}, f"a call of action {action!r}")

    async def _save(self) -> None:
        for meter in self._chain():
            if meter.durable:
                await meter.save()

    async def save(self) -> None:
        """Write this execution's usage to the store (durable executions; one writer each)."""
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            record = {"runnable": self.runnable, "usage": self.usage.model_dump()}
            if self.requested is not None:
                record["requested"] = self.requested.model_dump(exclude_none=True)
            await self.budgets.store().put(self.tenant, NAMESPACE, f"execution:{self.execution_id}", record)
