"""The support desk: one ticket carried through every stage of the seed, on Keel's plugins only.

    webhook (stage 9) -> queue -> worker -> the ``desk`` flow (stage 6):
        open_ticket -> classify (the ``classifier`` agent, output contract, streamed: stages 1-3)
        -> researcher sub-flow (stage 7): the ``kb`` MCP server's tools (stage 4) and the refund
           policy as a sandboxed script (stage 5), evidence into the Workspace (stage 10)
        -> reviewer sub-flow (stage 7): the ``reviewer`` agent drafts the reply, records a decision
        -> approval wait for refunds over REFUND_APPROVAL_EUR (stage 6), answered from the page
        -> settle: the irreversible ``issue_refund`` action, approved only by that recorded answer
    product events to the page (SSE) and to a signed webhook channel (stage 8); an SLA reminder on
    a schedule (stage 9); every execution recorded by DevTools, replayed, and an eval dataset
    (stage 11); ``keel doctor`` over the whole stack.

Business rules are code, the model writes words: whichever model answers (the embedded local one,
the scripted test model, a hosted one), the refund amount and the approval gate come from the order
facts and the policy script, never from the model's text. ``service.py`` runs it; ``__main__.py`` is
``make demo``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

import keel
from keel.draws import now as draw_now
from keel_triggerflow import Context, TriggerFlow
from keel_workspace import Workspace

HERE = Path(__file__).resolve().parent
#: refunds above this many EUR wait for a person; below it the policy approves them
REFUND_APPROVAL_EUR = 100.0
#: tickets waiting longer than this many seconds get an SLA reminder (a demo's scale: minutes in production)
SLA_SECONDS = 1.0
APPROVAL_SCHEMA = {
    "type": "object",
    "properties": {
        "approved": {"type": "boolean"},
        "by": {"type": "string", "maxLength": 100},
        "note": {"type": "string", "maxLength": 500},
    },
    "required": ["approved"],
    "additionalProperties": False,
}
TICKETS = "desk.tickets"  # store namespace: one small record per ticket (what the page lists)


# ----------------------------------------------------------------------------------- contracts
class Ticket(BaseModel):
    """What the shop's helpdesk webhook delivers."""

    id: str = Field(pattern=r"^[A-Za-z0-9-]{1,40}$")
    customer: str = Field(max_length=100)
    order: str = Field(max_length=40)
    subject: str = Field(max_length=200)
    body: str = Field(max_length=4000)


class Triage(BaseModel):
    """The classifier's output contract (stage 1)."""

    category: Literal["refund", "bug", "question"] = Field(description="what the customer wants")
    priority: Literal["low", "normal", "urgent"] = Field(description="how soon to answer")
    summary: str = Field(max_length=300, description="the request in one sentence")


class Case(BaseModel):
    """The researcher's input: the ticket and its triage."""

    ticket: Ticket
    triage: Triage


class Evidence(BaseModel):
    """The researcher's output: small facts, and a ref to the full evidence in the Workspace."""

    order: dict[str, Any]
    articles: list[str]
    refund_eur: float
    rule: str
    evidence_ref: str = Field(description="sha256 of the policy run's output, an artifact in the Workspace")


class Reviewed(BaseModel):
    """The reviewer's input."""

    case: Case
    evidence: Evidence


class Review(BaseModel):
    """The reviewer agent's output contract: the reply the customer gets. Short fields first and a
    bounded reply: a small local model then finishes every field instead of rambling."""

    tone: Literal["apologetic", "neutral", "firm"] = Field(description="the tone of the reply")
    reply: str = Field(max_length=240, description="the reply to the customer, one or two sentences")


class Outcome(BaseModel):
    """The desk flow's result: what business systems store."""

    ticket: str
    category: str
    priority: str
    refund_eur: float
    refunded: bool
    approved_by: str
    reply: str
    evidence_ref: str


