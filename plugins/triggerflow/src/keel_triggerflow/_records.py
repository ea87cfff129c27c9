"""The history's records: the schema of ``triggerflow/<execution id>`` (docs/flows.md, "History
records"). Short keys keep the bytes small (a record per step); ``t`` names the kind. These are
the records of history format 2 (the start record's ``v``); a format 1 history (no ``v``) differs
only in its interrupt ids, which are not salted with the execution id. A new key must be optional,
so that every history written before it still loads (tests/test_history_format.py).
"""

# no "from __future__ import annotations": TypedDict reads NotRequired from evaluated annotations
from typing import Any, Literal, NotRequired, TypedDict

HISTORY_FORMAT = 2


class ErrorInfo(TypedDict):
    """What a failed attempt raised."""

    type: str  # the exception's class name (or the failing step's, for a StepFailed)
    message: str


StartRecord = TypedDict(  # functional form: "def" is a Python keyword
    "StartRecord",
    {
        "t": Literal["start"],
        "flow": str,  # the flow's name
        "input": Any,  # the input, as JSON data
        "dur": str,  # the durability mode: sync | batch
        "v": NotRequired[int],  # the history format (absent: 1)
        "ref": NotRequired[str],  # module:attr or file.py:attr to re-import the flow
        "def": NotRequired[dict[str, Any]],  # the data definition of a flow built from data
        "trace": NotRequired[str],  # the trace id of the first run: a resumed run goes on in it
        "span": NotRequired[str],  # the first run's span id: a resumed run's span is its child
    },
)
"""The first record: which flow, with which input."""


class StepCompleted(TypedDict):
    """A step's completion: replay returns its output instead of running it."""

    t: Literal["c"]
    p: str  # the step key: thread + "@" + op id
    o: NotRequired[Any]  # the output as JSON data (absent when in a blob: see ref)
    ref: NotRequired[str]  # sha256 of the blob holding an output over 64 KiB
    m: NotRequired[str]  # module:qualname of a pydantic output, revived on replay
    s: NotRequired[list[list[Any]]]  # state writes in order: [key, value], or [key] for a deletion
    e: NotRequired[list[list[Any]]]  # emits in order: [event, value]
    r: NotRequired[dict[str, Any]]  # {"result": value}: the flow's result as set by then


class AttemptFailed(TypedDict):
    """A failed attempt that is retried; a resumed step starts at the next attempt."""

    t: Literal["x"]
    p: str  # the step key
    a: int  # the attempt that failed (from 1)
    err: ErrorInfo


class StepFailedRecord(TypedDict):
    """A step's last attempt failed: replay raises StepFailed again."""

    t: Literal["f"]
    p: str  # the step key
    a: int  # the attempt that failed
    err: ErrorInfo


class Decision(TypedDict):
    """The branch an if took (its index; len(branches) = else) or the cases a match hit (a list)."""

    t: Literal["d"]
    p: str  # the if/match key: thread + "@" + op id
    v: int | list[int]


class WaitStarted(TypedDict):
    """A wait began (``pause_for``): its interrupt, shown until it is answered."""

    t: Literal["w"]
    p: str  # the key of the step that waits
    i: str  # the interrupt id
    n: str  # the signal's name
    payload: Any  # what the wait shows, as JSON data
    deadline: float | None  # epoch seconds, or None for no timeout


class Answer(TypedDict):
    """A wait's answer (a signal) or its timeout."""

    t: Literal["sig"]
    i: str  # the interrupt id
    r: str  # the request id ("timeout:<interrupt id>" for a timeout)
    v: NotRequired[Any]  # the answer's payload
    to: NotRequired[Literal[True]]  # the wait timed out
    x: NotRequired[int]  # the inbox record it came from (another process sent it)


class ExternalEvent(TypedDict):
    """An event given to the running execution (``execution.emit``), replayed in order."""

    t: Literal["ev"]
    n: str  # the event
    v: Any  # its value
    k: int  # its number among the external events (from 1)


class EndRecord(TypedDict):
    """The last record: how the execution ended."""

    t: Literal["end"]
    status: Literal["completed", "failed", "cancelled"]
    state: NotRequired[dict[str, Any]]  # the final state, when not empty
    o: NotRequired[Any]  # the result (completed)
    error: NotRequired[str]  # why it failed or was cancelled


Record = (
    StartRecord
    | StepCompleted
    | AttemptFailed
    | StepFailedRecord
    | Decision
    | WaitStarted
    | Answer
    | ExternalEvent
    | EndRecord
)

#: every record type by its ``t``
RECORDS: dict[str, type] = {
    "start": StartRecord,
    "c": StepCompleted,
    "x": AttemptFailed,
    "f": StepFailedRecord,
    "d": Decision,
    "w": WaitStarted,
    "sig": Answer,
    "ev": ExternalEvent,
    "end": EndRecord,
}
