"""An agent with an output contract gets a validated result through each model driver: the local
model (llama.cpp in process, the embedded default) and keel-model-openai (against the package's
fault-injecting server, which here answers plainly)."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, Field

import keel
from keel.runtime import discover_for
from keel_model_openai.testing import FakeOpenAI, Reply

TEXT = "Invoice 2024-117 from Nordlys AS, due 2024-12-01: 3 licences at 120.00 EUR each."


class Invoice(BaseModel):
    number: str = Field(description="the invoice number, as printed")
    vendor: str = Field(description="the company that issued the invoice")
    due: str = Field(description="the due date, YYYY-MM-DD")
    total_eur: float = Field(ge=0, description="the total amount in EUR")


AGENT = keel.Agent("invoice", "Extract the invoice from the user's text.", output=Invoice, max_retries=2)


async def run_in(folder: Path) -> tuple[Invoice, keel.Model]:
    stack = keel.load_stack(cwd=folder)
    async with keel.Runtime(discover_for(stack), stack) as runtime:
        execution = await AGENT.start(TEXT, runtime=runtime)
        return await execution.get_data(), runtime.model()


async def test_agent_contract_through_the_local_model(tmp_path: Path) -> None:
    invoice, model = await run_in(tmp_path)  # no stack file: the embedded default
    assert isinstance(invoice, Invoice) and model.name == "local:smollm2"
    assert invoice.vendor == "Nordlys AS"


async def test_agent_contract_through_the_openai_driver(tmp_path: Path) -> None:
    answer = {"number": "2024-117", "vendor": "Nordlys AS", "due": "2024-12-01", "total_eur": 360.0}
    with FakeOpenAI(default=Reply(json.dumps(answer), chunks=9)) as server:
        (tmp_path / "keel.toml").write_text(
            f'model = "fake"\n[models.fake]\nprovider = "openai"\nbase_url = "{server.url}"\nmodel = "fake-model"\n',
            encoding="utf-8",
        )
        invoice, model = await run_in(tmp_path)
        sent = server.requests[-1]["body"]
    assert invoice == Invoice(**answer) and model.name == "openai:fake-model"
    assert sent["response_format"]["json_schema"]["schema"] == Invoice.model_json_schema()