# -------------------------------------------------------------------------------------- agents
classifier = keel.Agent(
    "classifier",
    "Classify the support ticket: category (refund, bug or question), priority, and a one-sentence summary.",
    role="You are the triage agent of a shop's support desk.",
    output=Triage,
    max_retries=2,
    timeout=120,
    options={"temperature": 0},
)
reviewer_agent = keel.Agent(
    "reviewer",
    "Write a short, polite reply to the customer from the case and the evidence. Promise nothing the "
    "evidence does not support.",
    role="You are the senior support agent who reviews every case.",
    output=Review,
    max_retries=2,
    timeout=120,
    options={"temperature": 0},
)


def scripted_answer(request: keel.ModelRequest) -> str:
    """The answers of the scripted test model (keel.testing.ScriptedModel), for tests and evals."""
    system = request.messages[0].content
    if "triage agent" in system:
        text = request.messages[-1].content.lower()
        category = "refund" if ("refund" in text or "money back" in text) else "question"
        return json.dumps(
            {"category": category, "priority": "normal", "summary": "The customer asks for a refund of a broken order."}
        )
    if "senior support agent" in system:
        return json.dumps(
            {
                "reply": "We are sorry your order arrived damaged. We have refunded it in full.",
                "tone": "apologetic",
            }
        )
    raise AssertionError(f"unscripted request: {system!r}")


# -------------------------------------------------------------------------------------- actions
_LEDGER: list[keel.Runtime] = []  # the runtime whose store keeps the refund ledger and tickets (bind_refunds)


def bind_refunds(runtime: keel.Runtime) -> None:
    """Keep ``issue_refund``'s ledger in this runtime's store, and let the approver read the tickets
    there (each process of the service calls it at start-up)."""
    _LEDGER[:] = [runtime]


@keel.action(name="issue_refund", risk="irreversible", timeout=30, tags=["payments"])
async def issue_refund(ticket: str, order: str, amount_eur: float, key: str) -> dict[str, Any]:
    """Refund an order through the payments provider (a stand-in: one ledger row per idempotency key,
    so a retried step refunds nothing twice). The stack names it (``actions = [...]``), so doctor
    sees it without starting the service."""
    if not _LEDGER:  # fail closed: never report a refund nobody recorded
        raise keel.KeelError("issue_refund has no ledger: call desk_service.bind_refunds(runtime) at start-up")
    row = {"ticket": ticket, "order": order, "amount_eur": amount_eur}
    try:  # expected_version=0: only if no refund has this key yet, even with two racing attempts
        await _LEDGER[0].store().put("default", "desk.ledger", key, row, expected_version=0)
        again = False
    except keel.ConflictError:
        again = True
    return {"refunded": amount_eur, "order": order, "key": key, "again": again}


def as_data(value: Any) -> Any:
    """A step's value as plain data (sub-flows and agents hand over models; state keeps data)."""
    return value.model_dump() if isinstance(value, BaseModel) else value


class DeskApprover:
    """The desk's approver, named by the stack (``approver = "desk_service:approver"``), so every
    process built from the stack asks it and ``keel doctor`` sees and probes it. Fail closed:
    ``issue_refund`` goes through only for the amount a person approved on the ticket (recorded by
    the flow), or under the threshold by policy; anything else, or a process that never called
    :func:`bind_refunds`, is refused."""

    async def decide(self, request: Any) -> Any:
        from keel.policy import ApprovalDecision

        if request.action != "issue_refund":
            return ApprovalDecision(approved=False, by="desk", reason=f"no approval rule for {request.action}")
        if not _LEDGER:
            return ApprovalDecision(
                approved=False, by="desk", reason="the desk's approver has no store: call bind_refunds(runtime)"
            )
        args = request.arguments
        record = await _LEDGER[0].store().get(request.tenant, TICKETS, str(args.get("ticket")))
        answer = (record.value if record else {}).get("approval") or {}
        amount = float(args.get("amount_eur", 0))
        if amount <= REFUND_APPROVAL_EUR and answer.get("by") == "policy":
            return ApprovalDecision(approved=True, by="policy", reason="under the approval threshold")
        if answer.get("approved") is True and float(answer.get("amount_eur", -1)) == amount:
            return ApprovalDecision(
                approved=True, by=str(answer.get("by") or "a person"), reason="approved on the desk"
            )
        return ApprovalDecision(approved=False, by="desk", reason="no matching approval recorded for this refund")


