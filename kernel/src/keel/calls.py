"""Timeouts and retries, declared in one place: ``[calls.runnables.<name>]`` and ``[calls.actions.<name>]``.

What each setting does (docs/budgets.md, "Timeouts and retries"):

- a **runnable**'s ``timeout`` is the whole execution's, in seconds, and its ``retries`` how many times
  an agent's answer that fails its output contract is fed back and asked again (the agent's own
  ``timeout`` and ``max_retries`` when unset);
- an **action**'s ``timeout`` bounds each call of its handler, and ``retries`` is how many more times
  a call whose handler failed or timed out is tried, ``backoff`` seconds apart (doubled each time).
  Only an action that is safe to repeat is retried: risk ``read``, or one with an idempotency key; for
  any other the setting is refused when the call is made (one attempt, and an ``action.retry_refused``
  event) and ``keel doctor`` fails its governance row.

``keel stack`` shows them with the budgets; ``runtime.calls`` adds or replaces them in code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from keel.errors import KeelError

if TYPE_CHECKING:
    from keel.stack import Stack
    from keel.types import ActionSpec

__all__ = ["CallPolicies", "CallPolicy", "CallsConfig", "governance_rows", "retry_safe"]


class CallPolicy(BaseModel):
    """A timeout and a retry policy; an unset field leaves the runnable's or action's own."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    timeout: float | None = Field(default=None, gt=0, description="seconds")
    retries: int | None = Field(default=None, ge=0, le=10, description="attempts after the first")
    backoff: float | None = Field(default=None, ge=0, le=60, description="seconds before the first retry (doubled)")

    def settings(self) -> dict[str, float]:
        return {name: value for name in ("timeout", "retries", "backoff") if (value := getattr(self, name)) is not None}


class CallsConfig(BaseModel):
    """The ``[calls]`` table of a stack."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    runnables: dict[str, CallPolicy] = Field(default_factory=dict, description="[calls.runnables.<name>]")
    actions: dict[str, CallPolicy] = Field(default_factory=dict, description="[calls.actions.<name>]")


def retry_safe(spec: ActionSpec) -> bool:
    """Whether repeating a call of this action is safe: it only reads, or it carries an idempotency key."""
    return spec.risk == "read" or spec.idempotency_key is not None


class CallPolicies:
    """A runtime's timeouts and retries (``runtime.calls``): the stack's ``[calls]`` and code's."""

    def __init__(self, config: CallsConfig | None = None, *, source: str = "the stack"):
        self.config = config or CallsConfig()
        self.source = source
        self._code: dict[str, CallPolicy] = {}

    def set(
        self,
        *,
        runnable: str | None = None,
        action: str | None = None,
        timeout: float | None = None,
        retries: int | None = None,
        backoff: float | None = None,
    ) -> None:
        """Declare a runnable's or an action's policy in code (it replaces the stack's, key by key)."""
        if (runnable is None) == (action is None):
            raise KeelError("runtime.calls.set(): give exactly one of runnable= or action=")
        try:
            policy = CallPolicy(timeout=timeout, retries=retries, backoff=backoff)
        except ValueError as err:
            raise KeelError(f"runtime.calls.set(): {err}") from err
        self._code[f"runnable:{runnable}" if runnable is not None else f"action:{action}"] = policy

    def _merged(self, table: dict[str, CallPolicy], key: str, name: str) -> CallPolicy:
        merged = {**(table[name].settings() if name in table else {})}
        code = self._code.get(f"{key}:{name}")
        if code is not None:
            merged.update(code.settings())
        return CallPolicy.model_validate(merged)

    def for_runnable(self, name: str) -> CallPolicy:
        return self._merged(self.config.runnables, "runnable", name)

    def for_action(self, name: str) -> CallPolicy:
        return self._merged(self.config.actions, "action", name)

    def declared(self) -> dict[str, dict[str, CallPolicy]]:
        """Every declared policy: ``{"runnables": {...}, "actions": {...}}``, stack and code merged."""
        names = {
            "runnables": set(self.config.runnables) | {k[9:] for k in self._code if k.startswith("runnable:")},
            "actions": set(self.config.actions) | {k[7:] for k in self._code if k.startswith("action:")},
        }
        return {
            "runnables": {n: self.for_runnable(n) for n in sorted(names["runnables"])},
            "actions": {n: self.for_action(n) for n in sorted(names["actions"])},
        }


def governance_rows(stack: Stack) -> list[dict[str, Any]]:
    """What the stack declares for governance, one row per table: budgets, timeouts and retries
    (what ``keel stack`` shows under "governance")."""
    rows: list[dict[str, Any]] = []
    budgets, calls = stack.config.budgets, stack.config.calls
    if budgets is not None:
        source = stack.sources.get("budgets", "the stack")
        tables: list[tuple[str, Any]] = [("budgets", budgets)]
        tables += [(f"budgets.runnables.{n}", b) for n, b in budgets.runnables.items()]
        tables += [(f"budgets.tenants.{n}", b) for n, b in budgets.tenants.items()]
        for table, budget in tables:
            values = {**budget.limits(), **({"period": budget.period} if hasattr(budget, "period") else {})}
            if values:
                rows.append({"table": table, "values": values, "source": source})
        for model, price in budgets.prices.items():
            rows.append({"table": f'budgets.prices."{model}"', "values": price.model_dump(), "source": source})
    if calls is not None:
        source = stack.sources.get("calls", "the stack")
        for kind in ("runnables", "actions"):
            for name, policy in getattr(calls, kind).items():
                rows.append({"table": f"calls.{kind}.{name}", "values": policy.settings(), "source": source})
    return rows
