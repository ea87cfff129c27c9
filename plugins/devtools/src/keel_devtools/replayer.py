"""Deterministic replay: re-run a recorded execution against today's code.

The runnable is started again, by its recorded name, with its recorded input, in a runtime whose
model serves the recorded answers and whose actions serve the recorded results: nothing is asked
of a model and no action runs (a side effect is never repeated). Each model request today's code
builds must equal the recorded one; the first one that does not, or the first step whose events
differ, stops the replay with a :class:`ReplayDivergence` naming the step path, what was recorded
and what today's code did.

With ``live_model=True`` the model is asked again (tool results are still served from the
recording, matched by action and arguments) and each answer is compared with the recorded one.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

import keel
from keel.policy import ApprovalDecision, ApprovalRequest
from keel_devtools.exchange import Recording
from keel_devtools.redact import DEFAULT_SECRET_KEYS, mask_keys
from keel_devtools.steps import StepPaths

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


class ReplayError(keel.KeelError):
    """A replay that cannot start: the runnable is not registered, the recording is unusable."""

    code = "devtools.replay_failed"


class ReplayDivergence(keel.KeelError):
    """Today's code did something else than the recording at ``step_path``.

    :ivar step_path: where (``model-2``, ``flow/review``, ...).
    :ivar expected: what the recording holds there.
    :ivar got: what today's code did (``None``: nothing).
    :ivar where: inside the step, which part differs (``messages[0].content``).
    """

    code = "devtools.replay_diverged"

    def __init__(self, step_path: str, expected: Any, got: Any, *, where: str = "", source: str = ""):
        self.step_path = step_path
        self.expected = expected
        self.got = got
        self.where = where
        self.source = source
        at = f"{step_path} ({where})" if where else step_path
        super().__init__(
            f"replay{f' of {source}' if source else ''} diverged at {at}: expected {_short(expected)}, "
            f"got {_short(got)}"
        )


def _short(value: Any, limit: int = 160) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def _first_difference(expected: Any, got: Any, where: str = "") -> tuple[str, Any, Any] | None:
    """The first place two JSON values differ: (path, expected part, got part), or ``None``."""
    if isinstance(expected, dict) and isinstance(got, dict):
        for key in [*expected, *(k for k in got if k not in expected)]:
            found = _first_difference(expected.get(key), got.get(key), f"{where}.{key}" if where else str(key))
            if found:
                return found
        return None
    if isinstance(expected, list) and isinstance(got, list):
        for i in range(max(len(expected), len(got))):
            a = expected[i] if i < len(expected) else None
            b = got[i] if i < len(got) else None
            found = _first_difference(a, b, f"{where}[{i}]")
            if found:
                return found
        return None
    return None if expected == got else (where, expected, got)


def _masked(value: Any) -> Any:
    return mask_keys(json.loads(json.dumps(value, default=str)), DEFAULT_SECRET_KEYS)


# ------------------------------------------------------------------------------ the recording


@dataclass
class _ModelCall:
    step: str
    request: dict[str, Any] | None
    deltas: list[str] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str = "stop"
    usage: dict[str, Any] | None = None
    model: str | None = None
    text: str = ""
    used: bool = False


@dataclass
class _ActionResult:
    action: str
    arguments: Any
    ok: bool
    content: str = ""
    error: dict[str, Any] = field(default_factory=dict)
    approval: dict[str, Any] | None = None
    used: bool = False


def _steps(events: Iterable[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    paths = StepPaths()
    return [(paths.path(e.get("execution_id"), e["kind"], e.get("payload") or {}), e) for e in events]


class _Session:
    """What a recording can serve: model answers and action results, each used at most once."""

    def __init__(self, recording: Recording, live: bool):
        self.recording = recording
        self.live = live
        self.divergence: ReplayDivergence | None = None
        self.model_calls: list[_ModelCall] = []
        self.results: list[_ActionResult] = []
        self.native_schema = False
        self.comparisons: list[ModelComparison] = []
        self.tools: dict[str, dict[str, Any]] = {}  # name -> the tool schema the model was shown
        self.draws: dict[str, list[Any]] = {}  # kind -> the values drawn, in order
        self.answers: dict[str, list[Any]] = {}  # a flow's wait name -> the answers it got, in order
        waits: dict[str, str] = {}  # interrupt id -> its name
        by_span: dict[str, _ModelCall] = {}
        by_call: dict[str, _ActionResult] = {}
        for step, event in _steps(recording.events):
            kind, payload, span = event["kind"], event.get("payload") or {}, event.get("span_id") or ""
            if kind == "execution.started":
                self.native_schema = bool(payload.get("native_schema"))
            elif kind == "draw":
                self.draws.setdefault(str(payload.get("kind")), []).append(payload.get("value"))
            elif kind == "execution.waiting":
                for wait in payload.get("interrupts") or []:
                    if isinstance(wait, dict):
                        waits[str(wait.get("id"))] = str(wait.get("name"))
            elif kind == "flow.signal" and "value" in payload:
                name = waits.get(str(payload.get("interrupt")), "")
                self.answers.setdefault(name, []).append(payload["value"])
            elif kind == "model.request":
                request = payload.get("request")
                for tool in (request or {}).get("tools") or []:
                    self.tools.setdefault(tool.get("name"), tool)
                call = by_span[span] = _ModelCall(step, request)
                self.model_calls.append(call)
            elif kind in ("model.delta", "model.tool_call", "model.response") and span in by_span:
                call = by_span[span]
                if kind == "model.delta":
                    call.deltas.append(payload.get("text", ""))
                elif kind == "model.tool_call":
                    call.calls.append(
                        {"id": payload.get("id"), "name": payload.get("name"), "arguments": payload.get("arguments")}
                    )
                else:
                    call.finish_reason = payload.get("finish_reason") or "stop"
                    call.usage = payload.get("usage")
                    call.model = payload.get("model")
                    call.text = payload.get("text") or "".join(call.deltas)
            elif kind.startswith("action."):
                call_id = str(payload.get("call_id"))
                result = by_call.get(call_id)
                if result is None:
                    result = by_call[call_id] = _ActionResult(
                        payload.get("action", ""), payload.get("arguments"), False
                    )
                    self.results.append(result)
                if kind == "action.completed":
                    result.ok, result.content = True, payload.get("content", payload.get("result", ""))
                elif kind in ("action.failed", "action.denied"):
                    result.ok, result.error = False, payload.get("error") or {}
                    if kind == "action.denied":
                        result.approval = {"approved": False, "by": "recording", "reason": str(result.error)}
                elif kind == "action.approved":
                    result.approval = {"approved": True, "by": payload.get("by") or "recording"}
        self.actions = sorted({r.action for r in self.results if r.action})

    def diverge(self, divergence: ReplayDivergence) -> ReplayDivergence:
        if self.divergence is None:
            self.divergence = divergence
        return self.divergence

    def answer_for(self, request: keel.ModelRequest) -> _ModelCall:
        """The recorded answer to a request: the first unused recorded call with the same request."""
        got = _masked(request.model_dump(mode="json"))
        unused = [c for c in self.model_calls if not c.used]
        for call in unused:
            if call.request == got:
                call.used = True
                return call
        if not unused:
            raise self.diverge(ReplayDivergence("model", None, got.get("messages", got), source=self.recording.source))
        first = unused[0]
        found = _first_difference(first.request, got) or ("request", first.request, got)
        raise self.diverge(
            ReplayDivergence(first.step, found[1], found[2], where=found[0], source=self.recording.source)
        )

    def serve_draw(self, execution: Any, kind: str) -> Any:
        """The next recorded clock reading, random number or id (``keel.draws``). Draws made by
        an action are not made again (the action's result is served), so only code outside
        actions asks here."""
        recorded = self.draws.get(kind)
        if not recorded:
            raise self.diverge(
                ReplayDivergence(f"draw/{kind}", None, f"a {kind} draw the recording does not hold",
                                 source=self.recording.source)
            )  # fmt: skip
        return recorded.pop(0)

    def answer(self, name: str) -> Any:
        """The next recorded answer to a flow's wait named ``name``."""
        recorded = self.answers.get(name)
        if not recorded:
            raise self.diverge(
                ReplayDivergence(f"wait/{name}", None, f"a wait for {name!r} the recording never answered",
                                 source=self.recording.source)
            )  # fmt: skip
        return recorded.pop(0)

    def next_call(self) -> _ModelCall | None:
        for call in self.model_calls:
            if not call.used:
                call.used = True
                return call
        return None

    def result_for(self, action: str, arguments: dict[str, Any]) -> _ActionResult:
        masked = _masked(arguments)
        candidates = [r for r in self.results if r.action == action and not r.used]
        for result in candidates:
            if result.arguments is None or _masked(result.arguments) == masked:
                result.used = True
                return result
        expected = candidates[0].arguments if candidates else None
        raise self.diverge(
            ReplayDivergence(
                f"action/{action}", expected, masked, where="arguments" if candidates else "no recorded call",
                source=self.recording.source,
            )
        )  # fmt: skip


# -------------------------------------------------------------------------- serving the recording


@dataclass
class ModelComparison:
    """A live model's answer beside the recorded one (``replay(..., live_model=True)``)."""

    step: str
    recorded: str
    live: str

    @property
    def same(self) -> bool:
        return self.recorded == self.live


class _ReplayModel:
    """A model that serves the recorded answers (or asks a live model, and compares)."""

    def __init__(self, session: _Session, live: keel.Model | None = None):
        self._session = session
        self._live = live
        self.name = "replay"
        self.capabilities = keel.ModelCapabilities(streaming=True, tools=True, json_schema=session.native_schema)
        if live is not None:
            self.name = live.name
            self.capabilities = live.capabilities

    async def stream(self, request: keel.ModelRequest) -> AsyncIterator[Any]:
        session = self._session
        if self._live is not None:
            recorded = session.next_call()
            parts: list[str] = []
            async for event in self._live.stream(request):
                if isinstance(event, keel.TextDelta):
                    parts.append(event.text)
                yield event
            if recorded is not None:
                session.comparisons.append(ModelComparison(recorded.step, recorded.text, "".join(parts)))
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


def _served(session: _Session, spec: keel.ActionSpec | None, name: str) -> keel.ActionSpec:
    async def handler(**arguments: Any) -> Any:
        result = session.result_for(name, arguments)
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
    shown = session.tools.get(name) or {}
    return keel.ActionSpec(
        name=name,
        description=shown.get("description", ""),
        parameters=shown.get("parameters") or {"type": "object", "properties": {}},
        handler=handler,
    )


class _ReplayApprover:
    def __init__(self, session: _Session):
        self._session = session

    async def decide(self, request: ApprovalRequest) -> ApprovalDecision:
        for result in self._session.results:
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
    if isinstance(runnable, str) or runnable is None:
        name = runnable or header.get("runnable")
        if not name:
            raise ReplayError(f"{recording.source}: the recording names no runnable; pass runnable=")
        try:
            target = runtime.runnables.get(name)
        except keel.NotFoundError as err:
            raise ReplayError(
                f"cannot replay {recording.execution_id}: {err}. Register it (the stack's runnables = [...] "
                "or runtime.add(...)) or pass --runnable"
            ) from err
    else:
        target = runnable
    session = _Session(recording, live_model)
    aliases = [None, *runtime.stack.config.models]
    for alias in aliases:
        live = runtime.model(alias) if live_model else None
        runtime.use_model(_ReplayModel(session, live), alias)  # type: ignore[arg-type]
    for name in session.actions:
        spec = runtime.actions.get(name) if name in runtime.actions else None
        replacement = _served(session, spec, name)
        if spec is None:
            runtime.actions.add(replacement, source="replay")
        else:
            runtime.actions.replace(replacement, runtime.actions.source(name))
    runtime.approver = _ReplayApprover(session)
    runtime.draw_source = session.serve_draw
    execution = await target.start(header.get("input"), runtime=runtime, tenant=header.get("tenant") or "default")
    output: Any = None
    with anyio.move_on_after(timeout):
        async with anyio.create_task_group() as group:
            group.start_soon(_answer_waits, execution, session)
            try:
                output = await execution.result()
            except Exception:  # the replayed execution's own failure is compared like any outcome
                pass
            group.cancel_scope.cancel()
    events = [_masked(e.model_dump(mode="json")) async for e in _events_now(execution)]
    divergence = session.divergence or compare(recording.events, events, live=live_model, source=recording.source)
    return ReplayResult(
        recording, execution.id, execution.status.value, output, divergence, session.comparisons, events
    )


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
