"""Deterministic replay: re-run a recorded execution against today's code.

The runnable is started again, by its recorded name, with its recorded input, in a runtime whose
model serves the recorded answers and whose actions serve the recorded results: nothing is asked
of a model and no action runs (a side effect is never repeated). Each model request today's code
builds must equal the recorded one; the first one that does not, or the first step whose events
differ, stops the replay with a :class:`ReplayDivergence` naming the step path, what was recorded
and what today's code did.

With ``live_model=True`` the model is asked again (tool results are still served from the
recording, matched by action and arguments) and each answer is compared with the recorded one.

The executions recorded inside the replayed one (the agents a flow ran as its steps) are served
their own recorded answers and results, matched by place (:class:`~keel_devtools.replay_session.Router`),
and compared step by step too: a divergence inside one names ``<the flow's step>/<its step>``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

import keel
from keel.events import Subscription
from keel.policy import ApprovalDecision, ApprovalRequest
from keel_devtools.exchange import Recording
from keel_devtools.replay_session import (
    ModelComparison,
    ReplayDivergence,
    ReplayError,
    Router,
    _first_difference,
    _masked,
    _Session,
    _short,
    _steps,
)

__all__ = [
    "ModelComparison",
    "ReplayDivergence",
    "ReplayError",
    "ReplayResult",
    "compare",
    "replay",
    "replay_all",
]

#: the kinds a replay compares, and what of each (the rest carry times, ids and latencies)
_COMPARED = {
    "model.request": ("request",),
    "model.tool_call": ("name", "arguments"),
    "model.response": ("text",),
    "action.requested": ("action", "arguments"),
    "action.completed": ("content",),
    "action.failed": ("error",),
    "action.denied": ("error",),
    "output.parsed": ("repaired",),
    "output.retry": ("errors",),
    "flow.step.started": ("step",),
    "flow.step.completed": ("step",),
    "flow.step.failed": ("step",),
    "execution.waiting": ("interrupts",),
    "execution.completed": ("output",),
    "execution.failed": ("error",),
    "execution.cancelled": ("reason",),
}
_LIVE_SKIPPED = {"model.request", "model.tool_call", "model.response", "output.parsed", "output.retry"}


# -------------------------------------------------------------------------- serving the recording


class _ReplayModel:
    """A model that serves the recorded answers (or asks a live model, and compares)."""

    def __init__(self, router: Router, live: keel.Model | None = None):
        self._router = router
        self._live = live
        self.name = "replay"
        native = any(s.native_schema for s in router.every)
        self.capabilities = keel.ModelCapabilities(streaming=True, tools=True, json_schema=native)
        if live is not None:
            self.name = live.name
            self.capabilities = live.capabilities

    async def stream(self, request: keel.ModelRequest) -> AsyncIterator[Any]:
        session = await self._router.session()
        if self._live is not None:
            recorded = session.next_call()
            parts: list[str] = []
            async for event in self._live.stream(request):
                if isinstance(event, keel.TextDelta):
                    parts.append(event.text)
                yield event
            if recorded is not None:
                step = session.prefix + recorded.step
                session.root.comparisons.append(ModelComparison(step, recorded.text, "".join(parts)))
            return
        call = session.answer_for(request)
        for piece in call.deltas:
            yield keel.TextDelta(text=piece)
        for tool in call.calls:
            yield keel.ToolCallEvent(
                call=keel.ToolCall(id=tool["id"], name=tool["name"], arguments=tool.get("arguments") or {})
            )
        usage = keel.Usage.model_validate(call.usage) if call.usage else None
        yield keel.ModelDone(finish_reason=call.finish_reason, usage=usage, model=call.model)

    async def aclose(self) -> None:
        return None


class _RecordedFailure(Exception):
    """Raised by a replayed action whose recorded call failed, with the recorded message."""


def _served(router: Router, spec: keel.ActionSpec | None, name: str) -> keel.ActionSpec:
    async def handler(**arguments: Any) -> Any:
        result = (await router.session()).result_for(name, arguments)
        if result.ok:
            return result.content
        error = result.error or {}
        if error.get("type") == "timeout":
            raise TimeoutError(error.get("message", ""))
        message = str(error.get("message", ""))
        prefix = f"action {name!r} failed: "
        failure = type(str(error.get("type") or "ActionFailed"), (_RecordedFailure,), {})
        raise failure(message[len(prefix) :] if message.startswith(prefix) else message)

    if spec is not None:
        # today's schema and validation, the recording's result: the real handler never runs
        return spec.model_copy(update={"handler": handler, "timeout": None})
    # an action today's runtime does not register (the application added it in code): shown to
    # the model as the recording shows it, served from the recording
    shown = router.tool(name)
    return keel.ActionSpec(
        name=name,
        description=shown.get("description", ""),
        parameters=shown.get("parameters") or {"type": "object", "properties": {}},
        handler=handler,
    )


class _ReplayApprover:
    def __init__(self, router: Router):
        self._router = router

    async def decide(self, request: ApprovalRequest) -> ApprovalDecision:
        for result in (await self._router.session()).results:
            if result.action == request.action and result.approval is not None and not result.used:
                return ApprovalDecision(**result.approval)
        return ApprovalDecision(approved=False, by="replay", reason="the recording holds no approval for this call")


# ------------------------------------------------------------------------------------ comparing


def _checkpoints(events: Iterable[dict[str, Any]], live: bool) -> dict[str, list[tuple[str, Any]]]:
    """Per step path, in order: (kind, the compared part of the payload)."""
    out: dict[str, list[tuple[str, Any]]] = {}
    for step, event in _steps(events):
        kind = event["kind"]
        fields = _COMPARED.get(kind)
        if fields is None or (live and kind in _LIVE_SKIPPED):
            continue
        payload = event.get("payload") or {}
        value = {f: payload.get(f) for f in fields}
        if kind == "execution.waiting":  # a wait's id is salted with the execution id, its deadline a time
            value = {"interrupts": [{k: v for k, v in w.items() if k not in ("id", "deadline")}
                                    for w in value["interrupts"] or [] if isinstance(w, dict)]}  # fmt: skip
        if kind.startswith("action.") and live:
            continue  # ids and order follow the live model's answers
        out.setdefault(step, []).append((kind, value))
    return out


def compare(expected: Iterable[dict[str, Any]], got: Iterable[dict[str, Any]], *, live: bool = False,
            source: str = "") -> ReplayDivergence | None:  # fmt: skip
    """The first step (in the recorded order) where two executions' events differ, or ``None``."""
    left, right = _checkpoints(expected, live), _checkpoints(got, live)
    for step in [*left, *(s for s in right if s not in left)]:
        a, b = left.get(step, []), right.get(step, [])
        for i in range(max(len(a), len(b))):
            x = a[i] if i < len(a) else None
            y = b[i] if i < len(b) else None
            if x != y:
                if x is not None and y is not None and x[0] == y[0]:
                    found = _first_difference(x[1], y[1]) or ("", x[1], y[1])
                    return ReplayDivergence(step, found[1], found[2], where=f"{x[0]} {found[0]}".strip(),
                                            source=source)  # fmt: skip
                return ReplayDivergence(step, x, y, source=source)
    return None


