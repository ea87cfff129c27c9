"""One ticket walked through the running desk, printing what happened at each stage.

The approval (stage 6) is answered one of three ways: ``page`` (a person, or a browser test, presses
Approve on the page), ``terminal`` (the page, or Enter in this terminal), ``auto`` (no one is there:
this script answers through the same HTTP route the page uses, and says so).
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
from desk_service import classifier
from service import IN_SECRET, Desk

import keel
import keel_devtools
from keel.doctor import DoctorContext, run_doctor
from keel.testing import ScriptedModel, make_host
from keel_scheduler.intake import sign

HERE = Path(__file__).resolve().parent
#: the flow's dataset first (the suite runs it too: tests/test_example_evals.py), then the desk's own
DATASETS = [
    HERE.parent / "evals" / "desk.yaml",
    HERE / "evals" / "classifier.yaml",
    HERE / "evals" / "sla_reminder.yaml",
]
TICKET = {
    "id": "T-1042",
    "customer": "Ada Lovelace",
    "order": "A-1042",
    "subject": "Espresso machine arrived broken",
    "body": "The espresso machine I ordered arrived with a cracked water tank. I would like my money back.",
}


async def deliver(desk: Desk, ticket: dict[str, Any], delivery: str) -> httpx.Response:
    """What the helpdesk does: POST the ticket, signed, to the intake."""
    body = json.dumps(ticket).encode()
    headers = {"X-Keel-Signature": sign(IN_SECRET, body), "X-Keel-Delivery": delivery}
    async with httpx.AsyncClient(base_url=desk.intake_url, timeout=30) as http:
        return await http.post("/hooks/helpdesk", content=body, headers=headers)


async def answer_over_http(desk: Desk, execution_id: str, approved: bool, by: str) -> None:
    """The page's Approve button, from a script: the gateway validates it against the wait's schema."""
    answer = {"payload": {"approved": approved, "by": by}, "request_id": f"walk-{execution_id}"}
    async with httpx.AsyncClient(base_url=desk.url, timeout=30) as http:
        reply = await http.post(
            f"/v1/executions/{execution_id}/signals/refund_approval", json=answer, headers=desk.headers
        )
        reply.raise_for_status()


async def walk(desk: Desk, *, answer: str = "auto", say: Callable[[str], None] = print) -> dict[str, Any]:
    """Deliver one ticket and follow it to its end; returns what happened (for tests)."""
    ticket = {**TICKET, "id": f"T-{uuid.uuid4().hex[:6].upper()}"}
    delivery = f"hd-{ticket['id']}"
    say(f"page:      {desk.page}   (the inbox; the ticket appears there live)")
    say("")
    first = await deliver(desk, ticket, delivery)
    again = await deliver(desk, ticket, delivery)  # the helpdesk retries a delivery it thinks was lost
    say(f"stage 9    webhook intake: {first.status_code} job {first.json().get('job')}; the same delivery again: "
        f"{again.status_code}, the same job (one ticket, one job)")  # fmt: skip
    with anyio.fail_after(120):
        while not (record := await desk.ticket(ticket["id"])) or not record.get("execution_id"):
            await anyio.sleep(0.05)
    execution_id = record["execution_id"]
    execution = await desk.runtime.find_execution(execution_id)
    assert execution is not None
    say(f"stage 6    the worker started flow 'desk' as execution {execution_id}")
    answered = False
    async for event in execution.events():
        item = event.payload.get("item") if event.kind == "flow.stream" else None
        if isinstance(item, dict) and "message" in item:  # a stage line (not the classifier's fields)
            say(f"stage {item.get('stage', '?'):<4} {item['message']}")
        elif event.kind == "execution.waiting" and not answered:
            answered = True
            [interrupt] = event.payload["interrupts"]
            question = interrupt["payload"]["message"]
            await _answer(desk, ticket["id"], execution_id, question, answer, say)
        elif event.kind in ("execution.completed", "execution.failed", "execution.cancelled"):
            break
    outcome = await execution.result()
    say(f"result     {json.dumps(outcome)}")
    with anyio.fail_after(30):  # the worker sends task.completed to the webhook channel after the job commits
        while not any(
            n["type"] == "task.completed" and n["task_id"] == first.json().get("job") for n in desk.notifications
        ):
            await anyio.sleep(0.05)
    # everything the receiver kept: the job's events, sent by the worker that runs it (the only
    # sender: the gateway pushes only what it starts), and the SLA check's reminder; each once
    kinds = [n["type"] for n in desk.notifications]
    say(f"stage 8    the webhook channel delivered (signed, verified by the receiver): {', '.join(kinds)}")
    evidence = await _evidence(desk, ticket["id"])
    say(f"stage 10   Workspace ticket-{ticket['id']}: {evidence}")
    usage = await desk.runtime.budgets.usage(execution_id)
    spent = ", ".join(f"{k} {_amount(usage.get(k))}/{usage['limits'][k]}" for k in sorted(usage.get("limits") or {}))
    say(f"governance budgets of this ticket (checked before each call): {spent}")
    record = await desk.ticket(ticket["id"]) or {}
    stage_11 = await _observe(desk, execution_id, record.get("classifier_execution", ""), say)
    rows = run_doctor(DoctorContext.from_runtime(desk.runtime))
    counts = {s: sum(1 for r in rows if r.status == s) for s in ("pass", "warn", "fail")}
    say(f"doctor     {counts['pass']} pass, {counts['warn']} warn, {counts['fail']} fail "
        f"(every row: `keel --stack-file {desk.state / 'keel.toml'} doctor`)")  # fmt: skip
    for report in rows:  # a row that does not pass, with its first finding
        if report.status != "pass":
            worst = next(c for c in report.checks if c.status == report.status)
            say(f"           {report.status} {report.row}: {worst.evidence[:1]}")
    return {
        "ticket": ticket["id"], "execution_id": execution_id, "outcome": outcome, "intake": (first.status_code, again.status_code),
        "notifications": kinds, "doctor": {r.row: r.status for r in rows}, **stage_11,
    }  # fmt: skip


def _amount(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


async def _answer(
    desk: Desk, ticket_id: str, execution_id: str, question: str, how: str, say: Callable[[str], None]
) -> None:
    with anyio.fail_after(60):  # the scheduled SLA check notices the wait first (stage 9); it marks the ticket
        while not ((await desk.ticket(ticket_id)) or {}).get("reminded"):
            await anyio.sleep(0.05)
    say("stage 9    the scheduled SLA check sent a reminder through the webhook channel")
    if how == "auto":
        say(f"stage 6    {question} -> approved by this script through the page's HTTP route (no one is at a terminal)")
        await answer_over_http(desk, execution_id, True, "demo script")
    elif how == "terminal":
        say(f"stage 6    {question}\n           press Approve on the page ({desk.page}), or Enter here to approve")

        async def from_terminal() -> None:
            await anyio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
            try:
                await answer_over_http(desk, execution_id, True, "terminal")
            except httpx.HTTPStatusError:
                pass  # the page answered first

        desk.runtime.task_group.start_soon(from_terminal)
    else:
        say(f"stage 6    {question} -> waiting for the page's answer")


async def _evidence(desk: Desk, ticket_id: str) -> str:
    from keel_workspace import Workspace

    workspace = Workspace(desk.runtime.store(), f"ticket-{ticket_id}")
    entries = await workspace.entries(include_children=True)
    kinds: dict[str, int] = {}
    for entry in entries:
        kinds[entry.kind] = kinds.get(entry.kind, 0) + 1
    scopes = sorted({entry.scope.split("/", 1)[-1] for entry in entries if "/" in entry.scope})
    return ", ".join(f"{n} {k}s" for k, n in sorted(kinds.items())) + f" (role scopes: {len(scopes)})"


async def _recorded(desk: Desk, *execution_ids: str) -> None:
    """Until DevTools holds the end of each execution: the worker process records the runs it does
    in the same recording, shipped every 0.2 s."""
    desk.recorder.flush()
    with anyio.fail_after(60):
        for execution_id in execution_ids:
            while (desk.recorder.db.execution(execution_id) or {}).get("status") not in ("completed", "failed"):
                await anyio.sleep(0.1)


async def _observe(desk: Desk, execution_id: str, classifier_id: str, say: Callable[[str], None]) -> dict[str, Any]:
    await _recorded(desk, execution_id, classifier_id)
    exported = keel_devtools.export_execution(desk.recorder.db, execution_id, desk.state / f"{execution_id}.jsonl")
    header = json.loads(exported.read_text(encoding="utf-8").splitlines()[0])
    say(f"stage 11   DevTools recorded the flow ({header['status']}) and exported it to {exported}")
    recording = keel_devtools.Recording.from_db(desk.recorder.db, classifier_id)
    async with keel.Runtime(make_host(), keel.Stack()) as fresh:  # today's code, no model, no action
        fresh.add(classifier)
        replayed = await keel_devtools.replay(recording, runtime=fresh)
    verdict = "no divergence" if replayed.ok else str(replayed.divergence)
    say(f"stage 11   replay of the classifier's execution {classifier_id} against today's code: {verdict}")
    # the datasets on this stack's own model: actions from recorded results, approvals from the
    # cases; the reports go where doctor reads the last runs. On the slow local model only the
    # flow's first case and the SLA check run here (the suite runs every case on the scripted model).
    from keel_eval import load_dataset, run_dataset

    quick = not isinstance(desk.runtime.model(), ScriptedModel)
    failed: dict[str, list[str]] = {}
    for path in DATASETS:
        dataset = load_dataset(path)
        if quick and path.name == "classifier.yaml":
            say(f"stage 11   eval desk/evals/{path.name}: not run on the local model here (`keel eval run` runs it)")
            continue
        if quick and path == DATASETS[0]:
            dataset = dataset.model_copy(update={"cases": dataset.cases[:1]})
        report = await run_dataset(dataset, runtime=desk.runtime, concurrency=1)
        report.save(desk.state / "eval" / f"{report.id}.json")
        failed.update({f"{path.name}:{c.name}": c.failures() for c in report.cases if not c.passed})
        say(f"stage 11   eval {path.relative_to(DATASETS[0].parent.parent)}: "
            f"{sum(c.passed for c in report.cases)} of {len(report.cases)} cases pass")  # fmt: skip
    for name, why in failed.items():
        say(f"           failed {name}: {why}")
    return {"replay_ok": replayed.ok, "exported": str(exported), "eval_failed": sorted(failed)}


def devtools_hint(state: Path, execution_id: str) -> str:
    return (
        f"open the recording:  .venv/bin/keel devtools --db {state / 'devtools.db'}\n"
        f"                     then http://127.0.0.1:7788/executions/{execution_id}"
    )
