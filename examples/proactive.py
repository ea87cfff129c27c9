"""Proactive work (stage 9): triggers become jobs once, workers run them at least once, keyed side
effects happen once.

Runs offline on the embedded SQLite queue (.keel/scheduler.db in the current folder):

- a burst of duplicate triggers for one invoice becomes one job (dedup key);
- a flaky provider fails the first attempt; the worker retries it with backoff;
- a broken job is dead-lettered after its attempts, with every cause kept;
- the worker reports each step as it claims, completes and retries.
"""

from __future__ import annotations

import anyio

import keel
from keel.testing import make_host
from keel_scheduler import Queue, Worker, WorkerEvent, current_job, task

provider_calls: dict[str, int] = {}
delivered: dict[str, str] = {}  # the provider's side: one entry per idempotency key


@task
async def send_invoice(input: dict[str, str]) -> dict[str, str]:
    """Send an invoice through a provider that is down for the first call of each invoice."""
    job = current_job()
    assert job is not None
    calls = provider_calls[input["invoice"]] = provider_calls.get(input["invoice"], 0) + 1
    if input["invoice"] == "INV-BROKEN":
        raise RuntimeError("the provider rejects this invoice: unknown customer")
    if calls == 1:
        raise ConnectionError("provider timed out")
    delivered.setdefault(job.idempotency_key, input["invoice"])
    return {"invoice": input["invoice"], "attempt": str(job.attempt)}


def show(event: WorkerEvent) -> None:
    detail = f"  ({event.detail})" if event.detail else ""
    print(f"worker: {event.kind:<9} {event.job.input['invoice']}{detail}")


async def main() -> None:
    runtime = keel.Runtime(make_host())
    runtime.add(send_invoice)
    async with runtime, Queue(".keel/scheduler.db") as queue:
        for _ in range(5):  # five webhook retries of one event: one job
            await queue.enqueue("send_invoice", {"invoice": "INV-7"}, dedup_key="invoice:INV-7", backoff=0.05)
        await queue.enqueue("send_invoice", {"invoice": "INV-8"}, dedup_key="invoice:INV-8", backoff=0.05)
        await queue.enqueue("send_invoice", {"invoice": "INV-BROKEN"}, max_attempts=2, backoff=0.05)

        await Worker(queue, runtime, poll_interval=0.05, on_event=show).run(drain=True)

        print()
        for job in sorted(await queue.list(), key=lambda j: j.input["invoice"]):
            print(f"{job.input['invoice']:<11} {job.status.value:<10} attempts={job.attempts} result={job.result}")
            for error in job.errors:
                print(f"{'':<11} attempt {error['attempt']}: {error['error']}")
        print(f"\nprovider saw {sum(provider_calls.values())} calls; delivered {sorted(delivered.values())} once each")
        assert sorted(delivered.values()) == ["INV-7", "INV-8"]


if __name__ == "__main__":
    anyio.run(main)