approver = DeskApprover()


# -------------------------------------------------------------------------------- the flow parts
async def update_ticket(ctx: Context, **fields: Any) -> None:
    store = ctx.runtime.store()
    key = ctx.state.get("ticket_id") or ctx.value["id"]
    found = await store.get(ctx.tenant, TICKETS, key)
    await store.put(ctx.tenant, TICKETS, key, {**(found.value if found else {}), **fields})


def stage(ctx: Context, number: str, message: str, percent: float) -> None:
    """A product-level progress line: the page shows it (task.progress), the demo prints it."""
    ctx.put_into_stream({"stage": number, "message": message, "percent": percent})


async def open_ticket(ctx: Context) -> dict[str, Any]:
    ticket = Ticket.model_validate(ctx.value)
    ctx.state.set("ticket_id", ticket.id)
    await update_ticket(
        ctx, id=ticket.id, subject=ticket.subject, customer=ticket.customer, status="open",
        execution_id=ctx.execution_id, opened_at=draw_now(),
    )  # fmt: skip
    stage(ctx, "9", f"ticket {ticket.id} taken from the queue by a worker", 5)
    return ticket.model_dump()


async def classify(ctx: Context) -> dict[str, Any]:
    ticket = Ticket.model_validate(ctx.value)
    ctx.state.set("ticket", ticket.model_dump())
    text = f"Subject: {ticket.subject}\n\n{ticket.body}"
    execution = await classifier.start(
        text, runtime=ctx.runtime, tenant=ctx.tenant, trace_id=ctx.trace_id, parent_span_id=ctx.span_id
    )
    await update_ticket(ctx, classifier_execution=execution.id, status="classifying")
    stage(ctx, "1-3", "the classifier is reading the ticket (its fields stream to the page)", 15)
    # the agent runs in this (the worker's) process only; its fields go on as the flow's stream
    # items, which reach the page through the gateway in another process (task.partial)
    async for event in execution.instant():
        if event.kind == "reset":
            ctx.put_into_stream({"partial": {"reset": True}})
        elif event.path in Triage.model_fields:
            delta = event.delta if isinstance(event.delta, str) else ""
            partial = {"field": event.path, "delta": delta, "value": event.value, "complete": event.is_complete}
            ctx.put_into_stream({"partial": partial})
    triage = await execution.get_data()  # validated: the only thing written on
    stage(ctx, "1-3", f"classified: {triage.category}, {triage.priority} priority", 30)
    await update_ticket(ctx, status="researching", triage=triage.model_dump())
    return triage.model_dump()


def case_file(ctx: Context) -> dict[str, Any]:
    return {"ticket": ctx.state.get("ticket"), "triage": ctx.value}


async def look_up(ctx: Context) -> dict[str, Any]:
    case: Case = ctx.value
    workspace = ctx.resource("workspace")  # this sub-flow's own child of the ticket's workspace
    action_context = keel.ActionContext(agent="researcher", execution_id=ctx.execution_id, tenant=ctx.tenant)
    order = await ctx.runtime.call_action("kb_lookup_order", {"order": case.ticket.order}, context=action_context)
    if not order.ok:
        raise keel.KeelError(f"the knowledge base could not look up order {case.ticket.order}: {order.error}")
    found = await ctx.runtime.call_action(
        "kb_search_articles", {"query": f"{case.ticket.subject} {case.triage.summary}"}, context=action_context
    )
    articles = found.result if found.ok and isinstance(found.result, list) else []
    await workspace.observe(json.dumps(order.result), source="mcp:kb.lookup_order", tags=["order"])
    for article in articles:
        await workspace.observe(f"{article['title']}: {article['text']}", source=f"mcp:kb/{article['id']}")
    stage(
        ctx, "4", f"researcher: order {case.ticket.order} and {len(articles)} help articles from the kb MCP server", 45
    )
    return {"order": order.result, "articles": [a["id"] for a in articles]}


