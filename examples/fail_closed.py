"""Fail closed: a sloppy approver never approves, and a crashing runnable fails only itself.

python examples/fail_closed.py
"""

from __future__ import annotations

from typing import Any

import anyio

import keel
from keel.testing import make_host


@keel.action(risk="irreversible")
def drop_table(name: str) -> str:
    """Drop a database table."""
    return f"dropped {name}"


class Crashy:
    """A third-party runnable whose task raises on input it did not expect."""

    name = "crashy"
    kind = "demo"
    description = "sleeps input['seconds']"

    def input_schema(self) -> dict[str, Any]:
        return {"type": "object"}

    def output_schema(self) -> dict[str, Any]:
        return {}

    async def start(self, input: Any, *, runtime: keel.Runtime, tenant: str = "default") -> keel.Execution:
        log: keel.EventLog[keel.RuntimeEvent] = keel.EventLog()
        execution = _Nap(log, tenant)
        runtime.task_group.start_soon(anyio.sleep, input["seconds"])  # "forever" raises TypeError
        return execution


class _Nap:
    kind = "demo"

    def __init__(self, log: keel.EventLog[keel.RuntimeEvent], tenant: str):
        self.id, self.tenant, self.log = keel.new_id("nap"), tenant, log

    @property
    def status(self) -> keel.ExecutionStatus:
        return keel.ExecutionStatus.RUNNING

    def events(self, since: int = 0) -> Any:
        return self.log.follow(since, lambda: False)

    async def result(self) -> Any:
        await anyio.sleep_forever()

    async def signal(self, name: str, payload: Any = None, *, request_id: str | None = None) -> None:
        raise keel.ConflictError("no signals")

    async def cancel(self, reason: str = "cancelled") -> None:
        pass


async def main() -> None:
    runtime = keel.Runtime(make_host(), approver=keel.CallbackApprover(lambda request: "no"))
    runtime.actions.add(drop_table)
    runtime.add(Crashy())
    async with runtime:
        outcome = await runtime.call_action("drop_table", {"name": "customers"})
        print("approver answered 'no' ->", outcome.verdict, "|", outcome.error["message"])  # type: ignore[index]
        execution = await runtime.start("crashy", {"seconds": "forever"})
        with anyio.fail_after(5):
            async for _ in execution.events():
                pass
        print("crashy execution ->", execution.status.value, "| runtime health:", runtime.health())


if __name__ == "__main__":
    anyio.run(main)
