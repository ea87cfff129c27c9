"""Replay tables: what an execution's history says happened, read once, when it is loaded.

While a loaded execution runs its flow's control logic again from the start, each step whose
completion is recorded returns its recorded output instead of running, each recorded decision is
taken again, and each recorded wait waits again (or has its recorded answer).
"""

from __future__ import annotations

from typing import Any


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
        self.done: dict[str, dict[str, Any]] = {}  # step path -> completion record
        self.failed: dict[str, dict[str, Any]] = {}  # step path -> failure record
        self.attempts: dict[str, int] = {}  # step path -> attempts that failed and were retried
        self.decisions: dict[str, Any] = {}  # if/match path -> the branch (or hits) taken
        self.waits: dict[str, dict[str, Any]] = {}  # interrupt id -> wait record
        self.answers: dict[str, dict[str, Any]] = {}  # interrupt id -> answer (or timeout) record
        self.requests: dict[str, Any] = {}  # request id -> payload
        self.external: list[dict[str, Any]] = []  # events delivered by execution.emit, in order
        self.end: dict[str, Any] | None = None  # the end record of a finished execution
        self.inbox_after = 0  # the last inbox record applied
        self.length = 0  # records in the history when it was loaded

    def load(self, records: list[dict[str, Any]]) -> None:
        """Fill the tables from a history's records (the start record included)."""
        for data in records:
            t = data["t"]
            if t == "c":
                self.done[data["p"]] = data
            elif t == "x":
                self.attempts[data["p"]] = data["a"]
            elif t == "f":
                self.failed[data["p"]] = data
            elif t == "d":
                self.decisions[data["p"]] = data["v"]
            elif t == "w":
                self.waits[data["i"]] = data
            elif t == "sig":
                self.answers[data["i"]] = data
                self.requests[data["r"]] = data.get("v")
                self.inbox_after = max(self.inbox_after, data.get("x", 0))
            elif t == "ev":
                self.external.append(data)
            elif t == "end":
                self.end = data
        self.length = len(records)
        self.replaying = True

    def clear(self) -> None:
        """Forget everything (before loading the history again)."""
        self.__init__()  # type: ignore[misc]
