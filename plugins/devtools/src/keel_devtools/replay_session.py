"""What a replay serves: a recording's model answers, action results, draws and wait answers,
each used once, and (:class:`Router`) which recording serves which replayed execution: the one
replayed, or one recorded inside it (an agent a flow ran as a step), found by where it started."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import anyio

import keel
from keel_devtools.exchange import Recording
from keel_devtools.redact import DEFAULT_SECRET_KEYS, mask_keys
from keel_devtools.steps import StepPaths

__all__ = ["ModelComparison", "ReplayDivergence", "ReplayError", "Router"]


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
    """What a recording can serve: model answers and action results, each used at most once.

    ``prefix`` places an execution recorded inside the replayed one (``flow/@1/``): the step paths
    its divergences name start with it, and the first divergence of any is kept by ``root``'s."""

    def __init__(self, recording: Recording, live: bool, prefix: str = "", root: _Session | None = None):
        self.recording = recording
        self.live = live
        self.prefix = prefix
        self.root = root or self
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
        root = self.root
        if root.divergence is None:
            root.divergence = divergence
        return root.divergence

    def _at(self, step: str, expected: Any, got: Any, where: str = "") -> ReplayDivergence:
        """A divergence at ``step`` of this execution (after its prefix), kept if it is the first."""
        return self.diverge(
            ReplayDivergence(self.prefix + step, expected, got, where=where, source=self.root.recording.source)
        )

    def answer_for(self, request: keel.ModelRequest) -> _ModelCall:
        """The recorded answer to a request: the first unused recorded call with the same request."""
        got = _masked(request.model_dump(mode="json"))
        unused = [c for c in self.model_calls if not c.used]
        for call in unused:
            if call.request == got:
                call.used = True
                return call
        if not unused:
            raise self._at("model", None, got.get("messages", got))
        first = unused[0]
        found = _first_difference(first.request, got) or ("request", first.request, got)
        raise self._at(first.step, found[1], found[2], where=found[0])

    def serve_draw(self, execution: Any, kind: str) -> Any:
        """The next recorded clock reading, random number or id (``keel.draws``). Draws made by
        an action are not made again (the action's result is served), so only code outside
        actions asks here."""
        recorded = self.draws.get(kind)
        if not recorded:
            raise self._at(f"draw/{kind}", None, f"a {kind} draw the recording does not hold")
        return recorded.pop(0)

    def answer(self, name: str) -> Any:
        """The next recorded answer to a flow's wait named ``name``."""
        recorded = self.answers.get(name)
        if not recorded:
            raise self._at(f"wait/{name}", None, f"a wait for {name!r} the recording never answered")
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
        raise self._at(f"action/{action}", expected, masked, where="arguments" if candidates else "no recorded call")


@dataclass
class ModelComparison:
    """A live model's answer beside the recorded one (``replay(..., live_model=True)``)."""

    step: str
    recorded: str
    live: str

    @property
    def same(self) -> bool:
        return self.recorded == self.live


def _span_steps(events: Iterable[dict[str, Any]]) -> dict[str, str]:
    """Each span of an execution's events -> the step path it first appears at (a flow step's span
    -> ``flow/@1``): where an execution started under that span was started."""
    found: dict[str, str] = {}
    for step, event in _steps(events):
        if event.get("span_id"):
            found.setdefault(str(event["span_id"]), step)
    return found


