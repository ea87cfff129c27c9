"""Budgets: a triage agent that may look orders up, and the limits the kernel holds it to (docs/budgets.md).

python examples/budgets.py

Runs offline on the scripted model: one ticket within its budget, one whose third order look-up is
refused before it runs (keel.BudgetExceeded), and one tenant that has spent its day.
"""

from __future__ import annotations

import json

import anyio
from pydantic import BaseModel

import keel
from keel.testing import Reply, ScriptedModel, make_host


class Triage(BaseModel):
    priority: str
    orders: list[str]


@keel.action(risk="read")
def lookup_order(order: str) -> dict[str, str]:
    """Find an order's status."""
    return {"order": order, "status": "shipped"}


triage = keel.Agent(
    "triage", "Triage the ticket; look up every order it names.", output=Triage, actions=["lookup_order"]
)


def answer(request: keel.ModelRequest) -> Reply:
    """The scripted model: look up each order the ticket names (one per turn), then answer."""
    ticket = next(m.content or "" for m in request.messages if m.role == "user")
    orders = [word.strip(".,?") for word in ticket.split() if word.startswith("#")]
    asked = sum(1 for m in request.messages if m.role == "tool")
    if asked < len(orders):
        call = keel.ToolCall(id=f"c{asked}", name="lookup_order", arguments={"order": orders[asked]})
        return Reply(tool_calls=[call], usage=keel.Usage(input_tokens=400, output_tokens=20))
    priority = "high" if "refund" in ticket.lower() else "normal"
    text = json.dumps({"priority": priority, "orders": orders})
    return Reply(text=text, usage=keel.Usage(input_tokens=500, output_tokens=30))


async def main() -> None:
    async with keel.Runtime(make_host(), keel.Stack()) as runtime:
        runtime.use_model(ScriptedModel(answer))
        runtime.actions.add(lookup_order)
        runtime.add(triage)
        # what keel.toml's [budgets] tables declare, in code (docs/budgets.md shows both)
        runtime.budgets.price("scripted", input=2.5, output=10.0)  # USD per million tokens
        runtime.budgets.limit(runnable="triage", action_calls=2, tokens=4_000, cost=0.01, wall_time=60)
        runtime.budgets.limit(tenant="trial", model_requests=3, period="day")

        ok = await runtime.start("triage", "Where is order #1001?")
        print("within budget:", (await ok.result()).model_dump(), await runtime.budgets.usage(ok.id))

        greedy = await runtime.start("triage", "Refund #1, #2 and #3 please.")
        try:
            await greedy.result()
        except keel.BudgetExceeded as err:
            print(f"refused: {err.budget} limit {err.limit}, used {err.usage} ({err.scope})")
        exceeded = [e.payload async for e in greedy.events() if e.kind == "budget.exceeded"]
        assert exceeded and exceeded[0]["budget"] == "action_calls", exceeded

        for n in range(2):  # each takes two model requests: the tenant's day allows three
            trial = await runtime.start("triage", f"Where is order #{n}?", tenant="trial")
            try:
                await trial.result()
                print(f"trial ticket {n}: done")
            except keel.BudgetExceeded as err:
                print(f"trial ticket {n}: refused, {err.scope} used {err.usage} of {err.limit} {err.budget}")
        print("tenant trial today:", await runtime.budgets.tenant_usage("trial"))


if __name__ == "__main__":
    anyio.run(main)
