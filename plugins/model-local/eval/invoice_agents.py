"""The two set-ups of the labelled invoice eval, as agents (runnables for ``keel eval run``).

- ``plain``: system prompt "Extract the invoice as JSON.", a bare schema, no field hint: what picked
  the default weights (model alias ``<weights>-plain`` in keel.toml turns the driver's hint off);
- ``demo``: examples/hello.py's instructions and field descriptions, with the driver's field hint.

One answer per case (no retries), temperature 0, at most 100 tokens, as the original eval.
"""

from __future__ import annotations

import os

from pydantic import BaseModel, Field

import keel

WEIGHTS = os.environ.get("KEEL_EVAL_WEIGHTS", "smollm2")
OPTIONS = {"max_tokens": 100, "temperature": 0.0, "seed": 0}


class Invoice(BaseModel):
    number: str
    vendor: str
    due: str
    total_eur: float


class DescribedInvoice(BaseModel):
    number: str = Field(description="the invoice number, as printed")
    vendor: str = Field(description="the company that issued the invoice")
    due: str = Field(description="the due date, YYYY-MM-DD")
    total_eur: float = Field(ge=0, description="the total amount in EUR")


plain = keel.Agent(
    "plain", "Extract the invoice as JSON.", model=f"{WEIGHTS}-plain", output=Invoice, max_retries=0, options=OPTIONS
)
demo = keel.Agent(
    "demo",
    "Extract the invoice from the user's text. Compute the total if only unit prices are given.",
    model=WEIGHTS,
    output=DescribedInvoice,
    max_retries=0,
    options=OPTIONS,
)