class Router:
    """Which recording serves which replayed execution.

    The replayed execution is served by its recording; an execution started inside it (an agent a
    flow runs as its step) by the one recorded inside it at the same place: under the step of the
    same path, the k-th started there (``flow/@1/``, then ``flow/@1#2/``). Places are found from
    the spans each execution was started under, in the recording and, as the replay goes, in the
    events of the replay's runtime (:meth:`seen`). Which execution is asking is the one whose
    budget meter is current (``keel.budgets.current_meter``): the kernel enters it in each
    execution's task, where its model is asked and its actions are called.
    """

    def __init__(self, recording: Recording, live: bool):
        self.top = _Session(recording, live)
        self.sessions: dict[str, _Session] = {}  # prefix -> the execution recorded there
        steps = {recording.execution_id: ("", _span_steps(recording.events), recording.header.get("kind"))}
        counts: dict[str, int] = {}
        for inner in recording.inner:
            parent = str(next((e.get("parent_span_id") for e in inner.events if e["kind"] == "execution.started"), ""))
            found = next(((p, s[parent], kind) for p, s, kind in steps.values() if parent in s), None)
            if found is None or found[2] == "agent":
                continue  # started by an agent's action, which the replay serves and does not run
            owner = found[0] + found[1]
            counts[owner] = counts.get(owner, 0) + 1
            prefix = f"{owner}{f'#{counts[owner]}' if counts[owner] > 1 else ''}/"
            self.sessions[prefix] = _Session(inner, live, prefix, self.top)
            steps[inner.execution_id] = (prefix, _span_steps(inner.events), inner.header.get("kind"))
        self.every = [self.top, *self.sessions.values()]
        # the replay's side: execution id -> its place ("" for the replayed one), spans -> steps
        self.places: dict[str, str] = {}
        self.events: dict[str, list[keel.RuntimeEvent]] = {}
        self._spans: dict[str, tuple[str, str]] = {}  # span -> (execution id, step path)
        self._paths = StepPaths()
        self._counts: dict[str, int] = {}
        self._unplaced: dict[str, str] = {}  # execution id -> the span it started under, not seen yet
        self._changed = anyio.Event()

    @property
    def actions(self) -> list[str]:
        return sorted({name for session in self.every for name in session.actions})

    def tool(self, name: str) -> dict[str, Any]:
        """The tool schema a model was shown for ``name`` (the first recording that shows it)."""
        return next((s.tools[name] for s in self.every if name in s.tools), {})

    def seen(self, event: keel.RuntimeEvent) -> None:
        """Follow one event of the replay's runtime (all of them, in order)."""
        execution_id = event.execution_id
        if not execution_id:
            return
        self.events.setdefault(execution_id, []).append(event)
        if event.kind == "execution.started" and execution_id not in self.places:
            parent = event.parent_span_id or ""
            if parent in self._spans:
                self._place(execution_id, parent)
            elif parent and "" in self.places.values():
                # under a span of the replay not seen yet: a Temporal worker's agent step can start
                # before the follower relays the step's events; placed when that span shows
                self._unplaced[execution_id] = parent
            else:  # started by no execution of this replay: the replayed one
                self.places[execution_id] = ""
                self._changed.set()
                self._changed = anyio.Event()
        step = self._paths.path(execution_id, event.kind, event.payload)
        if event.span_id and event.span_id not in self._spans:
            self._spans[event.span_id] = (execution_id, step)
            for waiting, parent in list(self._unplaced.items()):
                if parent == event.span_id:
                    del self._unplaced[waiting]
                    self._place(waiting, parent)

    def _place(self, execution_id: str, parent: str) -> None:
        """An execution started under ``parent``, a span of the replay: at that span's step."""
        owner = self._spans[parent]
        base = self.places.get(owner[0], "") + owner[1]
        count = self._counts[base] = self._counts.get(base, 0) + 1
        self.places[execution_id] = f"{base}{f'#{count}' if count > 1 else ''}/"
        self._changed.set()
        self._changed = anyio.Event()

    def _asking(self) -> str | None:
        """The execution whose task asks: ``None`` for the replayed one. Which one that is shows
        once its ``execution.started`` is seen (:meth:`session` waits for it): an agent a Temporal
        worker runs as a flow's step has no parent meter, yet is inside the flow."""
        meter = keel.budgets.current_meter()
        if meter is None or self.places.get(meter.execution_id) == "":
            return None
        return meter.execution_id

    def _session_at(self, place: str) -> _Session:
        if not place:
            return self.top
        found = self.sessions.get(place)
        if found is None:
            raise self.top._at(place.rstrip("/"), None, "an execution started here, where the recording holds none")
        return found

    async def session(self) -> _Session:
        """The session serving the execution whose task this is."""
        asking = self._asking()
        if asking is None:
            return self.top
        with anyio.fail_after(30):  # its execution.started was published before it asked
            while asking not in self.places:
                await self._changed.wait()
        return self._session_at(self.places[asking])

    def session_of(self, execution_id: str) -> _Session:
        """The session serving ``execution_id`` if its place is known yet, else the replayed one's."""
        return self._session_at(self.places.get(execution_id, ""))
