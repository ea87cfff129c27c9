"""Step paths: where in an execution an event belongs, the key records and comparisons align on.

An agent's events get ``model-N`` (the N-th model call of the execution: a retry or a tool round
is a new call), ``model-N/<action>-K`` (the K-th call of that action the answer asked for) and
``model-N/output`` (the validation of that answer); a flow's events carry their own ``path`` (``flow/<path>``), its waits
``wait/<name>``; the clock, random and id draws ``draw/<kind>``; the execution's own events are
``execution``. Environment events, which belong to
no execution, are ``env/<name>``. Two executions of the same code give the same paths, whatever
their ids, so a comparison and a replay can line them up.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

__all__ = ["StepPaths"]


class _State:
    __slots__ = ("calls", "model", "ordinal")

    def __init__(self) -> None:
        self.model = 0
        self.calls: dict[str, str] = {}  # call id -> its step path
        self.ordinal: dict[str, int] = {}  # action name -> count in the current model answer


class StepPaths:
    """Assigns step paths to one stream of events (state per execution, bounded)."""

    def __init__(self, limit: int = 100_000) -> None:
        self._states: OrderedDict[str, _State] = OrderedDict()
        self._limit = limit

    def path(self, execution_id: str | None, kind: str, payload: dict[str, Any]) -> str:
        if not execution_id:
            name = payload.get("environment") or payload.get("name") or ""
            return f"env/{name}" if name else "runtime"
        state = self._states.get(execution_id)
        if state is None:
            state = self._states[execution_id] = _State()
            if len(self._states) > self._limit:
                self._states.popitem(last=False)
        if kind.startswith("execution."):
            if kind in ("execution.completed", "execution.failed", "execution.cancelled"):
                self._states.pop(execution_id, None)
            return "execution"
        if kind.startswith("model."):
            if kind == "model.request":
                state.model += 1
                state.ordinal = {}
            base = f"model-{state.model}"
            if kind == "model.tool_call":
                name = str(payload.get("name", "tool"))
                k = state.ordinal[name] = state.ordinal.get(name, 0) + 1
                call_path = f"{base}/{name}-{k}"
                state.calls[str(payload.get("id"))] = call_path
                return call_path
            return base
        if kind.startswith("action."):
            call_id = str(payload.get("call_id"))
            known = state.calls.get(call_id)
            if known is not None:
                return known
            name = str(payload.get("action", "action"))
            return f"action/{name}/{call_id}"
        if kind == "draw":
            return f"draw/{payload.get('kind', '')}"
        if kind.startswith("output."):
            return f"model-{state.model}/output"
        if kind.startswith("flow."):
            if "path" in payload:
                return f"flow/{payload['path'] or 'root'}"
            if "interrupt" in payload:
                return f"wait/{payload.get('name') or payload['interrupt']}"
            return "flow"
        return kind.split(".", 1)[0]

    def forget(self, execution_id: str) -> None:
        self._states.pop(execution_id, None)