# -------------------------------------------------------------------------------------- running


@dataclass
class ReplayResult:
    """What a replay found: the new execution, and the first divergence (``None``: none)."""

    recording: Recording
    execution_id: str | None
    status: str
    output: Any = None
    divergence: ReplayDivergence | None = None
    comparisons: list[ModelComparison] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.divergence is None

    def raise_for_divergence(self) -> None:
        if self.divergence is not None:
            raise self.divergence


async def replay(
    recording: Recording,
    *,
    runtime: keel.Runtime,
    runnable: str | keel.Runnable | None = None,
    live_model: bool = False,
    timeout: float = 300.0,
) -> ReplayResult:
    """Replay one recorded execution in ``runtime`` (started; its models and actions are replaced
    by the recording's for the replay, so use a runtime of its own).

    :param runnable: the runnable to run (default: the recorded name, from ``runtime.runnables``).
    :param live_model: ask the runtime's model again instead of serving the recorded answers.
    """
    header = recording.header
    target = _target(recording, runtime, runnable)
    router = Router(recording, live_model)
    _install(router, runtime, live_model)
    session = router.top
    output: Any = None
    async with runtime.bus.subscribe(buffer=1_000_000) as followed:  # every event: where each execution runs
        execution = await target.start(header.get("input"), runtime=runtime, tenant=header.get("tenant") or "default")
        with anyio.move_on_after(timeout):
            async with anyio.create_task_group() as group:
                group.start_soon(_answer_waits, execution, session)
                group.start_soon(_follow, followed, router)
                try:
                    output = await execution.result()
                except Exception:  # the replayed execution's own failure is compared like any outcome
                    pass
                group.cancel_scope.cancel()
        for event in followed.drain():
            router.seen(event)
    replayed = [e async for e in _events_now(execution)]
    events = [_masked(e.model_dump(mode="json")) for e in replayed]
    as_recorded = [_as_recorded(e, execution.id, recording) for e in replayed]
    divergence = (
        session.divergence
        or _compare_inner(router, live_model)
        or compare(recording.events, as_recorded, live=live_model, source=recording.source)
    )
    return ReplayResult(
        recording, execution.id, execution.status.value, output, divergence, session.comparisons, events
    )


