"""The labelled eval that picked keel-model-local's default weights (not a test: run it by hand).

    .venv/bin/python plugins/model-local/eval/invoice_eval.py smollm2 gemma3

Each case is the demo task of examples/hello.py: one line of text -> {number, vendor, due, total_eur},
through the driver (grammar-constrained JSON, temperature 0, at most 100 tokens, one thread), in two
set-ups: "plain" (system prompt "Extract the invoice as JSON.", a bare schema, no field hint: what
picked the default weights) and "demo" (examples/hello.py's instructions and field descriptions,
with the driver's field hint on). A field counts when it equals the label (total within 0.01 EUR).
"""

from __future__ import annotations

import sys
import time

import anyio
from pydantic import BaseModel, Field, ValidationError

import keel
from keel_model_local.driver import LocalModel


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


SETUPS = {
    "plain": ("Extract the invoice as JSON.", Invoice, False),
    "demo": (
        "Extract the invoice from the user's text. Compute the total if only unit prices are given.",
        DescribedInvoice,
        True,
    ),
}


CASES = [
    (
        "Invoice 2024-117 from Nordlys AS, due 2024-12-01: 3 licences at 120.00 EUR each.",
        ("2024-117", "Nordlys AS", "2024-12-01", 360.0),
    ),
    (
        "Invoice INV-0042 from Acme GmbH, due 2025-01-15, total 99.50 EUR.",
        ("INV-0042", "Acme GmbH", "2025-01-15", 99.5),
    ),
    (
        "Bill 7781 issued by Blue Fjord Consulting; pay by 2024-11-30; amount due: 1,250.00 EUR.",
        ("7781", "Blue Fjord Consulting", "2024-11-30", 1250.0),
    ),
    (
        "Invoice no. A-19 from Kaffe & Co, due 2025-03-01: 2 bags of coffee at 15.00 EUR each.",
        ("A-19", "Kaffe & Co", "2025-03-01", 30.0),
    ),
    (
        "Rechnung 2025-003 von Müller Bau AG, fällig am 2025-02-28, Gesamtbetrag 4800.00 EUR.",
        ("2025-003", "Müller Bau AG", "2025-02-28", 4800.0),
    ),
    ("Invoice 55-B from Oslo Print, due 2024-10-10: total 310.40 EUR.", ("55-B", "Oslo Print", "2024-10-10", 310.4)),
    (
        "From Tern Software Ltd: invoice TS-9001, 12 seats at 10.00 EUR, due 2025-06-30.",
        ("TS-9001", "Tern Software Ltd", "2025-06-30", 120.0),
    ),
    ("Invoice 3141 from Pi Labs, due 2025-03-14, amount 314.15 EUR.", ("3141", "Pi Labs", "2025-03-14", 314.15)),
    (
        "Invoice 2024-900 from Arctic Cloud AS, due 2024-12-31: hosting 75.00 EUR.",
        ("2024-900", "Arctic Cloud AS", "2024-12-31", 75.0),
    ),
    (
        "Invoice Q-12 from Delta Movers, due 2025-05-05, total 1999.99 EUR.",
        ("Q-12", "Delta Movers", "2025-05-05", 1999.99),
    ),
]


async def evaluate(weights: str, setup: str) -> None:
    system, schema, hint = SETUPS[setup]
    options = {"quiet": True, "schema_hint": hint, "max_tokens": 100, "n_threads": 1}
    model = LocalModel(keel.ModelConfig(provider="local", model=weights, options=options))
    fields = valid = perfect = 0
    seconds: list[float] = []
    try:
        for text, label in CASES:
            request = keel.ModelRequest(
                messages=[
                    keel.Message(role="system", content=system),
                    keel.Message(role="user", content=text),
                ],
                output_schema=schema.model_json_schema(),
            )
            started = time.perf_counter()
            answer = "".join([e.text async for e in model.stream(request) if isinstance(e, keel.TextDelta)])
            seconds.append(time.perf_counter() - started)
            try:
                got = Invoice.model_validate_json(answer)
            except ValidationError:
                print(f"  invalid  {answer[:70]!r}")
                continue
            valid += 1
            hits = [
                got.number == label[0],
                got.vendor == label[1],
                got.due == label[2],
                abs(got.total_eur - label[3]) < 0.01,
            ]
            fields += sum(hits)
            perfect += all(hits)
            print(f"  {''.join('x' if h else '.' for h in hits)}  {got.model_dump()}")
    finally:
        await model.aclose()
    n = len(CASES)
    print(
        f"{weights} ({setup}): valid JSON {valid}/{n}, fields right {fields}/{4 * n}, all four right {perfect}/{n}, "
        f"mean {sum(seconds) / n:.1f} s per answer"
    )


if __name__ == "__main__":
    for name in sys.argv[1:] or ["smollm2", "gemma3"]:
        for setup in SETUPS:
            anyio.run(evaluate, name, setup)
