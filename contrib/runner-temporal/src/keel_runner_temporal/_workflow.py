"""The deterministic interpreter that runs inside the Temporal workflow.

Its input is the execution's frozen flow definition (TriggerFlow's data form), so editing a flow
never changes what a running execution replays. It imports only temporalio and the standard
library: Temporal's sandbox re-imports this module for every workflow run.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

WORKFLOW = "keel.flow"
CHUNK_ACTIVITY = "keel.chunk"
SUPPORTED = ("to", "end")  # the node kinds this interpreter runs today (see docs/scale-out.md)


@workflow.defn(name=WORKFLOW, sandboxed=True)
class FlowWorkflow:
    def __init__(self) -> None:
        self._step = -1
        self._chunk = ""
        self._steps = 0

    @workflow.run
    async def run(self, job: dict[str, Any]) -> Any:
        steps: list[dict[str, Any]] = list(job["definition"].get("steps", []))
        self._steps = len(steps)
        value = job["input"]
        timeout = timedelta(seconds=float(job["activity_timeout"]))
        for index, node in enumerate(steps):
            self._step = index
            if "end" in node:
                break
            if "to" not in node:
                kind = next(iter(node), "?")
                raise ApplicationError(
                    f"step {index} is a {kind!r} node, which the temporal runner does not run yet", non_retryable=True
                )
            self._chunk = str(node["to"])
            value = await workflow.execute_activity(
                CHUNK_ACTIVITY,
                {
                    "flow": job["flow"],
                    "chunk": self._chunk,
                    "step": index,
                    "value": value,
                    "input": job["input"],
                    "execution_id": workflow.info().workflow_id,
                    "tenant": job["tenant"],
                },
                start_to_close_timeout=timeout,
                retry_policy=RetryPolicy(maximum_attempts=int(node.get("retries", 0)) + 1),
            )
        self._step = self._steps
        return value

    @workflow.query(name="keel.position")
    def position(self) -> dict[str, Any]:
        """Where the interpreter is: the step index (``steps`` once done) and its chunk's name."""
        return {"step": self._step, "steps": self._steps, "chunk": self._chunk}
