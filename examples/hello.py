"""Keel's first example: an agent extracts a structured invoice from a short text.

Runs offline with no API key, on the embedded defaults: the stack's model (the ``local`` model
plugin, when it is installed) answers; with no model plugin installed, the kernel's scripted test
model gives a canned answer, and the output says so. The answer streams as instant events (shown
as they complete), then the validated invoice is what gets stored.
"""

from __future__ import annotations

import json

import anyio
from pydantic import BaseModel, Field

import keel
from keel.testing import ScriptedModel

# Extraction, not arithmetic: the embedded model is tiny (135M parameters); it copies fields well
# and judges poorly. For harder tasks, point the stack at a stronger model (docs/models.md).
TEXT = "Invoice 2024-117 from Nordlys AS. Due date: 2024-12-01. Total: 360.00 EUR (3 licences)."
CANNED = '{"number": "2024-117", "vendor": "Nordlys AS", "due": "2024-12-01", "total_eur": 360.0}'


class Invoice(BaseModel):
    number: str = Field(description="the invoice number, as printed")
    vendor: str = Field(description="the company that issued the invoice")
    due: str = Field(description="the due date, YYYY-MM-DD")
    total_eur: float = Field(ge=0, description="the total amount in EUR")


agent = keel.Agent(
    "invoice",
    "Extract the invoice from the user's text.",
    output=Invoice,
    ensure_keys=["vendor", "number"],
    max_retries=2,
)


async def main() -> None:
    async with keel.Runtime.open() as runtime:
        try:
            model = runtime.model()
            note = f"model: {model.name}"
        except keel.DriverNotFoundError:
            runtime.use_model(ScriptedModel([CANNED], chunks=7))
            note = "model: scripted (no model plugin installed; this answer is canned)"
        print(note)
        execution = await agent.start(TEXT, runtime=runtime)
        async for event in execution.instant():
            if event.kind == "reset":
                print(f"  (attempt {event.attempt} was rejected; retrying)")
            elif event.is_complete and event.path:
                print(f"  {event.path}: {event.value!r}")
        invoice = await execution.get_data()  # validated; the only thing we store
        store = runtime.store()
        await store.put("default", "invoices", invoice.number, invoice.model_dump())
        print(f"store: {type(store).__name__}")
        print(json.dumps(invoice.model_dump(), indent=2))


if __name__ == "__main__":
    anyio.run(main)