async def apply_policy(ctx: Context) -> Evidence:
    workspace = ctx.resource("workspace")
    facts = ctx.value
    run = await ctx.runtime.call_action(
        "run_python",
        {"code": (HERE / "refund_policy.py").read_text(), "files": {"order.json": json.dumps(facts["order"])}},
        context=keel.ActionContext(agent="researcher", execution_id=ctx.execution_id, tenant=ctx.tenant),
    )
    if not run.ok or not run.result.get("ok"):
        detail = run.error or {k: run.result.get(k) for k in ("reason", "message", "stderr")}
        raise keel.KeelError(f"the refund policy script failed in the sandbox: {detail}")
    decided = json.loads(run.result["stdout"])
    ref = await workspace.put_artifact(
        json.dumps({"order": facts["order"], "policy": decided, "sandbox": run.result.get("enforced")}, indent=2),
        name="refund-evidence.json",
        description="the order facts and the policy script's verdict",
    )
    stage(
        ctx,
        "5",
        f"researcher: the sandboxed policy script says {decided['refund_eur']:.2f} EUR ({decided['rule']})",
        55,
    )
    return Evidence(
        order=facts["order"], articles=facts["articles"], refund_eur=decided["refund_eur"], rule=decided["rule"],
        evidence_ref=ref.sha256,
    )  # fmt: skip


def review_input(ctx: Context) -> dict[str, Any]:
    case = {"ticket": ctx.state.get("ticket"), "triage": as_data(ctx.state.get("triage"))}
    return {"case": case, "evidence": as_data(ctx.value)}


def brief(ctx: Context) -> str:
    reviewed: Reviewed = ctx.value
    ctx.state.set("evidence_ref", reviewed.evidence.evidence_ref)
    t, e = reviewed.case.ticket, reviewed.evidence
    decided = (
        f"The refund of {e.refund_eur:.2f} EUR is being processed ({e.rule})."
        if e.refund_eur > 0
        else f"No refund is due ({e.rule})."
    )
    return (
        f"Customer {t.customer} wrote about order {t.order} ({e.order.get('item')}): {t.subject}.\n"
        f"Decision: {decided} Tell the customer this, kindly, in one or two sentences."
    )


async def record_review(ctx: Context) -> Review:
    review: Review = ctx.value
    workspace = ctx.resource("workspace")
    await workspace.decide(
        f"reply ({review.tone})", by="reviewer", why=review.reply[:200], evidence=[ctx.state.get("evidence_ref")]
    )
    stage(ctx, "7", f"reviewer: reply drafted ({review.tone})", 65)
    return review


async def approval_gate(ctx: Context) -> dict[str, Any]:
    evidence, ticket = as_data(ctx.state.get("evidence")), ctx.state.get("ticket")
    amount = float(evidence["refund_eur"])
    if amount > REFUND_APPROVAL_EUR:
        await update_ticket(ctx, status="waiting", waiting_since=draw_now(), refund_eur=amount)
        stage(ctx, "6", f"waiting for a person to approve a refund of {amount:.2f} EUR", 70)
        question = {
            "message": f"Refund {amount:.2f} EUR to {ticket['customer']} for order {ticket['order']}?",
            "schema": APPROVAL_SCHEMA,
            "amount_eur": amount,
            "rule": evidence["rule"],
        }
        answer = dict(await ctx.pause_for("refund_approval", question, timeout=7 * 24 * 3600))
        answer.setdefault("by", "a person")
    else:
        answer = {"approved": amount > 0, "by": "policy", "note": "under the approval threshold"}
    approval = {**answer, "amount_eur": amount}
    await update_ticket(ctx, status="settling", approval=approval)
    stage(ctx, "6", f"refund {'approved' if answer['approved'] else 'declined'} by {answer['by']}", 80)
    return approval


