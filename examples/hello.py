"""Keel's first example: extract a structured invoice from text, on the embedded defaults.

Runs offline with no API key. Until a real model plugin is installed it answers with the kernel's
scripted test model, and says so.
"""

from __future__ import annotations

import json

import anyio
import keel
from keel.testing import ScriptedModel
from pydantic import BaseModel

TEXT = "Invoice 2024-117 from Nordlys AS, due 2024-12-01: 3 licences at 120.00 EUR each."


class Invoice(BaseModel):
    number: str
    vendor: str
    due: str
    total_eur: float


async def main() -> None:
    async with keel.Runtime.open() as runtime:
        try:
            model = runtime.model()
            note = f"model: {model.name}"
        except keel.DriverNotFoundError:
            canned = '{"number": "2024-117", "vendor": "Nordlys AS", "due": "2024-12-01", "total_eur": 360.0}'
            model = runtime.use_model(ScriptedModel([canned], chunks=7))
            note = "model: scripted (no model plugin installed; this answer is canned)"
        request = keel.ModelRequest(
            messages=[
                keel.Message(role="system", content="Extract the invoice as JSON."),
                keel.Message(role="user", content=TEXT),
            ],
            output_schema=Invoice.model_json_schema(),
        )
        text = ""
        async for event in model.stream(request):
            if isinstance(event, keel.TextDelta):
                text += event.text
        invoice = Invoice.model_validate_json(text)
        store = runtime.store()
        await store.put("default", "invoices", invoice.number, invoice.model_dump())
        print(note)
        print(f"store: {type(store).__name__}")
        print(json.dumps(invoice.model_dump(), indent=2))


if __name__ == "__main__":
    anyio.run(main)
