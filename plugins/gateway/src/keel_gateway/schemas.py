"""The gateway's wire types: request and response bodies, the error body and the errors table.

Every model forbids unknown fields, so a typo in a client's body is a 422 that names it.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ERRORS",
    "RECONNECT_MESSAGE",
    "ApiError",
    "CancelRequest",
    "ErrorBody",
    "ErrorInfo",
    "ExecutionView",
    "Health",
    "Links",
    "RunnableView",
    "SignalAccepted",
    "SignalRequest",
    "Status",
    "TaskError",
    "error_response",
]

#: what the last event of a follower cut by a shutdown says (SSE ``event: reconnect``, WebSocket ``{"type": "reconnect"}``)
RECONNECT_MESSAGE = "the server is shutting down: reconnect (with Last-Event-ID, or after=) to go on"

Status = Literal["pending", "running", "waiting", "completed", "failed", "cancelled"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorInfo(_Model):
    code: str = Field(description="not_found, unauthorized, forbidden, conflict, invalid_request, ...")
    message: str


class ErrorBody(_Model):
    """Every error response."""

    error: ErrorInfo


class Links(_Model):
    self: str
    events: str = Field(description="SSE of product events; resume with Last-Event-ID")
    ws: str
    signals: str = Field(description="POST {signals}/{name} to answer a waiting state")
    cancel: str


class TaskError(_Model):
    code: Literal["timeout", "invalid_output", "budget", "cancelled", "error"]
    message: str


class ExecutionView(_Model):
    """An execution as a client sees it."""

    id: str
    kind: str = Field(description="agent, flow, ...")
    runnable: str | None = Field(default=None, description="the runnable it was started from, when known")
    status: Status
    output: Any = Field(default=None, description="the validated output, once completed")
    error: TaskError | None = None
    waiting_for: dict[str, Any] | None = Field(default=None, description="what is awaited and how to answer")
    last_seq: int = Field(description="the last product event's sequence number so far")
    usage: dict[str, Any] | None = Field(
        default=None,
        description="what it spent (tokens, cost, model_requests, action_calls, wall_time) and its budget's limits",
    )
    links: Links


class RunnableView(_Model):
    name: str
    kind: str
    description: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]


class SignalRequest(_Model):
    payload: Any = Field(default=None, description="the answer; must match the schema task.waiting gave")
    request_id: str | None = Field(
        default=None, min_length=1, max_length=200, description="the same id twice is delivered once"
    )


class SignalAccepted(_Model):
    execution_id: str
    signal: str
    request_id: str | None
    status: Status


class CancelRequest(_Model):
    reason: str = Field(default="cancelled by the caller", max_length=500)


class Health(_Model):
    status: Literal["ok", "unavailable"]
    detail: str = Field(default="ok", description="why the service cannot start work, when it cannot")


class ApiError(Exception):
    """An error answer: HTTP status, machine code, a message for the caller, extra headers."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The body every error has: ``{"error": {"code": ..., "message": ...}}``."""
    body = {"error": {"code": code, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


#: the error responses every authenticated route documents
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in {
        401: "no or unknown credential",
        403: "the credential lacks a scope",
        404: "no such runnable or execution (for this tenant)",
        413: "request body too large",
        422: "invalid input",
        429: "rate limit exceeded; see Retry-After",
    }.items()
}
