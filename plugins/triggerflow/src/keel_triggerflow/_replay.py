"""Replay tables: what an execution's history says happened, read once, when it is loaded.

While a loaded execution runs its flow's control logic again from the start, each step whose
completion is recorded returns its recorded output instead of running, each recorded decision is
taken again, and each recorded wait waits again (or has its recorded answer).
"""

from __future__ import annotations

from typing import Any, cast

from keel_triggerflow._records import (
    Answer,
    EndRecord,
    ExternalEvent,
    Record,
    StepCompleted,
    StepFailedRecord,
    WaitStarted,
)


class Replay:
    """The facts of a loaded history, by step path / interrupt id / request id."""

    __slots__ = (
        "answers",
        "attempts",
        "decisions",
        "done",
        "end",
        "external",
        "failed",
        "inbox_after",
        "length",
        "replaying",
        "requests",
        "waits",
    )

    def __init__(self) -> None:
        self.replaying = False  # a loaded execution: look up each step before running it
        self.done: dict[str, StepCompleted] = {}  # step path -> completion record
        self.failed: dict[str, StepFailedRecord] = {}  # step path -> failure record
        self.attempts: dict[str, int] = {}  # step path -> attempts that failed and were retried
        self.decisions: dict[str, Any] = {}  # if/match path -> the branch (or hits) taken
        self.waits: dict[str, WaitStarted] = {}  # interrupt id -> wait record
        self.answers: dict[str, Answer] = {}  # interrupt id -> answer (or timeout) record
        self.requests: dict[str, Any] = {}  # request id -> payload
        self.external: list[ExternalEvent] = []  # events delivered by execution.emit, in order
        self.end: EndRecord | None = None  # the end record of a finished execution
        self.inbox_after = 0  # the last inbox record applied
        self.length = 0  # records in the history when it was loaded

    def load(self, records: list[Any]) -> None:
        """Fill the tables from a history's records (the start record included; see ``_records``)."""
        for data in records:
            self.add(data)
        self.length = len(records)
        self.replaying = True

    def add(self, record: Any) -> None:
        """Take in one more record (a follower reads them as the owner appends them)."""
        data = cast(Record, record)
        if data["t"] == "c":
            self.done[data["p"]] = data
        elif data["t"] == "x":
            self.attempts[data["p"]] = data["a"]
        elif data["t"] == "f":
            self.failed[data["p"]] = data
        elif data["t"] == "d":
            self.decisions[data["p"]] = data["v"]
        elif data["t"] == "w":
            self.waits[data["i"]] = data
        elif data["t"] == "sig":
            self.answers[data["i"]] = data
            self.requests[data["r"]] = data.get("v")
            self.inbox_after = max(self.inbox_after, data.get("x", 0))
        elif data["t"] == "ev":
            self.external.append(data)
        elif data["t"] == "end":
            self.end = data

    def clear(self) -> None:
        """Forget everything (before loading the history again)."""
        self.__init__()  # type: ignore[misc]
