"""Waits: ``ctx.pause_for`` (durable, with an optional deadline) and the pending interrupts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio

from keel import ExecutionStatus
from keel_triggerflow._ops import thread_hash
from keel_triggerflow._part import ExecutionPart
from keel_triggerflow._records import Answer, WaitStarted
from keel_triggerflow.types import Interrupt, WaitTimeout

if TYPE_CHECKING:
    from keel_triggerflow._engine import FlowExecution


class Waiting:
    """A wait in progress in this process: set ``event`` once answered (``value``) or timed out."""

    __slots__ = ("event", "interrupt", "timed_out", "value")

    def __init__(self, interrupt: Interrupt):
        self.interrupt = interrupt
        self.event = anyio.Event()
        self.value: Any = None
        self.timed_out = False


class Waits(ExecutionPart):
    """The waits of one execution: live ones in this process, recorded ones from its history."""

    def __init__(self, execution: FlowExecution):
        super().__init__(execution)
        self.waiting: dict[str, Waiting] = {}  # interrupt id -> live wait
        self.salt = execution.id  # interrupt ids are unique per execution (histories of v1: not salted)

    def interrupt_id(self, path: str, name: str, n: int) -> str:
        if self.salt:
            return "i" + thread_hash(self.salt, path, name, n)[1:]
        return "i" + thread_hash(path, name, n)[1:]

    async def wait(
        self, path: str, n: int, name: str, payload: Any, timeout: float | None, on_timeout: str, default: Any
    ) -> Any:
        """The ``n``-th wait of the step ``path``: its recorded answer, or wait for one (or the deadline)."""
        x = self.x
        replay = x._replay
        iid = self.interrupt_id(path, name, n)
        answer = replay.answers.get(iid)
        if answer is None:
            await self._wait_live(iid, path, name, payload, timeout)
            answer = replay.answers[iid]
        if answer.get("to"):
            if on_timeout == "continue":
                return default
            raise WaitTimeout(f"wait {name!r} at {path} timed out")
        return answer.get("v")

    async def _wait_live(self, iid: str, path: str, name: str, payload: Any, timeout: float | None) -> None:
        x = self.x
        journal, replay = x._journal, x._replay
        recorded = replay.waits.get(iid)
        now = x.clock
        deadline = recorded.get("deadline") if recorded else (now() + timeout if timeout is not None else None)
        interrupt = Interrupt(id=iid, name=name, payload=payload, path=path, deadline=deadline)
        waiting = self.waiting[iid] = Waiting(interrupt)
        journal.start_inbox()
        if recorded is None:
            record: WaitStarted = {"t": "w", "p": path, "i": iid, "n": name, "payload": payload, "deadline": deadline}
            replay.waits[iid] = record
            if journal.history is not None:
                await journal.history.commit(record, force=True)
        if deadline is None or deadline > now():
            self.set_waiting()
        try:
            if deadline is None:
                await waiting.event.wait()
            else:
                with anyio.move_on_after(max(0.0, deadline - now())):
                    await waiting.event.wait()
                if not waiting.event.is_set():
                    answer: Answer = {"t": "sig", "i": iid, "r": f"timeout:{iid}", "to": True}
                    replay.answers[iid] = answer
                    if journal.history is not None:
                        await journal.commit_answer(answer)
                    x._events.add("flow.wait.timeout", {"interrupt": iid, "name": name})
        finally:
            self.waiting.pop(iid, None)
            if not self.waiting and x._status is ExecutionStatus.WAITING and not x._detaching:
                x._status = ExecutionStatus.RUNNING
                x._settled = anyio.Event()

    def set_waiting(self) -> None:
        x = self.x
        if x._status is not ExecutionStatus.WAITING:
            x._status = ExecutionStatus.WAITING
            pending = [i.model_dump() for i in self.pending()]
            x._events.add("execution.waiting", {"interrupts": pending})
        x._journal.index_if_waiting()
        x._settled.set()

    def answer(self, interrupt_id: str, value: Any) -> None:
        """Wake the live wait ``interrupt_id`` (its answer is already recorded)."""
        waiting = self.waiting.pop(interrupt_id, None)
        if waiting is not None:
            x = self.x
            waiting.value = value
            waiting.event.set()
            if not self.waiting and x._status is ExecutionStatus.WAITING:
                x._status = ExecutionStatus.RUNNING  # at once: a close() right after must wait for the end
                x._settled = anyio.Event()

    def pending(self) -> list[Interrupt]:
        """The interrupts waiting for an answer: live ones here, then recorded ones not answered."""
        x = self.x
        if x._status.finished:
            return []
        live = [w.interrupt for w in self.waiting.values() if not w.event.is_set()]
        known = {i.id for i in live}
        replay = x._replay
        for iid, rec in replay.waits.items():
            if iid not in known and iid not in replay.answers:
                live.append(
                    Interrupt(
                        id=iid, name=rec["n"], payload=rec.get("payload"), path=rec["p"], deadline=rec.get("deadline")
                    )
                )
        return live

    def has_expired(self) -> bool:
        now = self.x.clock()
        return any(i.deadline is not None and i.deadline <= now for i in self.pending())

    async def settle_untimed(self) -> None:
        """Until the execution finishes or waits for a signal with no deadline: a timed wait ends
        by itself (answered or timed out), so ``run()`` waits it out."""
        x = self.x
        while True:
            await x._settled.wait()
            if x._finished.is_set() or x._detaching:
                return
            pending = self.pending()
            deadlines = [i.deadline for i in pending]
            if not pending or None in deadlines:
                return
            nearest = min(d for d in deadlines if d is not None)
            await anyio.sleep(max(0.0, nearest - x.clock()) + 0.005)