def _target(recording: Recording, runtime: keel.Runtime, runnable: str | keel.Runnable | None) -> keel.Runnable:
    if not (isinstance(runnable, str) or runnable is None):
        return runnable
    name = runnable or recording.header.get("runnable")
    if not name:
        raise ReplayError(f"{recording.source}: the recording names no runnable; pass runnable=")
    try:
        return runtime.runnables.get(name)
    except keel.NotFoundError as err:
        raise ReplayError(
            f"cannot replay {recording.execution_id}: {err}. Register it (the stack's runnables = [...] "
            "or runtime.add(...)) or pass --runnable"
        ) from err


def _install(router: Router, runtime: keel.Runtime, live_model: bool) -> None:
    """Replace the runtime's models, the recorded actions, its approver and its draws by the recording's."""
    for alias in [None, *runtime.stack.config.models]:
        live = runtime.model(alias) if live_model else None
        runtime.use_model(_ReplayModel(router, live), alias)  # type: ignore[arg-type]
    for name in router.actions:
        spec = runtime.actions.get(name) if name in runtime.actions else None
        replacement = _served(router, spec, name)
        if spec is None:
            runtime.actions.add(replacement, source="replay")
        else:
            runtime.actions.replace(replacement, runtime.actions.source(name))
    runtime.approver = _ReplayApprover(router)
    runtime.draw_source = lambda execution, kind: router.session_of(execution.id).serve_draw(execution, kind)


async def _follow(followed: Subscription, router: Router) -> None:
    async for event in followed:
        router.seen(event)


def _as_recorded(event: keel.RuntimeEvent, execution_id: str, recording: Recording) -> Any:
    """A replayed event's JSON form, masked as recorded, its execution's new id put back to the
    recorded one wherever it shows (an idempotency key made of it, a flow's output that holds it)."""
    text = json.dumps(_masked(event.model_dump(mode="json")), ensure_ascii=False)
    return json.loads(text.replace(execution_id, recording.execution_id))


def _compare_inner(router: Router, live: bool) -> ReplayDivergence | None:
    """The first difference in the executions recorded inside the replayed one (in start order):
    one that did not run again, one that did something else, or one the recording does not hold."""
    source = router.top.recording.source
    ran = {place: execution_id for execution_id, place in router.places.items() if place}
    for place, session in router.sessions.items():
        execution_id = ran.get(place)
        runnable = session.recording.header.get("runnable")
        if execution_id is None:
            return ReplayDivergence(place.rstrip("/"), runnable, None, where="an execution recorded here",
                                    source=source)  # fmt: skip
        got = [_as_recorded(e, execution_id, session.recording) for e in router.events.get(execution_id, [])]
        found = compare(session.recording.events, got, live=live)
        if found is not None:
            return ReplayDivergence(place + found.step_path, found.expected, found.got, where=found.where,
                                    source=source)  # fmt: skip
    for place in ran:
        if place not in router.sessions:
            return ReplayDivergence(place.rstrip("/"), None, "an execution the recording does not hold here",
                                    source=source)  # fmt: skip
    return None


