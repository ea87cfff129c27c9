"""The workflow's interpreter of TriggerFlow's runner contract: a flow built in Python, as the plan
``flow.plan()`` gives (JSON nodes with ``kind``, ``id`` and ``ref``). Mixed into the workflow.

Everything that is the flow's code runs in a worker, through the calls the flow object offers
(``flow.run_step``, ``flow.decide``, ``flow.pause_payload``): chunks are activities, decisions
and computed payloads local activities (recorded, so a replay takes the same branch). The workflow
walks the nodes and names steps as the local engine does (``thread + "@" + id``; a for-each item's
thread ``key[i]``; a sub-flow's ``key>``), so ``ctx.idempotency_key`` agrees across runners. Like
``_workflow``, it imports only temporalio and the standard library.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

if TYPE_CHECKING:
    from keel_runner_temporal._workflow import _Scope

DECIDE_ACTIVITY = "keel.decide"
PAYLOAD_ACTIVITY = "keel.pause_payload"
#: the plan node kinds this interpreter runs (emit, collect and when chains are refused before a start)
PLAN_KINDS = ("step", "pause_for", "subflow", "if", "match", "batch", "for_each", "end", "set_state")


class PlanInterpreter:
    """The plan's node kinds; the host class gives ``_job``, ``_call``, ``_wait``, ``_gather``."""

    _job: dict[str, Any]
    _chunk: str
    _call: Callable[..., Awaitable[Any]]
    _wait: Callable[..., Awaitable[Any]]
    _gather: Callable[..., Awaitable[list[Any]]]

    async def _plan_ops(self, scope: _Scope, nodes: list[dict[str, Any]], thread: str, value: Any) -> Any:
        for node in nodes:
            value = await self._plan_op(scope, node, thread, value)
        return value

    async def _plan_op(self, scope: _Scope, node: dict[str, Any], thread: str, value: Any) -> Any:
        try:
            return await self._plan_node(scope, node, thread, value)
        except (TypeError, KeyError, IndexError, ValueError, AttributeError) as err:
            # a value the node cannot use: fail the execution (a plain error would retry the task forever)
            raise ApplicationError(
                f"step {thread}@{node.get('id')}: {type(err).__name__}: {err}", type=type(err).__name__,
                non_retryable=True,
            ) from None  # fmt: skip

    async def _plan_node(self, scope: _Scope, node: dict[str, Any], thread: str, value: Any) -> Any:
        kind, key = node["kind"], f"{thread}@{node['id']}"
        if kind == "step":
            self._chunk = str(node["name"])
            return await self._call(scope, str(node["name"]), int(node.get("retries", 0)), key, value, ref=node["ref"])
        if kind == "end":
            scope.result, scope.has_result = value, True
            return value
        if kind == "set_state":
            scope.set(str(node["key"]), value)
            return value
        if kind == "pause_for":
            payload = (
                await self._local(PAYLOAD_ACTIVITY, node, value) if node.get("payload_fn") else node.get("payload")
            )
            wait = {k: node.get(k) for k in ("timeout", "default")}
            return await self._wait({"pause_for": node["signal"], "payload": payload,
                                     "on_timeout": node.get("on_timeout", "fail"), **wait}, key)  # fmt: skip
        if kind == "subflow":
            return await self._plan_subflow(scope, node, f"{key}>", value)
        if kind == "if":
            index = int(await self._local(DECIDE_ACTIVITY, node, value, scope.state))
            ops = node["branches"][index]["ops"] if index < len(node["branches"]) else node.get("else_ops")
            return await self._plan_ops(scope, ops, thread, value) if ops else value
        if kind == "match":
            return await self._plan_match(scope, node, thread, value)
        if kind == "batch":
            jobs = [self._plan_job(scope, branch["ops"], thread, value) for branch in node["branches"]]
            results = await self._gather(jobs, node)
            return {branch["name"]: out for branch, out in zip(node["branches"], results, strict=True)}
        if kind == "for_each":
            if not isinstance(value, (list, dict)):
                raise TypeError(f"for_each needs a list or an object, got {type(value).__name__}")
            items = [list(pair) for pair in value.items()] if isinstance(value, dict) else list(value)
            jobs = [self._plan_job(scope, node["ops"], f"{key}[{i}]", item) for i, item in enumerate(items)]
            return await self._gather(jobs, node)
        raise TypeError(f"a {kind!r} node does not run on the temporal runner")

    def _plan_job(self, scope: _Scope, ops: list[dict[str, Any]], thread: str, value: Any) -> Callable[[], Any]:
        return lambda: self._plan_ops(scope, ops, thread, value)

    async def _plan_match(self, scope: _Scope, node: dict[str, Any], thread: str, value: Any) -> Any:
        hits = list(await self._local(DECIDE_ACTIVITY, node, value, scope.state))
        if not hits:
            return await self._plan_ops(scope, node["else_ops"], thread, value) if node.get("else_ops") else value
        if node["mode"] == "hit_first":
            return await self._plan_ops(scope, node["cases"][hits[0]]["ops"], thread, value)
        return [await self._plan_ops(scope, node["cases"][c]["ops"], thread, value) for c in hits]

    async def _plan_subflow(self, parent: _Scope, node: dict[str, Any], prefix: str, value: Any) -> Any:
        from keel_runner_temporal._workflow import _Scope

        plan = node["flow"]
        scope = _Scope(parent.flow, {"reducers": plan.get("reducers") or {}}, prefix)
        out = await self._plan_ops(scope, plan["main"], prefix, value)
        return scope.result if scope.has_result else out

    async def _local(self, activity: str, node: dict[str, Any], value: Any, state: Any = None) -> Any:
        """The flow's code a decision or a payload needs, run by a worker (recorded in history)."""
        return await workflow.execute_local_activity(
            activity,
            {"flow": self._job["flow"], "ref": node["ref"], "value": value, "state": state or {}},
            start_to_close_timeout=timedelta(seconds=float(self._job["activity_timeout"])),
            retry_policy=RetryPolicy(maximum_attempts=1),
        )