async def settle(ctx: Context) -> Outcome:
    approval, ticket, triage = ctx.value, ctx.state.get("ticket"), as_data(ctx.state.get("triage"))
    evidence, review = as_data(ctx.state.get("evidence")), as_data(ctx.state.get("review"))
    refunded = False
    if approval["approved"] and approval["amount_eur"] > 0:
        outcome = await ctx.runtime.call_action(
            "issue_refund",
            {
                "ticket": ticket["id"],
                "order": ticket["order"],
                "amount_eur": approval["amount_eur"],
                "key": ctx.idempotency_key,
            },
            context=keel.ActionContext(
                agent="desk", execution_id=ctx.execution_id, tenant=ctx.tenant, idempotency_key=ctx.idempotency_key
            ),
        )
        if not outcome.ok:
            raise keel.KeelError(f"the refund was not issued: {outcome.error}")
        refunded = True
    workspace = ctx.resource("workspace")
    await workspace.decide(
        "refunded" if refunded else "not refunded", by=str(approval["by"]), why=str(approval.get("note") or ""),
        evidence=[evidence["evidence_ref"]],
    )  # fmt: skip
    result = Outcome(
        ticket=ticket["id"], category=triage["category"], priority=triage["priority"],
        refund_eur=approval["amount_eur"] if refunded else 0.0, refunded=refunded, approved_by=str(approval["by"]),
        reply=review["reply"], evidence_ref=evidence["evidence_ref"],
    )  # fmt: skip
    await update_ticket(ctx, status="closed", outcome=result.model_dump())
    stage(ctx, "8", f"ticket {ticket['id']} closed: {'refunded' if refunded else 'answered'}", 95)
    return result


# ------------------------------------------------------------------------------------ the flows
class DeskFlow(TriggerFlow):
    """A TriggerFlow whose every execution gets the ticket's own Workspace as its live resource
    ``workspace`` (the sub-flows get children of it). Adopted executions get ``runtime.resources``."""

    async def start(self, input: Any = None, *, runtime: keel.Runtime, tenant: str = "default") -> Any:
        ticket = Ticket.model_validate(input)
        workspace = Workspace(runtime.store(), f"ticket-{ticket.id}", tenant=tenant)
        execution = self.create_execution(runtime, tenant=tenant, resources={"workspace": workspace})
        await execution.start(ticket.model_dump())
        return execution


researcher = TriggerFlow("researcher", input_model=Case, output_model=Evidence)
researcher.to(look_up).to(apply_policy)

reviewer = TriggerFlow("reviewer", input_model=Reviewed, output_model=Review)
reviewer.to(brief).to(reviewer_agent).to(record_review)

desk = DeskFlow("desk", input_model=Ticket, output_model=Outcome, resources=["workspace"])
(
    desk.to(open_ticket)
    .to(classify)
    .set_state("triage")
    .to(case_file)
    .to(researcher)  # stage 7: a role as a sub-flow, its own state and Workspace child
    .set_state("evidence")
    .to(review_input)
    .to(reviewer)
    .set_state("review")
    .to(approval_gate)  # stage 6: a durable wait for a person, over the threshold
    .to(settle)
)


