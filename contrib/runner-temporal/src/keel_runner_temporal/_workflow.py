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
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError

WORKFLOW = "keel.flow"
CHUNK_ACTIVITY = "keel.chunk"
WAITING_ACTIVITY = "keel.waiting"
SIGNAL_UPDATE = "keel.signal"
CHUNK_FAILED = "ChunkFailed"  # the error type of an activity whose chunk raised (not a lost worker)
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
            value = await self._call(node, f"@{index}", value, job)
        self._step = self._steps
        return value

    async def _call(self, node: dict[str, Any], path: str, value: Any, job: dict[str, Any]) -> Any:
        """One step: the chunk as an activity, tried ``retries + 1`` times. A failure of the chunk
        itself counts as an attempt (``ctx.attempt``, as on the local runner); an attempt lost to
        the worker (killed, timed out) is redelivered by Temporal with the same attempt number, so
        ``ctx.idempotency_key`` is the same and a keyed effect happens once."""
        retries = int(node.get("retries", 0))
        heartbeat = job.get("heartbeat_timeout")
        attempt = 1
        while True:
            try:
                return await workflow.execute_activity(
                    CHUNK_ACTIVITY,
                    {
                        "flow": job["flow"],
                        "chunk": str(node["to"]),
                        "path": path,
                        "attempt": attempt,
                        "value": value,
                        "input": job["input"],
                        "execution_id": workflow.info().workflow_id,
                        "tenant": job["tenant"],
                    },
                    start_to_close_timeout=timedelta(seconds=float(job["activity_timeout"])),
                    heartbeat_timeout=None if heartbeat is None else timedelta(seconds=float(heartbeat)),
                    retry_policy=RetryPolicy(
                        maximum_attempts=int(job.get("redeliveries", 20)) + 1,
                        non_retryable_error_types=[CHUNK_FAILED, "TemporalRunnerError"],
                    ),
                )
            except ActivityError as err:
                cause = err.cause
                if isinstance(cause, CancelledError):
                    raise  # the execution was cancelled: it ends cancelled, not failed
                if not isinstance(cause, ApplicationError) or cause.type != CHUNK_FAILED or attempt > retries:
                    detail = cause.message if isinstance(cause, ApplicationError) else str(cause or err)
                    raise ApplicationError(
                        f"step {path} ({node['to']}) failed after {attempt} attempt(s): {detail}",
                        type="StepFailed",
                        non_retryable=True,
                    ) from None
                attempt += 1

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
