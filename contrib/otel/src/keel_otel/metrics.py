"""The GenAI client metrics: ``gen_ai.client.token.usage`` and ``gen_ai.client.operation.duration``.

Both are histograms, with the names, units, attributes and advisory bucket boundaries of the
OpenTelemetry GenAI semantic conventions (v1.41, pinned in :mod:`keel_otel.semconv`). One model
request (``model.request`` .. ``model.response``) is one ``chat`` operation: its duration, and
its input and output tokens as two token-usage points (``gen_ai.token.type``). A request whose
answer never comes (the execution failed or was cancelled first) records its duration with
``error.type``, and no tokens.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from opentelemetry.metrics import Meter

import keel
from keel_otel import semconv as sc
from keel_otel.spanbook import _error_type, _split_model

__all__ = ["DURATION_BUCKETS", "TOKEN_BUCKETS", "MetricsMapper"]

#: the conventions' advisory boundaries (seconds; tokens)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)

_ENDS = frozenset({"execution.completed", "execution.failed", "execution.cancelled"})

_Request = tuple[float, dict[str, Any]]  # when it was sent, its attributes


class MetricsMapper:
    """Records the two histograms from RuntimeEvents on ``meter``.

    :param max_open: executions whose model requests are remembered while they wait for their
        answer; past it the oldest execution's are forgotten (a metric point needs its end).
    """

    def __init__(self, meter: Meter, *, max_open: int = 10_000):
        self.tokens = meter.create_histogram(
            sc.GEN_AI_CLIENT_TOKEN_USAGE,
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=list(TOKEN_BUCKETS),
        )
        self.duration = meter.create_histogram(
            sc.GEN_AI_CLIENT_OPERATION_DURATION,
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
        )
        # execution id -> span id of each model request waiting for its answer -> the request
        self._open: OrderedDict[str | None, dict[str | None, _Request]] = OrderedDict()
        self._max_open = max_open
        self._lock = threading.Lock()

    def handle(self, event: keel.RuntimeEvent) -> None:
        kind = event.kind
        if kind == "model.request":
            self._requested(event)
        elif kind == "model.response":
            self._answered(event)
        elif kind in _ENDS and self._open:
            self._ended(event)

    def _requested(self, event: keel.RuntimeEvent) -> None:
        provider, model = _split_model(event.payload.get("model"))
        attributes = {
            sc.GEN_AI_OPERATION_NAME: sc.OP_CHAT,
            sc.GEN_AI_PROVIDER_NAME: provider,
            sc.GEN_AI_REQUEST_MODEL: model,
        }
        with self._lock:
            self._open.setdefault(event.execution_id, {})[event.span_id] = (event.time, attributes)
            if len(self._open) > self._max_open:
                self._open.popitem(last=False)

    def _answered(self, event: keel.RuntimeEvent) -> None:
        with self._lock:
            requests = self._open.get(event.execution_id)
            found = requests.pop(event.span_id, None) if requests is not None else None
            if requests is not None and not requests:
                del self._open[event.execution_id]
        if found is None:
            return
        started, attributes = found
        payload = event.payload
        attributes = {**attributes, sc.GEN_AI_RESPONSE_MODEL: _split_model(payload.get("model"))[1]}
        latency = payload.get("latency_ms")
        seconds = float(latency) / 1000 if isinstance(latency, (int, float)) else max(event.time - started, 0.0)
        if payload.get("finish_reason") == "incomplete":
            self.duration.record(seconds, {**attributes, sc.ERROR_TYPE: "incomplete"})
        else:
            self.duration.record(seconds, attributes)
        usage = payload.get("usage")
        if isinstance(usage, Mapping):
            for field, token_type in (("input_tokens", "input"), ("output_tokens", "output")):
                value = usage.get(field)
                if isinstance(value, int) and value >= 0:
                    self.tokens.record(value, {**attributes, sc.GEN_AI_TOKEN_TYPE: token_type})

    def _ended(self, event: keel.RuntimeEvent) -> None:
        with self._lock:
            found = self._open.pop(event.execution_id, None)
        if not found:
            return
        status = event.kind.rpartition(".")[2]
        error = _error_type(event.payload.get("error")) if status == "failed" else status
        for started, attributes in found.values():
            self.duration.record(max(event.time - started, 0.0), {**attributes, sc.ERROR_TYPE: error})
