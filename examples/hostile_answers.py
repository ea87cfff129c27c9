"""Hostile model answers: what a broken or malicious model can and cannot do to the runtime.

Runs offline: the scripted test model plays four models at once, in one runtime. A truncated answer
is repaired; an answer whose example object in the prose misses a required key gives way to the
real one; a 2 MB answer that nests deeper than the limit, and one with a 5,000-digit number, stop
at once with ``keel.OutputLimitExceeded``; meanwhile a well-behaved execution keeps streaming.
"""

from __future__ import annotations

import json

import anyio

import keel
from keel.testing import Reply, ScriptedModel, make_host

agent = keel.Agent(
    "ticket",
    "Summarise the ticket as JSON.",
    output={"title": (str, "a short title"), "tags": [str], "priority": ("int?", "1 to 5")},
    max_retries=0,
)

ANSWERS = {
    "truncated": 'Here you go: {"title": "Printer on fire", "tags": ["hardware", "urg',
    "example first": 'Use the form {"title": "..."}. Answer: {"title": "Disk full", "tags": ["storage"]}',
    "deep": '{"title": "x", "tags": ' + "[" * 1_000_000,
    "huge number": '{"title": "x", "tags": [], "priority": ' + "9" * 5_000 + "}",
    "steady": json.dumps({"title": "Coffee machine empty", "tags": ["kitchen", "urgent"], "priority": 2}),
}


def respond(request: keel.ModelRequest) -> Reply:
    name = request.messages[-1].content
    if name == "steady":  # a normal model: small chunks, a little apart
        return Reply(ANSWERS[name], chunks=8, delay=0.001)
    return Reply(ANSWERS[name], chunks=len(ANSWERS[name]))  # the whole answer in one chunk


async def main() -> None:
    async with keel.Runtime(make_host(), keel.Stack()) as runtime:
        runtime.use_model(ScriptedModel(respond))
        executions = {name: await agent.start(name, runtime=runtime) for name in ANSWERS}
        for name, execution in executions.items():
            try:
                data = await execution.get_data()
                print(f"{name:14} {execution.status.value:9} {data.model_dump()}")
            except keel.OutputLimitExceeded as error:
                print(f"{name:14} {execution.status.value:9} OutputLimitExceeded: {error.limit} = {error.maximum:,}")
        steady = executions["steady"]
        fields = [e async for e in steady.instant() if e.is_complete]
        print(f"the steady execution streamed {len(fields)} complete fields meanwhile")
        assert executions["truncated"].status is keel.ExecutionStatus.COMPLETED
        assert executions["deep"].status is keel.ExecutionStatus.FAILED


if __name__ == "__main__":
    anyio.run(main)
