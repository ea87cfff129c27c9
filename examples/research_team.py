"""A research team as a TriggerFlow: planner agent -> three researcher sub-flows in parallel ->
reviewer agent -> approval wait -> publish.

Runs offline and non-interactively: the agents answer from the kernel's scripted test model
(keel.testing.ScriptedModel), and the approval is given BY THIS SCRIPT with a signal (in a real
deployment a person answers, e.g. ``keel flow signal <id> publish_approval '{"approved": true}'``).
"""

from __future__ import annotations

import json

import anyio
from pydantic import BaseModel

import keel
from keel.testing import ScriptedModel
from keel_triggerflow import Context, TriggerFlow

QUESTION = "Should our city build a tidal power plant?"


# ----------------------------------------------------------------------------- role contracts
class Plan(BaseModel):
    angles: dict[str, str]  # researcher name -> what to look into


class Finding(BaseModel):
    researcher: str
    claim: str
    confidence: float


class Review(BaseModel):
    verdict: str
    summary: str


# ------------------------------------------------------------------------------------ roles
planner = keel.Agent(
    "planner", "Split the question into one angle per researcher.", role="You are the planner.", output=Plan
)
reviewer = keel.Agent(
    "reviewer", "Weigh the findings and write a verdict.", role="You are the reviewer.", output=Review
)
RESEARCHERS = {"economist": "costs and jobs", "ecologist": "marine life", "engineer": "grid and maintenance"}


def researcher_flow(name: str) -> TriggerFlow:
    """A researcher is a sub-flow: its own state, a declared input (the plan) and output (a Finding)."""
    agent = keel.Agent(name, "Research your angle; answer with one claim.", role=f"You are the {name}.", output=Finding)

    async def pick_angle(ctx: Context) -> str:
        ctx.state.set("angle", ctx.value.angles[name])
        return f"{QUESTION} Angle: {ctx.value.angles[name]}"

    flow = TriggerFlow(f"research-{name}", input_model=Plan, output_model=Finding)
    flow.to(pick_angle).to(agent)
    return flow


async def publish(ctx: Context) -> dict[str, object]:
    review, approval = ctx.state.get("review"), ctx.value
    if not approval.get("approved"):
        return {"published": False, "reason": approval.get("reason", "rejected")}
    ctx.put_into_stream("publishing")
    return {"published": True, "verdict": review["verdict"], "key": ctx.idempotency_key}


team = TriggerFlow("research-team")
(
    team.to(planner)
    .batch(*[(name, researcher_flow(name)) for name in RESEARCHERS])  # aggregate: {researcher: Finding}
    .set_state("findings")
    .to(reviewer)
    .to(lambda ctx: ctx.value.model_dump())
    .set_state("review")
    .pause_for("publish_approval", lambda review: {"verdict": review["verdict"]}, timeout=60)
    .to(publish)
)


# ------------------------------------------------------------------------- the scripted model
def answer(request: keel.ModelRequest) -> str:
    system = request.messages[0].content
    if "planner" in system:
        return json.dumps({"angles": RESEARCHERS})
    if "reviewer" in system:
        return json.dumps({"verdict": "build, with a marine-life study first", "summary": "costs ok, ecology open"})
    for name, angle in RESEARCHERS.items():
        if f"the {name}" in system:
            return json.dumps({"researcher": name, "claim": f"{angle}: favourable", "confidence": 0.7})
    raise AssertionError(f"unscripted request: {system!r}")


async def main() -> None:
    async with keel.Runtime() as runtime:
        runtime.use_model(ScriptedModel(answer))
        runtime.add(team)
        async with team.create_execution(runtime) as execution:
            await execution.start(None)
            while not execution.get_pending_interrupts():  # run until the flow waits for approval
                await anyio.sleep(0.01)
            [interrupt] = execution.get_pending_interrupts()
            print(f"waiting for {interrupt.name}: {json.dumps(interrupt.payload)}")
            print("auto-approving from this script (a person would answer in production)")
            await execution.signal("publish_approval", {"approved": True}, request_id="demo-approval")
            result = await execution.result()
        snapshot = execution.snapshot()
        print("findings:", json.dumps({k: v["claim"] for k, v in snapshot.state["findings"].items()}))
        print("result:", json.dumps(result))
        print(f"status: {snapshot.status}, steps: {snapshot.steps_completed}")


if __name__ == "__main__":
    anyio.run(main)
