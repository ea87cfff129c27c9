"""DevTools: record an agent's executions, see what they cost, export one, replay them.

Runs offline: the scripted test model answers (priced here at a made-up rate, so the cost column
has something to show). Every RuntimeEvent goes to ./.keel/devtools.db; ``keel devtools ls`` lists
them afterwards and ``keel devtools`` shows them. The replay re-runs each execution against this
code with the recorded answers and tool results (no model asked, no action run), then once more
with a changed prompt, which diverges at the first model call.
"""

from __future__ import annotations

import json
from pathlib import Path

import anyio

import keel
import keel_devtools
from keel.testing import Reply, ScriptedModel


@keel.action(risk="read")
def exchange_rate(currency: str) -> float:
    """Today's rate of a currency to EUR."""
    return {"NOK": 0.085, "USD": 0.92}.get(currency, 1.0)


agent = keel.Agent(
    "invoice",
    "Extract the invoice; convert the total to EUR with exchange_rate.",
    output={"vendor": (str, "who issued it"), "total_eur": (float, "the total in EUR")},
    actions=["exchange_rate"],
)
TEXTS = ["Invoice from Nordlys AS, total 4,000 NOK.", "Invoice from Acme Inc, total 120 USD."]


def script() -> ScriptedModel:
    rate = keel.ToolCall(id="rate-1", name="exchange_rate", arguments={"currency": "NOK"})
    usd = keel.ToolCall(id="rate-2", name="exchange_rate", arguments={"currency": "USD"})
    return ScriptedModel(
        [
            Reply(tool_calls=[rate]),
            json.dumps({"vendor": "Nordlys AS", "total_eur": 340.0}),
            Reply(tool_calls=[usd]),
            json.dumps({"vendor": "Acme Inc", "total_eur": 110.4}),
        ],
        chunks=12,
    )


async def main() -> list[str]:
    ids = []
    async with keel.Runtime.open() as runtime:
        runtime.actions.add(exchange_rate)
        runtime.use_model(script())
        for text in TEXTS:
            execution = await agent.start(text, runtime=runtime)
            print(await execution.result())
            ids.append(execution.id)
    return ids


async def replay_all(recorder: keel_devtools.Recorder, code: keel.Agent, ids: list[str]) -> None:
    for execution_id in ids:
        recording = keel_devtools.Recording.from_db(recorder.db, execution_id)
        async with keel.Runtime.open() as runtime:  # today's code: the agent and its action
            runtime.actions.add(exchange_rate)
            runtime.add(code)
            result = await keel_devtools.replay(recording, runtime=runtime)
        print(f"replay {execution_id}: {'no divergence' if result.ok else result.divergence}")


if __name__ == "__main__":
    prices = keel_devtools.PriceTable({"scripted": {"input": 2.5, "output": 10.0}})  # USD per million tokens
    recorder = keel_devtools.configure(Path(".keel") / "devtools.db", prices=prices)
    ids = anyio.run(main)
    recorder.flush()
    rows, _ = recorder.db.page(keel_devtools.ExecutionFilter(runnable="invoice"))
    for row in rows:
        tokens = row["input_tokens"] + row["output_tokens"]
        print(f"{row['id']}  {row['status']}  {row['events']} events  {tokens} tokens  ${row['cost']:.6f}")
    file = keel_devtools.export_execution(recorder.db, ids[0], Path("first-invoice.jsonl"))
    header = json.loads(file.read_text(encoding="utf-8").splitlines()[0])
    print(f"exported {file}: {header['runnable']} {header['status']}, output {header['output']}")
    anyio.run(replay_all, recorder, agent, ids)
    changed = keel.Agent(
        "invoice",
        "Extract the invoice; convert the total to EUR.",  # the prompt changed since the recording
        output={"vendor": (str, "who issued it"), "total_eur": (float, "the total in EUR")},
        actions=["exchange_rate"],
    )
    anyio.run(replay_all, recorder, changed, ids[:1])
    recorder.close()
