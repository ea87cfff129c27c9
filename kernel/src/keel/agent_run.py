"""``AgentExecution``: one run of a :class:`keel.Agent` (split from ``keel.agent``, issue 17; import
it from ``keel`` or ``keel.agent``). A model turn's stream is read by :class:`keel.agent_stream.ModelTurn`."""

from __future__ import annotations

import bisect
import functools
import time
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import anyio.to_thread

from keel import budgets, draws
from keel.actions import call_action
from keel.agent_stream import FEED_SLICE, ModelTurn, _coalesce_deltas, _coalesce_instant
from keel.errors import (
    AgentTimeoutError,
    ExecutionCancelled,
    KeelError,
    OutputLimitExceeded,
    OutputValidationError,
    ToolLoopLimit,
    error_code,
)
from keel.events import RuntimeEvent, current_trace, new_span_id, new_trace_id
from keel.execution import EventLog, ExecutionStatus
from keel.instant import InstantEvent, InstantParser, reset_event
from keel.output import OutputContract
from keel.types import ActionContext, Message, Model, ModelRequest, ToolCall, ToolSchema, Usage, new_id

if TYPE_CHECKING:
    from keel.agent import Agent
    from keel.runtime import Runtime

__all__ = ["AgentExecution"]

_INLINE_CHECK_CHARS = 8_192  # longer answers are checked in a worker thread
_COMPACT_IN_THREAD = 4_096  # events past which the compaction runs in a worker thread
_COMPACT_AFTER = 128  # a finished execution with more events than this keeps them coalesced

_event = RuntimeEvent.unchecked  # the kernel's one fast builder