async def _answer_waits(execution: keel.Execution, session: _Session) -> None:
    """Answer each wait of a replayed flow with the recorded answer to the wait of that name (in
    order); a wait the recording never answered stops the replay there, as a divergence."""
    answered: set[str] = set()
    async for event in execution.events():
        if event.kind != "execution.waiting":
            continue
        for wait in event.payload.get("interrupts") or []:
            wait = wait if isinstance(wait, dict) else getattr(wait, "model_dump", dict)()
            key = str(wait.get("id") or wait.get("name"))
            if key in answered:
                continue
            answered.add(key)
            try:
                value = session.answer(str(wait.get("name")))
            except ReplayDivergence:
                await execution.cancel("replay: a wait the recording never answered")
                return
            await execution.signal(str(wait.get("name")), value)


async def _events_now(execution: keel.Execution) -> AsyncIterator[keel.RuntimeEvent]:
    with anyio.move_on_after(5):
        async for event in execution.events():
            yield event


async def replay_all(
    recordings: Iterable[Recording], *, runtime_factory: Any, runnable: str | None = None, live_model: bool = False
) -> list[ReplayResult]:
    """Replay each recording in a runtime of its own (``runtime_factory()`` returns one, not started)."""
    results = []
    for recording in recordings:
        async with runtime_factory() as runtime:
            results.append(await replay(recording, runtime=runtime, runnable=runnable, live_model=live_model))
    return results


# ------------------------------------------------------------------------------------------ CLI


def _import_target(target: str) -> Any:
    return keel.load_ref(target, what="the stack's runnables entry", error=ReplayError)


def replay_cli(ctx: Any, db_path: Path | None, target: str, *, live_model: bool, runnable: str | None) -> int:
    import click

    from keel_devtools.db import RecordingDB, RecordingError
    from keel_devtools.exchange import recordings
    from keel_devtools.record import default_path

    try:
        path = Path(target)
        if path.exists():
            items = list(recordings([path]))
        else:
            db = RecordingDB(db_path or default_path())
            items = [Recording.from_db(db, target)]
    except RecordingError as err:
        raise click.ClickException(str(err)) from err
    if not items:
        raise click.ClickException(f"{target}: no execution files (*.jsonl) found")
    state = ctx.find_root().obj

    def factory() -> keel.Runtime:
        runtime = state.runtime() if hasattr(state, "runtime") else keel.Runtime.from_stack()
        if runtime.stack.choice("runner").name != "local":
            # another runner runs steps in other processes (a Temporal task queue's workers), whose
            # models and actions are real: a replay runs in this process only
            local = keel.Runtime(runtime.host, runtime.stack.with_slot("runner", "local", "keel replay"))
            for registered in runtime.runnables:
                local.add(registered)
            runtime = local
        for target in runtime.stack.config.runnables:  # the stack's runnables: today's code
            found = _import_target(target)
            if getattr(found, "name", None) not in runtime.runnables:
                runtime.add(found)
        return runtime

    async def main() -> list[ReplayResult]:
        return await replay_all(items, runtime_factory=factory, runnable=runnable, live_model=live_model)

    try:
        results = anyio.run(main)
    except ReplayError as err:
        raise click.ClickException(str(err)) from err
    failed = 0
    for result in results:
        rid = result.recording.execution_id
        if result.ok:
            click.echo(f"ok        {rid} -> {result.execution_id} ({result.status})")
        else:
            failed += 1
            click.echo(f"DIVERGED  {rid} -> {result.execution_id}: {result.divergence}")
        for comparison in result.comparisons:
            mark = "same" if comparison.same else "DIFFERENT"
            click.echo(f"  {comparison.step}: live answer {mark}")
            if not comparison.same:
                click.echo(f"    recorded: {_short(comparison.recorded)}\n    live:     {_short(comparison.live)}")
    click.echo(f"{len(results) - failed} of {len(results)} replayed with no divergence")
    return 1 if failed else 0
