"""What a run did, read from its RuntimeEvents (as JSON objects): model requests, tokens, action calls.

The event kinds are the kernel's: ``model.request`` and ``model.response`` (payload ``usage``) from
the agent core, ``action.requested`` then ``action.completed``/``action.failed``/``action.denied``
(payload ``call_id``, ``action``, ``arguments``, ``result``/``error``) from the action support.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ActionCallRecord", "Trace", "read_trace"]


@dataclass
class ActionCallRecord:
    call_id: str
    action: str
    arguments: dict[str, Any]
    ok: bool | None = None
    result: Any = None
    error: dict[str, Any] | None = None


@dataclass
class Trace:
    model_requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    calls: list[ActionCallRecord] = field(default_factory=list)
    duration_ms: float | None = None

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


def _result(summary: Any) -> Any:
    """``action.completed`` carries the result as JSON text, cut at 200 characters: parse it back
    when it is whole JSON, keep the text otherwise."""
    if isinstance(summary, str):
        try:
            return json.loads(summary)
        except ValueError:
            return summary
    return summary


def read_trace(events: list[dict[str, Any]]) -> Trace:
    trace = Trace()
    calls: dict[str, ActionCallRecord] = {}
    times: list[float] = []
    for event in sorted(events, key=lambda e: e.get("seq") or 0):
        kind = event.get("kind", "")
        payload = event.get("payload") or {}
        if isinstance(event.get("time"), int | float):
            times.append(float(event["time"]))
        if kind == "model.request":
            trace.model_requests += 1
        elif kind == "model.response":
            usage = payload.get("usage") or {}
            trace.input_tokens += int(usage.get("input_tokens") or 0)
            trace.output_tokens += int(usage.get("output_tokens") or 0)
        elif kind == "action.requested":
            record = ActionCallRecord(
                call_id=str(payload.get("call_id", "")),
                action=str(payload.get("action", "")),
                arguments=dict(payload.get("arguments") or {}),
            )
            calls[record.call_id] = record
            trace.calls.append(record)
        elif kind == "action.completed" and payload.get("call_id") in calls:
            record = calls[payload["call_id"]]
            # "content" is the whole result as the model saw it (newer kernels); "result" is cut at 200 chars
            record.ok, record.result = True, _result(payload.get("content", payload.get("result")))
        elif kind in ("action.failed", "action.denied") and payload.get("call_id") in calls:
            record = calls[payload["call_id"]]
            record.ok, record.error = False, payload.get("error")
    if len(times) >= 2:
        trace.duration_ms = round((max(times) - min(times)) * 1000, 3)
    return trace
