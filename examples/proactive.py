"""Proactive work (stage 9): triggers become jobs once, workers run them at least once, keyed side
effects happen once.

Runs offline on the embedded SQLite queue (.keel/scheduler.db in the current folder):

- a burst of duplicate triggers for one invoice becomes one job (dedup key);
- a flaky provider fails the first attempt; the worker retries it with backoff;
- a broken job is dead-lettered after its attempts, with every cause kept;
- an hourly schedule's last three ticks are backfilled twice: three jobs (a tick's job id is the
  schedule id plus its time);
- a signed webhook delivered three times becomes one job; a forged one is refused (401);
- the worker reports each step as it claims, completes and retries.
"""

from __future__ import annotations

import json
import time

import anyio
import httpx

import keel
from keel.testing import make_host
from keel_scheduler import Queue, Worker, WorkerEvent, current_job, schedules_for, task
from keel_scheduler.intake import Intake, sign

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


@task
async def send_reminder(input: None) -> str:
    """An hourly reminder; the tick it belongs to is part of its job."""
    job = current_job()
    assert job is not None and job.scheduled_for is not None
    return time.strftime("%H:%M UTC", time.gmtime(job.scheduled_for))


@task
async def record_payment(input: dict[str, object]) -> str:
    """A payment provider's webhook, recorded once."""
    return f"payment {input['payment']} of {input['amount']} recorded"


def show(event: WorkerEvent) -> None:
    detail = f"  ({event.detail})" if event.detail else ""
    print(f"worker: {event.kind:<9} {event.job.task:<15} {label(event.job)}{detail}")


def label(job: object) -> str:
    inp = getattr(job, "input", None)
    return inp.get("invoice") or inp.get("payment") if isinstance(inp, dict) else getattr(job, "task", "?")


async def main() -> None:
    runtime = keel.Runtime(make_host())
    for runnable in (send_invoice, send_reminder, record_payment):
        runtime.add(runnable)
    async with runtime, Queue(".keel/scheduler.db") as queue:
        for _ in range(5):  # five webhook retries of one event: one job
            await queue.enqueue("send_invoice", {"invoice": "INV-7"}, dedup_key="invoice:INV-7", backoff=0.05)
        await queue.enqueue("send_invoice", {"invoice": "INV-8"}, dedup_key="invoice:INV-8", backoff=0.05)
        await queue.enqueue("send_invoice", {"invoice": "INV-BROKEN"}, max_attempts=2, backoff=0.05)

        schedules = schedules_for(runtime, queue)  # the stack's schedules: Temporal's on a temporal runner
        await schedules.add({"id": "reminders", "task": "send_reminder", "every": 3600}, replace=True)
        now = time.time()
        first = await schedules.backfill("reminders", now - 3 * 3600, now)
        again = await schedules.backfill("reminders", now - 3 * 3600, now)  # the same ticks: no new job
        print(f"schedule: backfilled {len(first)} ticks, then {len(again)} more")

        intake = Intake(queue, {"payments": {"task": "record_payment", "secret": "whsec-demo"}})
        body = json.dumps({"payment": "PAY-31", "amount": "120.00 EUR"}).encode()
        transport = httpx.ASGITransport(app=intake.asgi())
        async with httpx.AsyncClient(transport=transport, base_url="http://intake") as client:
            for _ in range(3):  # the provider retries a delivery it thinks was lost
                headers = {"X-Keel-Signature": sign("whsec-demo", body), "X-Keel-Delivery": "evt_31"}
                reply = await client.post("/hooks/payments", content=body, headers=headers)
                print(f"webhook: {reply.status_code} {reply.json()}")
            forged = await client.post("/hooks/payments", content=body, headers={"X-Keel-Signature": "t=1,v1=00"})
            print(f"webhook (forged): {forged.status_code} {forged.json()['error']}")

        await Worker(queue, runtime, poll_interval=0.05, on_event=show).run(drain=True)

        print()
        for job in sorted(await queue.list(), key=lambda j: (j.task, j.id)):
            print(f"{label(job):<15} {job.status.value:<10} attempts={job.attempts} result={job.result}")
            for error in job.errors:
                print(f"{'':<11} attempt {error['attempt']}: {error['error']}")
        print(f"\nprovider saw {sum(provider_calls.values())} calls; delivered {sorted(delivered.values())} once each")
        assert sorted(delivered.values()) == ["INV-7", "INV-8"]
        assert len(first) == 3 and again == [] and forged.status_code == 401
        assert len(await queue.list(status="completed")) == 2 + 3 + 1


if __name__ == "__main__":
    anyio.run(main)
