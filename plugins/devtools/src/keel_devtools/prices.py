"""Token prices, and the cost of one model answer.

Prices are US dollars per million tokens, pinned here with the date they were read from the
providers' price pages; they change, so a user extends or overrides them (``PriceTable.add``, the
``KEEL_DEVTOOLS_PRICES`` TOML file, or ``configure(prices=...)``). A model the table does not know
costs nothing and is marked ``priced: false``, never guessed.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

import keel

__all__ = ["DEFAULT_PRICES", "Price", "PriceTable", "PricesError"]


class PricesError(keel.KeelError):
    """A price table that cannot be read."""

    code = "devtools.prices_invalid"


class Price(BaseModel):
    """What a million tokens cost, in US dollars."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: float = Field(ge=0, description="USD per million input (prompt) tokens")
    output: float = Field(ge=0, description="USD per million output (completion) tokens")


#: read from the providers' public price pages, 2026-11 (standard tier, no caching discounts)
DEFAULT_PRICES: dict[str, Price] = {
    "gpt-4o": Price(input=2.50, output=10.00),
    "gpt-4o-mini": Price(input=0.15, output=0.60),
    "gpt-4.1": Price(input=2.00, output=8.00),
    "gpt-4.1-mini": Price(input=0.40, output=1.60),
    "gpt-4.1-nano": Price(input=0.10, output=0.40),
    "o3": Price(input=2.00, output=8.00),
    "o4-mini": Price(input=1.10, output=4.40),
    "claude-sonnet-4": Price(input=3.00, output=15.00),
    "claude-3-5-haiku": Price(input=0.80, output=4.00),
    # local and test models cost nothing, and are priced (not "unknown")
    "scripted": Price(input=0, output=0),
    "local": Price(input=0, output=0),
}


class PriceTable:
    """Model name -> :class:`Price`. A name is matched exactly, then by its longest known prefix
    (``gpt-4o-mini-2024-07-18`` is priced as ``gpt-4o-mini``)."""

    def __init__(self, prices: Mapping[str, Price | Mapping[str, float]] | None = None, *, defaults: bool = True):
        self._prices: dict[str, Price] = dict(DEFAULT_PRICES) if defaults else {}
        self.frozen: str | None = None  # why this table can no longer change (add() says so)
        for name, price in (prices or {}).items():
            self.add(name, price)

    def add(self, name: str, price: Price | Mapping[str, float]) -> None:
        """Add or replace a model's price (``{"input": 2.5, "output": 10}`` per million tokens)."""
        if self.frozen:
            raise PricesError(f"price of model {name!r} cannot be added: {self.frozen}")
        try:
            self._prices[name] = price if isinstance(price, Price) else Price.model_validate(dict(price))
        except ValueError as err:
            raise PricesError(
                f"price of model {name!r} is not valid: {err}; give input and output in USD per million tokens"
            ) from err

    @classmethod
    def from_file(cls, path: str | Path) -> PriceTable:
        """The defaults, extended by a TOML file of ``[prices."model-name"] input = .. output = ..``."""
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as err:
            raise PricesError(f"price file {path}: cannot be read: {err}") from err
        prices = data.get("prices", data)
        if not isinstance(prices, dict):
            raise PricesError(f'price file {path}: expected [prices."model"] tables')
        return cls(prices)

    @classmethod
    def from_env(cls) -> PriceTable:
        """The defaults, extended by ``KEEL_DEVTOOLS_PRICES`` (a TOML file) when it is set."""
        path = os.environ.get("KEEL_DEVTOOLS_PRICES")
        return cls.from_file(path) if path else cls()

    def lookup(self, model: str | None) -> Price | None:
        if not model:
            return None
        price = self._prices.get(model)
        if price is not None:
            return price
        best = ""
        for name in self._prices:
            if model.startswith(name) and len(name) > len(best):
                best = name
        return self._prices[best] if best else None

    def cost(self, model: str | None, usage: Mapping[str, Any] | None) -> tuple[float, bool]:
        """``(usd, priced)`` for an answer's usage; ``priced`` is false for an unknown model."""
        if not usage:
            return 0.0, True
        price = self.lookup(model)
        if price is None:
            return 0.0, False
        tokens_in = int(usage.get("input_tokens") or 0)
        tokens_out = int(usage.get("output_tokens") or 0)
        return (tokens_in * price.input + tokens_out * price.output) / 1_000_000, True

    def __contains__(self, model: object) -> bool:
        return isinstance(model, str) and self.lookup(model) is not None