class AgentExecution:
    """One run of an :class:`Agent`; implements :class:`keel.Execution`.

    Consume it three ways, together if you like; a consumer that starts late still sees everything
    from the beginning:

    - ``await get_data()``: the validated output (a pydantic instance; the text when the agent has
      no contract); raises what the execution failed with;
    - ``async for ev in instant()``: :class:`~keel.instant.InstantEvent` objects while the answer
      streams, with a ``reset`` event closing every attempt that was not accepted;
    - ``async for ev in events()``: this execution's RuntimeEvents (also published on the bus).
    """

    kind = "agent"

    def __init__(
        self,
        agent: Agent,
        input: Any,
        *,
        runtime: Runtime,
        model: Model,
        tenant: str = "default",
        trace_id: str | None = None,
        parent_span_id: str | None = None,
    ):
        self.id = new_id("exe")
        self.agent = agent
        self.input = input
        self.runtime = runtime
        self.model = model
        self.tenant = tenant
        caller = current_trace() if trace_id is None else None  # a gateway request's traceparent
        self.trace_id = trace_id or (caller.trace_id if caller is not None else new_trace_id())
        self.span_id = new_span_id()
        self.parent_span_id = parent_span_id or (caller.span_id if caller is not None else None)
        self.reason = ""
        self.attempts: list[dict[str, Any]] = []
        self.messages: list[Message] = []
        self._tokens = [0, 0]  # input, output: summed over attempts
        self._status = ExecutionStatus.PENDING
        self._log: EventLog[RuntimeEvent] = EventLog()
        self._instant: EventLog[InstantEvent] = EventLog()
        self._append = self._log.append
        self._done = anyio.Event()
        self._data: Any = None
        self._error: BaseException | None = None
        self._error_tb: TracebackType | None = None  # its traceback when kept: each raise starts there
        self._scope = anyio.CancelScope()
        self._cancel_reason = ""
        self._attempt_has_instant = False
        # the instant stream's attempt: every model turn, tool rounds included, is a new one, so an
        # attempt that was reset never comes back; RuntimeEvents' "attempt" counts answers (retries)
        self._attempt = -1
        self._retry = 0
        self._seq = 0
        self._settling = False
        self.footprint = 0  # bytes kept once finished (an estimate), for the registry's byte bound
        self.meter = runtime.budgets.meter(self.id, runnable=agent.name, tenant=tenant, emit=self.emit)
        policy = runtime.calls.for_runnable(agent.name)  # [calls.runnables.<name>] over the agent's own
        self.timeout = policy.timeout if policy.timeout is not None else agent.timeout
        self.max_retries = policy.retries if policy.retries is not None else agent.max_retries

    def __repr__(self) -> str:
        return f"AgentExecution({self.id!r}, agent={self.agent.name!r}, status={self._status.value})"

    @property
    def status(self) -> ExecutionStatus:
        return self._status

    @property
    def usage(self) -> Usage:
        """Tokens used by every attempt together."""
        return Usage(input_tokens=self._tokens[0], output_tokens=self._tokens[1])

    # ------------------------------------------------------------------------------ consuming

    async def get_data(self) -> Any:
        """The final validated output; never anything partial."""
        await self._done.wait()
        if self._error is not None:  # as kept: raising one object again adds this caller's frames to it
            raise self._error.with_traceback(self._error_tb)
        return self._data

    async def result(self) -> Any:
        return await self.get_data()

    def instant(self, since: int = 0) -> AsyncIterator[InstantEvent]:
        """Instant events from position ``since``, live until the execution finishes."""
        return self._instant.follow(since, self._finished)

    def events(self, since: int = 0) -> AsyncIterator[RuntimeEvent]:
        """RuntimeEvents with ``seq > since``, live until the execution finishes.

        Once an execution with many events has finished, its ``model.delta`` events are coalesced
        (one per model turn), so ``seq`` numbers may skip; every other event is kept as it was."""
        if self._status.finished:
            return self._finished_events(since)
        return self._log.follow(since, self._finished)  # seq = position while it runs

    def _finished(self) -> bool:
        return self._status.finished

    async def _finished_events(self, since: int) -> AsyncIterator[RuntimeEvent]:
        events = self._log[:]  # coalesced, maybe: seq skips, so find since by seq
        for i in range(bisect.bisect_right(events, since, key=lambda e: e.seq or 0), len(events)):
            yield events[i]

    async def signal(self, name: str, payload: Any = None, *, request_id: str | None = None) -> None:
        raise KeelError(
            f"agent execution {self.id} takes no signals (got {name!r}); approvals reach agents through "
            "the actions support"
        )

    async def cancel(self, reason: str = "cancelled") -> None:
        """Stop the execution; its streams end and ``status`` becomes ``cancelled`` with ``reason``."""
        if self._status.finished:
            return
        self._cancel_reason = reason
        self._scope.cancel()
        await self._done.wait()

    # -------------------------------------------------------------------------------- events

    def emit(
        self, kind: str, payload: dict[str, Any], *, span_id: str | None = None, level: str = "info"
    ) -> RuntimeEvent:
        """Record a RuntimeEvent of this execution and publish it on the runtime bus (never blocks)."""
        self._seq += 1
        seq = self._seq
        event = _event(
            {
                "id": f"ev_{self.id[4:]}_{seq}",
                "kind": kind,
                "time": time.time(),
                "execution_id": self.id,
                "seq": seq,
                "trace_id": self.trace_id,
                "span_id": span_id or self.span_id,
                "parent_span_id": self.span_id if span_id else self.parent_span_id,
                "source": "keel",
                "level": level,
                "tenant": self.tenant,
                "payload": payload,
            }
        )
        self._append(event)
        self.runtime.publish(event)
        return event

    def _draw(self, kind: str, real: Callable[[], Any]) -> Any:
        """A clock reading, random number or id taken inside this execution (``keel.draws``):
        served by the runtime's ``draw_source`` when one is set (a replay), else drawn; recorded."""
        source = self.runtime.draw_source
        value = real() if source is None else source(self, kind)
        try:
            anyio.get_current_task()
        except RuntimeError:  # a sync action in a worker thread: record from the event loop's thread
            anyio.from_thread.run_sync(self.emit, "draw", {"kind": kind, "value": value})
        else:
            self.emit("draw", {"kind": kind, "value": value})
        return value

    # ------------------------------------------------------------------------------- running

    async def _run(self) -> None:
        """The execution's task: never raises into the runtime's task group (except cancellation)."""
        agent = self.agent
        if self._scope.cancel_called:  # cancelled before it ever ran: still started, then ended
            self._started()
            self._finish(
                ExecutionStatus.CANCELLED,
                ExecutionCancelled(f"execution {self.id} of agent {agent.name!r} was cancelled: {self._cancel_reason}"),
                self._cancel_reason,
            )
            return
        try:
            with (
                self._scope,
                anyio.move_on_after(self.timeout) as deadline,
                draws.drawing(self._draw),
                budgets.metering(self.meter),
            ):
                await self._execute()
            if self._status.finished:
                pass
            elif deadline.cancelled_caught:
                error = AgentTimeoutError(
                    f"agent {agent.name!r} did not finish within {self.timeout}s (execution {self.id}); "
                    "raise the agent's timeout or make the task smaller"
                )
                self._finish(ExecutionStatus.FAILED, error, f"timeout after {self.timeout}s")
            elif self._scope.cancelled_caught:
                self._finish(
                    ExecutionStatus.CANCELLED,
                    ExecutionCancelled(
                        f"execution {self.id} of agent {agent.name!r} was cancelled: {self._cancel_reason}"
                    ),
                    self._cancel_reason,
                )
        except Exception as err:  # the execution's failure is its result, not the runtime's
            self._finish(ExecutionStatus.FAILED, err, f"{type(err).__name__}: {err}")
        finally:
            if not self._status.finished:  # the runtime itself is shutting down
                self._finish(
                    ExecutionStatus.CANCELLED,
                    ExecutionCancelled(f"execution {self.id} of agent {agent.name!r} was cancelled: runtime closed"),
                    "runtime closed",
                )
            if self._settling:
                await self._settle()

    def _finish(self, status: ExecutionStatus, error: BaseException | None, reason: str) -> None:
        if self._attempt_has_instant and status is not ExecutionStatus.COMPLETED:
            self._instant.append(reset_event(self._attempt, reason))
            self._attempt_has_instant = False
        self._error, self._error_tb = error, error.__traceback__ if error is not None else None
        self.reason = reason
        self._status = status
        payload: dict[str, Any] = {"agent": self.agent.name, "reason": reason, "attempts": len(self.attempts)}
        payload["usage"] = {"input_tokens": self._tokens[0], "output_tokens": self._tokens[1]}
        if error is not None:
            payload["error"] = f"{type(error).__name__}: {error}"
            payload["code"] = error_code(error)
        else:
            payload["output"] = self._data
        # events the bus dropped so far (all executions): a slow observer is visible, never blocking
        payload["bus_dropped"] = sum(self.runtime.bus.dropped.values())
        level = (
            "info"
            if status is ExecutionStatus.COMPLETED
            else ("warning" if status is ExecutionStatus.CANCELLED else "error")
        )
        self.emit(f"execution.{status.value}", payload, level=level)
        # the meter held self.emit (execution -> meter -> emit -> execution): a reference cycle that
        # kept each finished execution and its events until a full garbage collection. Nothing is
        # metered after the end, so the meter reports nowhere from here on.
        self.meter.emit = None
        self._instant.notify()  # its readers end too
        if len(self._log) + len(self._instant) > _COMPACT_IN_THREAD:
            self._settling = True  # _run compacts in a worker thread, then sets _done
            return
        self._compact()
        self._settled()

    def _settled(self) -> None:
        self._done.set()
        self.runtime.executions.note_finished(self)

    async def _settle(self) -> None:
        """Compact a large finished execution off the event loop (a pure-Python pass over every
        event: the loop keeps running between the thread's GIL switches), then report it done."""
        self._settling = False
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._compact)
        self._settled()

    def _compact(self) -> None:
        """Keep what a late reader needs, in bounded memory. A short execution keeps every event; a
        longer one (past ``_COMPACT_AFTER`` events) keeps one coalesced ``model.delta`` per model
        turn (its text cut at ``_DELTA_KEEP_CHARS``) and one instant event per string field and
        attempt. Readers already following hold the full lists and finish on them."""
        if len(self._log) > _COMPACT_AFTER or len(self._instant) > _COMPACT_AFTER:
            self._log.replace(_coalesce_deltas(self._log[:]))
            self._instant.replace(_coalesce_instant(self._instant[:]))
        # calibrated with tracemalloc (kernel/tests/test_adversarial.py checks it stays an upper
        # bound): ~1.3 kB a RuntimeEvent, ~160 bytes an instant event, plus the texts kept
        size = 6_000 + 1_300 * len(self._log) + 160 * len(self._instant)
        size += sum(len(e.payload.get("text", "")) for e in self._log if e.kind == "model.delta")
        size += sum(len(a.get("text", "")) for a in self.attempts)
        size += sum(len(m.content or "") for m in self.messages[1:])  # the system prompt is the agent's
        size += sum(len(e.delta) for e in self._instant)
        self.footprint = size

    def _started(self) -> bool:
        """Emit ``execution.started`` (every execution's first event); return whether the model
        takes a JSON schema natively."""
        agent, model = self.agent, self.model
        native = model.capabilities.json_schema
        self.emit(
            "execution.started",
            {
                "agent": agent.name,
                "model": model.name,
                "native_schema": native,
                "max_retries": self.max_retries,
                "input": self.input,
            },
        )
        return native

    async def _execute(self) -> None:
        agent, contract = self.agent, self.agent.contract
        self._status = ExecutionStatus.RUNNING
        if agent.actions:  # lazy environments that declare the agent's actions start on this first use
            await self.runtime.ensure_actions(a for a in agent.actions if not a.startswith("tag:"))
        native = self._started()
        system = agent.system_prompt(native)
        messages = [Message(role="system", content=system)] if system else []
        messages.append(Message(role="user", content=agent.render_input(self.input)))
        self.messages = messages
        for retry in range(self.max_retries + 1):
            self._retry = retry
            text, parser = await self._answer()
            attempt, turn = retry, self._attempt
            if contract is None:
                self.attempts.append({"attempt": attempt, "text": text, "errors": []})
                self.emit("output.parsed", {"attempt": attempt, "repaired": False})
                self._data = text
                break
            check = await self._check(contract, text, parser)
            self.attempts.append({"attempt": attempt, "text": text, "errors": check.errors})
            if check.ok:
                self.emit("output.parsed", {"attempt": attempt, "repaired": check.repaired})
                self._data = check.data
                break
            if retry == self.max_retries:
                raise OutputValidationError(
                    f"agent {agent.name!r}: the answer did not satisfy the output contract {contract.name!r} "
                    f"after {retry + 1} attempt(s); last errors: {'; '.join(check.errors)}",
                    attempts=[dict(a) for a in self.attempts],
                )
            self.emit("output.retry", {"attempt": attempt, "errors": check.errors}, level="warning")
            if self._attempt_has_instant:
                self._instant.append(reset_event(turn, "output.retry"))
                self._attempt_has_instant = False
            # a new list: the request already sent keeps the messages it was sent with
            messages = [
                *messages,
                Message(role="assistant", content=text),
                Message(role="user", content=contract.feedback(check.errors)),
            ]
            self.messages = messages
        self._finish(ExecutionStatus.COMPLETED, None, "")

    async def _check(self, contract: OutputContract, text: str, parser: InstantParser | None) -> Any:
        """Check an answer; a long one in a worker thread, so the loop never waits on it and the
        execution's timeout or cancellation ends the wait (the abandoned thread's work is bounded
        by the limits)."""
        try:
            if len(text) <= _INLINE_CHECK_CHARS:
                return contract.check(text, parsed=parser)
            return await anyio.to_thread.run_sync(
                functools.partial(contract.check, text, parsed=parser), abandon_on_cancel=True
            )
        except OutputLimitExceeded as err:
            raise OutputLimitExceeded(err.limit, err.value, err.maximum, err.what, self.agent.name) from None

    async def _answer(self) -> tuple[str, InstantParser | None]:
        """One answer: model turns, with rounds of tool calls between them, until a final text."""
        agent = self.agent
        for step in range(agent.max_tool_steps + 1):
            self._attempt += 1
            attempt = self._attempt
            text, calls, parser = await self._call_model(attempt)
            if not calls:
                return text, parser
            if step == agent.max_tool_steps:
                raise ToolLoopLimit(
                    f"agent {agent.name!r} reached its limit of {agent.max_tool_steps} tool-call rounds "
                    "without a final answer; raise max_tool_steps or change the instructions",
                    "max_tool_steps",
                )
            if self._attempt_has_instant:  # text shown before the tool calls is not the answer
                self._instant.append(reset_event(attempt, "tool_calls"))
                self._attempt_has_instant = False
            results = await self.run_tool_calls(calls)
            self.messages = [
                *self.messages,
                Message(role="assistant", content=text, tool_calls=calls),
                *results,
            ]
        raise AssertionError("unreachable")

    async def _call_model(self, attempt: int) -> tuple[str, list[ToolCall], InstantParser | None]:
        agent, contract, model = self.agent, self.agent.contract, self.model
        request = ModelRequest(
            messages=self.messages,
            tools=self.tool_schemas(),
            output_schema=contract.json_schema if contract is not None else None,
            output_name=contract.name if contract is not None else "output",
            options=dict(agent.options),
        )
        await self.meter.before_model_request(model.name)  # refused here: nothing is sent
        span = new_span_id()
        self.emit(
            "model.request",
            {"attempt": self._retry, "model": model.name, "messages": len(request.messages), "request": request},
            span_id=span,
        )
        parser = InstantParser(attempt, limits=agent.limits, root=contract.root) if contract is not None else None
        turn = ModelTurn(self, attempt, parser, span)
        started = time.perf_counter()
        await turn.read(model.stream(request))
        text = "".join(turn.parts)
        if turn.calls:
            pass  # a turn that calls tools is not the answer: no final parse of its text
        elif parser is not None:
            tail = parser.finish()
            if tail:
                self._instant.extend(tail)
                self._attempt_has_instant = True
        else:
            self._instant.append(InstantEvent("", "", text, True, attempt))
            self._attempt_has_instant = True
        await self._model_response(turn, text, time.perf_counter() - started, started)
        return text, turn.calls, parser

    async def _model_response(self, turn: ModelTurn, text: str, elapsed: float, started: float) -> None:
        """Count the turn's usage (execution and budget) and emit its ``model.response``."""
        done, model = turn.done, self.model
        usage = done.usage if done is not None else None
        used = {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens} if usage else None
        if used is not None:
            self._tokens[0] += used["input_tokens"]
            self._tokens[1] += used["output_tokens"]
        answered = (done.model if done is not None else None) or model.name
        await self.meter.after_model_response(answered, *(used.values() if used else (0, 0)))
        first = turn.first
        self.emit(
            "model.response",
            {
                "attempt": self._retry,
                "model": answered,
                "finish_reason": done.finish_reason if done is not None else "incomplete",
                "usage": used,
                "latency_ms": round(elapsed * 1000, 3),
                "first_delta_ms": round((first - started) * 1000, 3) if first is not None else None,
                "chars": len(text),
                "text": text,
                "tool_calls": len(turn.calls),
            },
            span_id=turn.span,
        )

    async def _feed_slices(self, parser: InstantParser, piece: str) -> None:
        """Feed a long chunk (an answer that came in one piece) a slice at a time, letting the other
        tasks of the loop run between slices, and this execution's timeout or cancellation end it."""
        for start in range(0, len(piece), FEED_SLICE):
            found = parser.feed(piece[start : start + FEED_SLICE])
            if found:
                self._instant.extend(found)
                self._attempt_has_instant = True
            await anyio.lowlevel.checkpoint()

    # --------------------------------------------------------------------------- the tool loop

    def tool_schemas(self) -> list[ToolSchema]:
        """The actions this execution shows the model: the agent's own selection, within each
        action's visible scope. An agent that names no actions sees none."""
        if not self.agent.actions:
            return []
        return [spec.tool_schema() for spec in self.runtime.actions.visible(self.agent.name, self.agent.actions)]

    async def run_tool_calls(self, calls: list[ToolCall]) -> list[Message]:
        """Run one round of tool calls (concurrently, at most ``max_parallel_tools`` at once) through
        scope, policy, approval and audit; every outcome, success or error, goes back to the model."""
        context = ActionContext(agent=self.agent.name, execution_id=self.id, tenant=self.tenant)
        limiter = anyio.CapacityLimiter(self.agent.max_parallel_tools)
        results: list[Message | None] = [None] * len(calls)

        async def one(index: int, call: ToolCall) -> None:
            async with limiter:
                outcome = await call_action(
                    self.runtime.actions, call.name, call.arguments, context=context,
                    check=self.runtime.check_action, approver=self.runtime.approver,
                    emit=self.emit, call_id=call.id, visible=self.agent.actions, meter=self.meter,
                    policy=self.runtime.calls.for_action(call.name),
                )  # fmt: skip
            results[index] = Message(role="tool", content=outcome.for_model(), tool_call_id=call.id, name=call.name)

        try:
            async with anyio.create_task_group() as group:
                for index, call in enumerate(calls):
                    group.start_soon(one, index, call)
        except BaseExceptionGroup as group_error:  # a refused call ends the execution as itself
            refused, _rest = group_error.split(budgets.BudgetError)
            if refused is not None:
                raise refused.exceptions[0] from None
            raise
        return [message for message in results if message is not None]
