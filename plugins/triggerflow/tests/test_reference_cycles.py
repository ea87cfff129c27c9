"""A finished in-memory flow execution is freed by reference counting, not left in reference cycles.

Its journal, its waits and its last interpreter each held the execution strongly while the
execution held them: about 60 objects per execution waited for a full garbage collection (a stall
of the event loop on a busy heap, issue 15). With the collector disabled, ``N`` executions the
registry has forgotten may leave at most ``N`` objects for a collection (fewer than one each: a
per-execution cycle brings dozens along, and the slack is for the runtime's own objects).
"""

from __future__ import annotations

import gc
import traceback
from typing import Any

import keel
from keel_triggerflow import TriggerFlow

N = 40


async def add_one(ctx: Any) -> int:
    return (ctx.value or 0) + 1


async def seed(ctx: Any) -> list[int]:
    return [1, 2, 3]


async def total(ctx: Any) -> int:
    return sum(ctx.value)


async def test_in_memory_flow_executions_leave_no_cycles(keel_runtime: keel.Runtime) -> None:
    flow = TriggerFlow("cycles", durability="none")
    flow.to(add_one).to(seed).for_each().to(add_one).end_for_each().to(total)
    keel_runtime.executions.keep_finished = 1  # forget each finished execution (the newest one stays)

    async def one() -> None:
        execution = flow.create_execution(keel_runtime)
        await execution.run(0)
        assert execution.status is keel.ExecutionStatus.COMPLETED and await execution.result() == 9

    for _ in range(3):
        await one()
    gc.collect()
    gc.disable()
    try:
        for _ in range(N + 2):  # two more push the measured ones out of the registry
            await one()
        found = gc.collect()
    finally:
        gc.enable()
    assert found <= N, f"{found} objects in cycles after {N} executions (about 60 each before)"


async def fails(ctx: Any) -> int:
    raise ValueError("the ledger is closed")


async def test_result_raises_a_kept_error_again_without_growing_its_traceback(keel_runtime: keel.Runtime) -> None:
    # raising one exception object again adds the raiser's frames to its traceback: a failed flow
    # polled for its result grew it with every call
    flow = TriggerFlow("fails", durability="none")
    flow.to(add_one).to(fails)
    execution = flow.create_execution(keel_runtime)
    await execution.run(0)
    counts = []
    for _ in range(4):
        try:
            await execution.result()
        except Exception as err:
            counts.append(len(traceback.extract_tb(err.__traceback__)))
    assert len(counts) == 4 and len(set(counts)) == 1, counts