# --------------------------------------------------------------------------------------- the stack
def stack_toml(state: Path, url: str = "http://127.0.0.1:8000") -> str:
    """The desk's stack (keel.toml): every path absolute, so any folder can run it; ``url`` is where
    the gateway serves (the webhook channel posts to the desk's own receiver there)."""
    python = sys.executable
    return f"""\
# written by examples/desk/desk_service.py: the reference service's stack
plugins = ["local", "sqlite", "triggerflow", "workspace", "mcp", "sandbox", "gateway", "scheduler", "devtools", "eval"]
model = "local"
runner = "local"
channels = ["sse", "webhook"]
runnables = ["desk_service:desk", "desk_service:classifier"]
actions = ["desk_service:issue_refund"]  # the refund; the MCP tools and run_python: [environments.*]
approver = "desk_service:approver"      # asked before the irreversible refund; refuses anything else

[store]
driver = "sqlite"
path = "{state / "keel.db"}"

[environments.kb]
driver = "mcp"
start = "eager"
command = ["{python}", "{HERE / "kb_server.py"}"]
prefix = "kb_"
risk = "read"
actions = {{ kb_lookup_order = "read", kb_search_articles = "read" }}  # what doctor knows unstarted
tags = ["kb"]
timeout = 20
health_interval = 10
owner = "support-platform team"

[environments.py]
driver = "sandbox"
start = "eager"
network = false
memory_mb = 256
cpu_seconds = 5
wall_seconds = 20
languages = ["python"]
actions = {{ run_python = "write" }}
health_interval = 30
owner = "support-platform team"

# governance: what one ticket may spend, checked by the kernel before each call (docs/budgets.md)
[budgets.runnables.desk]          # a flow's limits hold across the agents it runs
model_requests = 6                # two agents, each with up to two retries
tokens = 20000
cost = 0.05                       # USD
action_calls = 8                  # kb lookup, kb search, the policy script, the refund: 4
wall_time = 691200                # seconds, waits included: the approval may wait 7 days

[budgets.runnables.classifier]
model_requests = 3
tokens = 8000
wall_time = 180

[budgets.runnables.reviewer]
model_requests = 3
tokens = 8000
wall_time = 180

[budgets.runnables.sla_reminder]  # the scheduled SLA check: no model, a few store reads
wall_time = 30

[budgets.tenants.default]         # the whole desk, per UTC day
model_requests = 2000
period = "day"

# timeouts and retries in one place (docs/budgets.md): a read is retried, a write or a refund never
[calls.runnables.classifier]
timeout = 120                     # seconds for the whole execution
retries = 2                       # answers failing the contract fed back and asked again

[calls.runnables.reviewer]
timeout = 120
retries = 2

[calls.actions.kb_lookup_order]
timeout = 20
retries = 2
backoff = 0.5

[calls.actions.kb_search_articles]
timeout = 20
retries = 2
backoff = 0.5

[calls.actions.run_python]
timeout = 30                      # the sandbox's own wall_seconds = 20 ends the script first

[calls.actions.issue_refund]
timeout = 30                      # irreversible: one attempt, no retries

[budgets.prices."local"]          # the embedded model runs on this machine: no per-token price
input = 0.0
output = 0.0

# stage 8: the page and a webhook channel get product events; the API wants the desk's key
[settings.gateway]
static_dir = "{HERE / "web"}"

[[settings.gateway.api_keys]]
key_env = "DESK_API_KEY"          # service.py makes one per run; the page gets it as /ui/?token=
tenant = "default"
scopes = ["*"]

[settings.gateway.channels.webhook]
url = "{url}/desk/notify"
secret_env = "DESK_NOTIFY_SECRET"  # the HMAC key the receiver verifies
max_attempts = 3
timeout = 5

[settings.devtools]
path = "{state / "devtools.db"}"

[settings.eval]                   # where doctor finds each runnable's dataset and the last runs
datasets = ["{HERE.parent / "evals"}", "{HERE / "evals"}"]
reports = "{state / "eval"}"

[settings.scheduler]
database = "{state / "scheduler.db"}"
"""
