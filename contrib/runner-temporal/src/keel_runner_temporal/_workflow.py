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
WAITING_ACTIVITY = "keel.waiting"
SIGNAL_UPDATE = "keel.signal"
MEMO_KEY = "keel"  # the start's memo: {"flow": name, "tenant": tenant}
WAITING_MEMO = "keel_waiting"  # the wait the workflow is in (a memo: Temporal answers it with no worker)
SUPPORTED = ("to", "end", "pause_for")  # the node kinds this interpreter runs today (see docs/scale-out.md)


@workflow.defn(name=WORKFLOW, sandboxed=True)
class FlowWorkflow:
    def __init__(self) -> None:
        self._step = -1
        self._chunk = ""
        self._steps = 0
        self._signals: dict[str, list[Any]] = {}  # name -> answers not yet taken by a wait
        self._requests: dict[str, list[Any]] = {}  # request id -> [name, payload]
        self._waiting: dict[str, Any] | None = None

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
            if "pause_for" in node:
                value = await self._wait(node, job)
                continue
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

    async def _wait(self, node: dict[str, Any], job: dict[str, Any]) -> Any:
        name = str(node["pause_for"])
        timeout = node.get("timeout")
        self._waiting = {
            "id": f"i{self._step}",
            "name": name,
            "payload": node.get("payload"),
            "path": f"@{self._step}",
            "deadline": None if timeout is None else workflow.now().timestamp() + float(timeout),
        }
        workflow.upsert_memo({WAITING_MEMO: self._waiting})  # any process reads it (describe), no worker needed
        # tells the worker's process, so that an execution object there shows it (status, event)
        await workflow.execute_local_activity(
            WAITING_ACTIVITY,
            {"execution_id": workflow.info().workflow_id, **self._waiting},
            start_to_close_timeout=timedelta(seconds=10),
        )
        try:
            await workflow.wait_condition(lambda: bool(self._signals.get(name)), timeout=timeout)
        except TimeoutError:
            self._waiting = None
            workflow.upsert_memo({WAITING_MEMO: None})
            if node.get("on_timeout") == "continue":
                return node.get("default")
            raise ApplicationError(
                f"no {name!r} signal within {timeout}s", type="WaitTimeout", non_retryable=True
            ) from None
        self._waiting = None
        workflow.upsert_memo({WAITING_MEMO: None})
        return self._signals[name].pop(0)

    @workflow.update(name=SIGNAL_UPDATE)
    def signal(self, call: dict[str, Any]) -> None:
        """Deliver a signal: a wait for ``name`` takes it (now, or when it comes to the wait)."""
        request_id = call.get("request_id")
        if request_id is not None:
            if request_id in self._requests:
                return  # the same request again: already delivered
            self._requests[request_id] = [call["name"], call.get("payload")]
        self._signals.setdefault(str(call["name"]), []).append(call.get("payload"))

    @signal.validator
    def _check_signal(self, call: dict[str, Any]) -> None:
        request_id = call.get("request_id")
        seen = self._requests.get(request_id) if request_id is not None else None
        if seen is not None and seen != [call["name"], call.get("payload")]:
            raise ApplicationError(f"request id {request_id!r} was already used for another signal", type="Conflict")

    @workflow.query(name="keel.position")
    def position(self) -> dict[str, Any]:
        """Where the interpreter is: the step index (``steps`` once done), its chunk's name, and the
        wait it is in (``None`` when none)."""
        return {"step": self._step, "steps": self._steps, "chunk": self._chunk, "waiting": self._waiting}
