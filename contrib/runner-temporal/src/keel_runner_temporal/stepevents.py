"""A Temporal execution's trace and its steps' ``flow.step.*`` events, as the local runner has them.

Every process that takes part in one execution (the one that started it, any that follows it,
the workers that run its steps) derives the same trace from the execution id (:func:`trace_of`)
and the same span for each step attempt (:func:`step_span`), with nothing passed between them
and nothing in the workflow's history. The worker runs each step inside its span
(``keel.continuing_trace``), so an agent the step starts joins the flow's trace under that
step, as on the local runner (DevTools finds it inside the flow by that span, and a replay of
the flow serves it).

The worker writes a step's events (``flow.step.started``, ``.completed``, ``.retry``,
``.failed``; the local runner's payloads) into the execution's store stream, in order with the
step's stream items, as ``{"event": kind, "payload": ..., "span": ..., "time": ...}``; each
process that follows the execution relays them as its own events (``TemporalExecution``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from keel import Runtime, TraceParent

if TYPE_CHECKING:
    from keel_runner_temporal.runner import TemporalRunner

__all__ = ["StepEvents", "StepReporter", "step_span", "trace_of", "wait_reached"]

log = logging.getLogger(__name__)


def trace_of(execution_id: str, caller: Mapping[str, Any] | None = None) -> tuple[str, str]:
    """The trace id of an execution and its own span id (W3C sizes: 32 and 16 hex digits): the
    trace of the caller it was started for (``caller``, from the start's memo), else its own."""
    digest = hashlib.sha256(f"keel.trace:{execution_id}".encode()).hexdigest()
    given = str((caller or {}).get("trace_id") or "")
    return (given if len(given) == 32 else digest[:32]), digest[32:48]


async def trace_in_memo(handle: Any) -> dict[str, Any] | None:
    """The caller's trace an execution was started in (its start's memo), or ``None`` (none, or
    Temporal did not answer: the execution's own trace then)."""
    from keel_runner_temporal._workflow import MEMO_KEY

    try:
        trace = ((await (await handle.describe()).memo()).get(MEMO_KEY) or {}).get("trace")
    except Exception:  # the trace is a nicety: the execution runs on in its own trace, and we say so
        log.warning("the caller's trace of %s could not be read; its own is used", handle.id, exc_info=True)
        return None
    return dict(trace) if isinstance(trace, dict) else None


def step_span(execution_id: str, path: str, attempt: int) -> str:
    """The span of one attempt of the step at ``path`` (a redelivered attempt keeps it)."""
    return hashlib.sha256(f"keel.span:{execution_id}:{path}:{attempt}".encode()).hexdigest()[:16]


def retries_in_plan(plan: Any) -> dict[str, int]:
    """Each step node's ``ref`` -> its ``retries``, in a flow's plan and its sub-flows' plans."""
    found: dict[str, int] = {}

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            if value.get("kind") == "step" and "ref" in value:
                found[str(value["ref"])] = int(value.get("retries") or 0)
            for inner in value.values():
                walk(inner)
        elif isinstance(value, list):
            for inner in value:
                walk(inner)

    walk(plan)
    return found


def retries_in_definition(definition: Mapping[str, Any], path: str) -> int:
    """The ``retries`` of the data node a step key names (``@2.0.1``: steps[2], its branch 0, node
    1; ``.e.`` an else, ``.f.`` a for_each's body); 0 for a batch branch or a key not found."""
    sid = path.rpartition("@")[2]
    parts = sid.split(".")
    try:
        node = definition["steps"][int(parts[0])]
        for branch, index in zip(parts[1::2], parts[2::2], strict=True):
            if branch == "e":
                nodes = node["else"]
            elif branch == "f":
                nodes = node["for_each"]
            else:
                nodes = (node.get("if") or node["match"])[int(branch)]["then"]
            node = nodes[int(index)]
        return int(node.get("retries") or 0) if "to" in node else 0
    except (KeyError, IndexError, ValueError, TypeError, AttributeError):
        return 0


class Traces:
    """The trace id of each execution a worker runs steps of: the follower's here, else the start's
    memo (one round trip per execution, remembered for the last ``limit``)."""

    def __init__(self, runner: TemporalRunner, limit: int = 4096):
        self.runner = runner
        self.limit = limit
        self._known: OrderedDict[str, str] = OrderedDict()

    async def of(self, execution_id: str) -> str:
        followed = self.runner.followed.get(execution_id)
        if followed is not None:
            return followed.trace_id
        known = self._known.get(execution_id)
        if known is None:
            handle = (await self.runner.client()).get_workflow_handle(execution_id)
            known = self._known[execution_id] = trace_of(execution_id, await trace_in_memo(handle))[0]
            if len(self._known) > self.limit:
                self._known.popitem(last=False)
        return known


class StepReporter:
    """What a worker's activities make each step attempt's :class:`StepEvents` with: the step's
    ``retries`` (whether a failure is a retry or the step's end) and the execution's trace."""

    def __init__(self, runner: TemporalRunner):
        self.runner = runner
        self.traces = Traces(runner)
        self.plan_retries: dict[str, dict[str, int]] = {}  # a flow built in Python: each step ref's retries

    async def start(self, call: Mapping[str, Any], flow: Any, *, redelivered: bool) -> StepEvents:
        """The attempt's events (and stream items), into the stack's store, which every process
        that follows the execution relays."""
        if "ref" in call:
            if flow.name not in self.plan_retries:
                self.plan_retries[flow.name] = retries_in_plan(flow.plan().model_dump(mode="json"))
            retries = self.plan_retries[flow.name].get(str(call["ref"]), 0)
        else:
            retries = retries_in_definition(flow.definition, str(call["path"]))
        trace_id = await self.traces.of(str(call["execution_id"]))
        return StepEvents(self.runner.runtime, call, retries, redelivered=redelivered, trace_id=trace_id)


class StepEvents:
    """One step attempt's events, written to the execution's store stream, in order: ``started``
    at once (without holding the step up), each stream item as the chunk puts it (``streamer``),
    then the attempt's end.

    A redelivered attempt (a worker was lost) and the run again after an answer to
    ``ctx.pause_for`` do not start the step a second time. A store that fails costs the events
    (logged), never the step."""

    def __init__(self, runtime: Runtime, call: Mapping[str, Any], retries: int, *, redelivered: bool, trace_id: str):
        from keel_runner_temporal.activities import stream_name

        self.runtime = runtime
        self.tenant = str(call["tenant"])
        self.stream = stream_name(str(call["execution_id"]))
        self.path = str(call["path"])
        self.step = str(call["chunk"])
        self.attempt = int(call["attempt"])
        self.retries = retries
        execution_id = str(call["execution_id"])
        self.span = step_span(execution_id, self.path, self.attempt)
        self.trace = TraceParent(trace_id=trace_id, span_id=self.span)
        self._queue: list[dict[str, Any]] = []  # records not written yet, in order
        self._writer: asyncio.Future[None] | None = None  # writes the queue (what comes meanwhile: next)
        self._loop, self._thread = asyncio.get_running_loop(), threading.get_ident()
        if not redelivered and not call.get("answers"):
            self._then([self._record("flow.step.started", {"attempt": self.attempt})])

    def _record(self, kind: str, more: dict[str, Any]) -> dict[str, Any]:
        payload = {"path": self.path, "step": self.step, **more}
        return {"event": kind, "payload": payload, "span": self.span, "time": time.time()}

    async def _append(self, records: list[dict[str, Any]]) -> None:
        try:
            await self.runtime.store().append(self.tenant, self.stream, records)
        except Exception as err:
            log.warning("step %s: %d event(s) and stream item(s) were not stored: %s", self.path, len(records), err)

    def _then(self, records: list[dict[str, Any]]) -> None:
        """Write ``records`` after every record before (in this event loop's thread); those that
        come while a write is under way go together in the next (items a chunk puts quickly)."""
        self._queue.extend(records)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.ensure_future(self._write_queued())

    async def _write_queued(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            await self._append(batch)

    async def _after_all(self, records: list[dict[str, Any]]) -> None:
        if records:
            self._then(records)
        if self._writer is not None:
            await self._writer

    def streamer(self, replaying: Callable[[], bool]) -> Callable[[Any], None]:
        """The chunk's ``on_stream``: each item written as it is put (from any thread: a plain
        chunk runs in one), as the local runner shows it, failed attempt or not. A run again after
        an answer to ``ctx.pause_for`` puts again the items before its last answered wait
        (``replaying()``): an earlier run of the attempt wrote them, so they are left out."""

        def put(item: Any) -> None:
            if replaying():
                return
            records = [{"path": self.path, "item": item}]
            if threading.get_ident() == self._thread:
                self._then(records)
            else:
                self._loop.call_soon_threadsafe(self._then, records)

        return put

    async def completed(self) -> None:
        """The step's end, after its stream items."""
        await self._after_all([self._record("flow.step.completed", {})])

    async def failed(self, info: Mapping[str, Any], *, final: bool = False) -> None:
        """The attempt failed: a retry while the step has attempts left, else the step failed."""
        if final or self.attempt > self.retries:
            end = self._record("flow.step.failed", {"error": dict(info)})
        else:
            end = self._record("flow.step.retry", {"attempt": self.attempt, "error": dict(info)})
        await self._after_all([end])

    async def paused(self) -> None:
        """The attempt stopped at ``ctx.pause_for``: the step goes on when it runs again."""
        await self._after_all([])


async def wait_reached(runner: TemporalRunner, call: Mapping[str, Any]) -> None:
    """The workflow reached a wait (the waiting activity): a record of it in the execution's
    store stream, so that every follower shows it at the same place in its events; the follower
    in this process is told at once when the store does not take it."""
    from keel_runner_temporal._workflow import MEMO_KEY
    from keel_runner_temporal.activities import stream_name

    execution_id = str(call["execution_id"])
    interrupt = {k: v for k, v in call.items() if k != "execution_id"}
    followed = runner.followed.get(execution_id)
    try:
        if followed is not None:
            tenant = followed.tenant
        else:  # the start's memo names it (a wait is rare: one round trip is fine)
            described = await (await runner.client()).get_workflow_handle(execution_id).describe()
            tenant = str(((await described.memo()).get(MEMO_KEY) or {}).get("tenant", "default"))
        record = {"event": "execution.waiting", "interrupt": interrupt, "time": time.time()}
        await runner.runtime.store().append(tenant, stream_name(execution_id), [record])
    except Exception as err:
        log.warning("execution %s: its wait %s was not stored: %s", execution_id, interrupt.get("id"), err)
        if followed is not None:
            followed._now_waiting(interrupt)
