"""RuntimeEvents in, OpenTelemetry spans out.

=============================  ===========================================  ==========
events                         span                                         kind
=============================  ===========================================  ==========
execution.started .. .<end>    ``invoke_agent {agent}``                     INTERNAL
                               ``invoke_workflow {flow}`` (TriggerFlow)     INTERNAL
model.request .. .response     ``chat {model}``; output.retry is its        CLIENT
                               ``retry`` event
action.requested .. .<end>     ``execute_tool {action}``                    INTERNAL
flow.step.started .. .<end>    ``step {step}``, one per attempt             INTERNAL
environment.*                  ``environment start|restart|stop {name}``    INTERNAL
=============================  ===========================================  ==========

Spans take the kernel's own ids where an event carries them (an agent execution's trace and span
ids, each model request's span id), so a trace id in a log line, a DevTools page and the tracing
backend is one id. A TriggerFlow execution's events carry its trace and span ids, and each step attempt's
events their own span id, which an agent run as that step takes as its parent: one trace per flow
run. Events without a span id get one derived from the trace and execution ids, so every process
that sees them derives the same.

Span times are the events' own times, not the time the observer got round to them.

Memory is bounded: at most ``max_open`` spans are open at once, and a span open longer than
``ttl`` seconds (an execution whose end never came: a crash, a dropped event) is ended with
``keel.otel.abandoned = true``. Either way :attr:`SpanMapper.abandoned` counts it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

import keel
from keel_otel import semconv as sc
from keel_otel.spanbook import (
    _SWEEP_EVERY,
    Key,
    PinnedIds,
    SpanBook,
    _error_type,
    _hex,
    _int,
    _list,
    _plain,
    _request_parameters,
    _scalars,
    _split_model,
    _text_part,
)

__all__ = ["PinnedIds", "SpanMapper"]

_FINISH_REASONS = {"tool_calls": "tool_call", "tool_call": "tool_call", "stop": "stop", "length": "length"}
#: events that decide an answered chat span's fate: they close it themselves
_VERDICTS = frozenset({"output.parsed", "output.retry", "model.delta", "model.tool_call", "model.response"})


class SpanMapper(SpanBook):
    """Turns RuntimeEvents into spans on ``tracer`` (whose provider uses ``ids``).

    :param capture_content: put model output, tool arguments and tool results on spans.
    :param max_content_chars: the longest content value kept (longer ones are cut and marked).
    :param max_open: spans open at once; past it the oldest is ended as abandoned.
    :param ttl: seconds a span may stay open before it is ended as abandoned.
    """

    def __init__(
        self,
        tracer: Tracer,
        ids: PinnedIds,
        *,
        capture_content: bool = False,
        max_content_chars: int = 16_384,
        max_open: int = 10_000,
        ttl: float = 3600.0,
    ):
        super().__init__(
            tracer,
            ids,
            capture_content=capture_content,
            max_content_chars=max_content_chars,
            max_open=max_open,
            ttl=ttl,
        )
        self._handlers: dict[str, Callable[[keel.RuntimeEvent], None]] = {
            "execution.started": self._execution_started,
            "execution.completed": self._execution_ended,
            "execution.failed": self._execution_ended,
            "execution.cancelled": self._execution_ended,
            "execution.waiting": self._execution_note,
            "model.request": self._chat_started,
            "model.tool_call": self._chat_tool_call,
            "model.response": self._chat_answered,
            "output.parsed": self._output_parsed,
            "output.retry": self._output_retry,
            "action.requested": self._tool_requested,
            "action.approved": self._tool_note,
            "action.started": self._tool_note,
            "action.completed": self._tool_ended,
            "action.failed": self._tool_ended,
            "action.denied": self._tool_ended,
            "flow.step.started": self._step_started,
            "flow.step.completed": self._step_ended,
            "flow.step.failed": self._step_ended,
            "flow.step.retry": self._step_ended,  # this attempt failed; the next one is a span of its own
            "flow.wait.timeout": self._execution_note,
            "flow.signal": self._execution_note,
            "flow.signal.rejected": self._execution_note,
            "flow.subflow.started": self._execution_note,
            "environment.starting": self._environment,
            "environment.restarting": self._environment,
            "environment.ready": self._environment,
            "environment.failed": self._environment,
            "environment.unhealthy": self._environment,
            "environment.stopped": self._environment,
        }

    # ------------------------------------------------------------------------------- entry

    def handle(self, event: keel.RuntimeEvent) -> None:
        """Map one event; events of kinds that make no span cost one dict lookup."""
        handler = self._handlers.get(event.kind)
        if handler is None:
            return
        with self._lock:
            if event.time - self._swept >= _SWEEP_EVERY:
                self._sweep(event.time)
            execution = event.execution_id
            if execution is not None and execution in self._answered and event.kind not in _VERDICTS:
                self._close_answered(execution)
            handler(event)

    def _execution_started(self, event: keel.RuntimeEvent) -> None:
        payload = event.payload
        attributes: dict[str, Any] = {sc.KEEL_EXECUTION_ID: event.execution_id or "", sc.KEEL_TENANT: event.tenant}
        if "flow" in payload or event.source == "triggerflow":
            name = str(payload.get("flow", ""))
            attributes[sc.GEN_AI_OPERATION_NAME] = sc.OP_INVOKE_WORKFLOW
            attributes[sc.GEN_AI_WORKFLOW_NAME] = name
            span_name = f"{sc.OP_INVOKE_WORKFLOW} {name}".rstrip()
            # a resumed run's parent is the first run's span; a first run's, its caller's (a traceparent)
            parent = _hex(event.parent_span_id, 16)
            if payload.get("resumed"):
                attributes["keel.flow.resumed"] = True
        else:
            name = str(payload.get("agent", ""))
            provider, model = _split_model(payload.get("model"))
            attributes[sc.GEN_AI_OPERATION_NAME] = sc.OP_INVOKE_AGENT
            attributes[sc.GEN_AI_AGENT_NAME] = name
            attributes[sc.GEN_AI_PROVIDER_NAME] = provider
            attributes[sc.GEN_AI_REQUEST_MODEL] = model
            span_name = f"{sc.OP_INVOKE_AGENT} {name}".rstrip()
            parent = _hex(event.parent_span_id, 16)
            if self.capture_content and "input" in payload:
                message = {"role": "user", "parts": [_text_part(self._content(_plain(payload["input"])))]}
                attributes[sc.GEN_AI_INPUT_MESSAGES] = json.dumps([message], ensure_ascii=False)
        self._start(
            ("x", event.execution_id, None), span_name, SpanKind.INTERNAL, event, attributes,
            trace_id=self._trace(event), span_id=self._execution_span(event), parent=parent,
        )  # fmt: skip

    def _execution_ended(self, event: keel.RuntimeEvent) -> None:
        execution = event.execution_id
        status = event.kind.rpartition(".")[2]
        payload = event.payload
        error = _error_type(payload.get("error")) if status == "failed" else None
        message = str(payload.get("error") or payload.get("reason") or "")
        for key in list(self._children.get(execution or "", ())):
            if key == self._answered.get(execution or ""):
                self._close_answered(execution or "", key)
            else:  # its end will never come now
                self._end(key, event.time, {sc.KEEL_STATUS: status}, error=error, message=message)
        attributes: dict[str, Any] = {sc.KEEL_STATUS: status}
        usage = payload.get("usage")
        if isinstance(usage, Mapping):
            attributes[sc.KEEL_USAGE_INPUT_TOKENS] = _int(usage.get("input_tokens"))
            attributes[sc.KEEL_USAGE_OUTPUT_TOKENS] = _int(usage.get("output_tokens"))
        for field in ("attempts", "steps"):
            if isinstance(payload.get(field), int):
                attributes[f"keel.{field}"] = payload[field]
        if self.capture_content and status == "completed" and "output" in payload:
            part = _text_part(self._content(_plain(payload["output"])))
            answer = {"role": "assistant", "parts": [part], "finish_reason": "stop"}
            attributes[sc.GEN_AI_OUTPUT_MESSAGES] = json.dumps([answer], ensure_ascii=False)
        if status == "cancelled" and payload.get("reason"):
            attributes["keel.cancel.reason"] = str(payload["reason"])
        self._end(("x", execution, None), event.time, attributes, error=error, message=message)

    def _execution_note(self, event: keel.RuntimeEvent) -> None:
        payload = event.payload
        attributes = _scalars(payload, "keel.")
        if event.kind == "execution.waiting":
            waits = _list(payload.get("interrupts"))
            attributes["keel.waits"] = [str(w.get("name", "")) for w in waits if isinstance(w, Mapping)]
        name = event.kind.removeprefix("flow.").removeprefix("execution.")
        self._note(("x", event.execution_id, None), name, event, attributes)

    # -------------------------------------------------------------------------- model calls

    def _chat_started(self, event: keel.RuntimeEvent) -> None:
        payload = event.payload
        provider, model = _split_model(payload.get("model"))
        attributes: dict[str, Any] = {
            sc.GEN_AI_OPERATION_NAME: sc.OP_CHAT,
            sc.GEN_AI_PROVIDER_NAME: provider,
            sc.GEN_AI_REQUEST_MODEL: model,
            sc.KEEL_EXECUTION_ID: event.execution_id or "",
        }
        if isinstance(payload.get("attempt"), int):
            attributes[sc.KEEL_ATTEMPT] = payload["attempt"]
        request = payload.get("request")
        if isinstance(request, keel.ModelRequest):
            attributes.update(_request_parameters(request.options))
            if request.output_schema is not None:
                attributes[sc.GEN_AI_OUTPUT_TYPE] = "json"
            if self.capture_content:
                attributes[sc.GEN_AI_INPUT_MESSAGES] = json.dumps(
                    [self._message(m) for m in request.messages], ensure_ascii=False
                )
                if request.tools:
                    attributes[sc.GEN_AI_TOOL_DEFINITIONS] = json.dumps(
                        [
                            {
                                "type": "function",
                                "name": t.name,
                                "description": t.description,
                                "parameters": t.parameters,
                            }
                            for t in request.tools
                        ],
                        ensure_ascii=False,
                        default=str,
                    )
        self._start(
            ("m", event.execution_id, event.span_id), f"{sc.OP_CHAT} {model}", SpanKind.CLIENT, event, attributes,
            trace_id=self._trace(event), span_id=_hex(event.span_id, 16), parent=_hex(event.parent_span_id, 16),
        )  # fmt: skip

    def _chat_tool_call(self, event: keel.RuntimeEvent) -> None:
        key: Key = ("m", event.execution_id, event.span_id)
        call_id, name = str(event.payload.get("id", "")), str(event.payload.get("name", ""))
        self._note(key, "tool_call", event, {sc.GEN_AI_TOOL_NAME: name, sc.GEN_AI_TOOL_CALL_ID: call_id})
        record = self._open.get(key)
        if record is not None and self.capture_content:
            arguments = event.payload.get("arguments")
            record.calls.append(
                {"type": "tool_call", "id": call_id, "name": name, "arguments": self._bounded(arguments)}
            )

    def _chat_answered(self, event: keel.RuntimeEvent) -> None:
        key: Key = ("m", event.execution_id, event.span_id)
        record = self._open.get(key)
        if record is None:
            return
        payload = event.payload
        reason = str(payload.get("finish_reason") or "")
        attributes: dict[str, Any] = {
            sc.GEN_AI_RESPONSE_MODEL: _split_model(payload.get("model"))[1],
            sc.GEN_AI_RESPONSE_FINISH_REASONS: [reason],
        }
        usage = payload.get("usage")
        if isinstance(usage, Mapping):
            attributes[sc.GEN_AI_USAGE_INPUT_TOKENS] = _int(usage.get("input_tokens"))
            attributes[sc.GEN_AI_USAGE_OUTPUT_TOKENS] = _int(usage.get("output_tokens"))
        for field, name in (("latency_ms", sc.KEEL_LATENCY_MS), ("first_delta_ms", sc.KEEL_FIRST_DELTA_MS)):
            if isinstance(payload.get(field), (int, float)):
                attributes[name] = float(payload[field])
        if self.capture_content:
            text = payload.get("text")
            parts: list[dict[str, Any]] = [_text_part(self._content(text))] if isinstance(text, str) and text else []
            parts.extend(record.calls)
            message = {"role": "assistant", "parts": parts, "finish_reason": _FINISH_REASONS.get(reason, reason)}
            attributes[sc.GEN_AI_OUTPUT_MESSAGES] = json.dumps([message], ensure_ascii=False)
            record.calls = []
        if reason == "incomplete":
            record.span.set_attribute(sc.ERROR_TYPE, "incomplete")
            record.span.set_status(Status(StatusCode.ERROR, "the model stream ended without its final event"))
        record.span.set_attributes(attributes)
        # the span ends at the answer's time, but only after the next event of the execution,
        # which says whether the answer was accepted (output.parsed) or retried (output.retry)
        record.answered = event.time
        if event.execution_id is not None:
            self._answered[event.execution_id] = key
        else:
            self._close_answered("", key)

    def _output_parsed(self, event: keel.RuntimeEvent) -> None:
        key = self._answered.get(event.execution_id or "")
        record = self._open.get(key) if key else None
        if record is not None:
            record.span.set_attribute(sc.KEEL_OUTPUT_REPAIRED, bool(event.payload.get("repaired")))
        self._close_answered(event.execution_id or "")

    def _output_retry(self, event: keel.RuntimeEvent) -> None:
        key = self._answered.get(event.execution_id or "")
        if key is not None:
            errors = _list(event.payload.get("errors"))
            attributes: dict[str, Any] = {
                sc.KEEL_ATTEMPT: _int(event.payload.get("attempt")),
                "keel.retry.errors": [self._content(str(e)) for e in errors][:20],
            }
            self._note(key, "retry", event, attributes)
        self._close_answered(event.execution_id or "")

    # ------------------------------------------------------------------------------ actions

    def _tool_key(self, event: keel.RuntimeEvent) -> Key:
        return ("t", event.execution_id, str(event.payload.get("call_id", "")))

    def _tool_requested(self, event: keel.RuntimeEvent) -> None:
        payload = event.payload
        name = str(payload.get("action", ""))
        attributes: dict[str, Any] = {
            sc.GEN_AI_OPERATION_NAME: sc.OP_EXECUTE_TOOL,
            sc.GEN_AI_TOOL_NAME: name,
            sc.GEN_AI_TOOL_CALL_ID: str(payload.get("call_id", "")),
            sc.GEN_AI_TOOL_TYPE: "function",
        }
        if event.execution_id is not None:
            attributes[sc.KEEL_EXECUTION_ID] = event.execution_id
        if payload.get("risk"):
            attributes[sc.KEEL_ACTION_RISK] = str(payload["risk"])
        if self.capture_content and "arguments" in payload:  # already redacted by the kernel
            attributes[sc.GEN_AI_TOOL_CALL_ARGUMENTS] = self._content(payload["arguments"])
        trace_id = self._trace(event)
        self._start(
            self._tool_key(event), f"{sc.OP_EXECUTE_TOOL} {name}", SpanKind.INTERNAL, event, attributes,
            trace_id=trace_id, span_id=None, parent=self._execution_span(event) if trace_id else None,
        )  # fmt: skip

    def _tool_note(self, event: keel.RuntimeEvent) -> None:
        """A person's approval is an event (its time shows the wait); a policy's is an attribute."""
        payload = event.payload
        key = self._tool_key(event)
        record = self._open.get(key)
        if record is None:
            return
        if event.kind == "action.started":
            if payload.get("idempotency_key"):
                record.span.set_attribute("keel.action.idempotency_key", str(payload["idempotency_key"]))
        elif payload.get("by") not in (None, "policy"):
            self._note(key, "approved", event, {"keel.approved_by": str(payload["by"])})

    def _tool_ended(self, event: keel.RuntimeEvent) -> None:
        payload = event.payload
        attributes: dict[str, Any] = {}
        for field, name in (("verdict", sc.KEEL_ACTION_VERDICT), ("policy", sc.KEEL_ACTION_POLICY)):
            if payload.get(field):
                attributes[name] = str(payload[field])
        if event.kind == "action.completed":
            result = payload.get("content", payload.get("result"))  # the whole result, else its summary
            if self.capture_content and result is not None:
                attributes[sc.GEN_AI_TOOL_CALL_RESULT] = self._content(result)
            self._end(self._tool_key(event), event.time, attributes)
            return
        found = payload.get("error")
        error: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
        kind = str(error.get("type") or ("denied" if event.kind == "action.denied" else "_OTHER"))
        self._end(self._tool_key(event), event.time, attributes, error=kind, message=str(error.get("message", "")))

    # -------------------------------------------------------------------------------- flows

    def _step_started(self, event: keel.RuntimeEvent) -> None:
        payload = event.payload
        step, path = str(payload.get("step", "")), str(payload.get("path", ""))
        attributes: dict[str, Any] = {
            sc.KEEL_FLOW_STEP: step,
            sc.KEEL_FLOW_PATH: path,
            sc.KEEL_EXECUTION_ID: event.execution_id or "",
        }
        if isinstance(payload.get("attempt"), int):
            attributes[sc.KEEL_ATTEMPT] = payload["attempt"]
        trace_id = self._trace(event)
        own = _hex(event.span_id, 16) if event.parent_span_id else None  # the engine's id for this attempt
        self._start(
            ("s", event.execution_id, path), f"step {step}".rstrip(), SpanKind.INTERNAL, event, attributes,
            trace_id=trace_id, span_id=own, parent=self._execution_span(event) if trace_id else None,
        )  # fmt: skip

    def _step_ended(self, event: keel.RuntimeEvent) -> None:
        key: Key = ("s", event.execution_id, str(event.payload.get("path", "")))
        if event.kind == "flow.step.completed":
            self._end(key, event.time)
            return
        error = event.payload.get("error")
        error = error if isinstance(error, Mapping) else {}
        self._end(key, event.time, error=str(error.get("type") or "_OTHER"), message=str(error.get("message", "")))

    # ------------------------------------------------------------------------- environments

    def _environment(self, event: keel.RuntimeEvent) -> None:
        payload = event.payload
        name = str(payload.get("name", ""))
        status = event.kind.rpartition(".")[2]
        key: Key = ("e", None, name)
        attributes: dict[str, Any] = {
            sc.KEEL_ENVIRONMENT_NAME: name,
            sc.KEEL_ENVIRONMENT_DRIVER: str(payload.get("driver", "")),
        }
        open_now = key in self._open
        detail = str(payload.get("error") or payload.get("detail") or "")
        if status == "starting":
            if open_now:
                self._note(key, "attempt", event, {sc.KEEL_ATTEMPT: _int(payload.get("attempt"))})
            else:
                self._start(key, f"environment start {name}", SpanKind.INTERNAL, event, attributes,
                            trace_id=None, span_id=None, parent=None)  # fmt: skip
        elif status == "restarting":
            if not open_now:  # a health check failed: the restart is an operation of its own
                self._start(key, f"environment restart {name}", SpanKind.INTERNAL, event, attributes,
                            trace_id=None, span_id=None, parent=None)  # fmt: skip
            restarts = _int(payload.get("restarts"))
            self._note(key, "restarting", event, {sc.KEEL_ENVIRONMENT_RESTARTS: restarts, "keel.error": detail})
        elif status == "ready":
            self._end(key, event.time, {sc.KEEL_ENVIRONMENT_RESTARTS: _int(payload.get("restarts"))})
        elif status == "failed" and open_now:
            self._end(key, event.time, error=_error_type(detail), message=detail)
        else:  # stopped, unhealthy, or failed outside a start: an instant in the environment's life
            operation = {"stopped": "stop", "unhealthy": "health", "failed": "failed"}[status]
            self._start(("e", "instant", name), f"environment {operation} {name}", SpanKind.INTERNAL, event,
                        attributes, trace_id=None, span_id=None, parent=None)  # fmt: skip
            if status == "stopped":
                self._end(("e", "instant", name), event.time)
            else:
                self._end(("e", "instant", name), event.time, error=_error_type(detail), message=detail)
