"""The attribute names and values keel-otel writes, pinned here.

They follow the OpenTelemetry GenAI semantic conventions as published with semantic-conventions
v1.41 (``docs/gen-ai``, April 2026; the conventions have since moved to their own repository). The
``opentelemetry-semantic-conventions`` Python package lags the spec and marks all of these
incubating, so we do not import it: a rename there must not silently rename our telemetry, and a
rename in the spec is a deliberate change here.

Names under ``keel.`` are ours: what the GenAI conventions have no name for.
"""

from __future__ import annotations

# ---------------------------------------------------------------- GenAI (semconv v1.41, development)
GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_REQUEST_TEMPERATURE = "gen_ai.request.temperature"
GEN_AI_REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_TOP_P = "gen_ai.request.top_p"
GEN_AI_REQUEST_SEED = "gen_ai.request.seed"
GEN_AI_REQUEST_STOP_SEQUENCES = "gen_ai.request.stop_sequences"
GEN_AI_REQUEST_FREQUENCY_PENALTY = "gen_ai.request.frequency_penalty"
GEN_AI_REQUEST_PRESENCE_PENALTY = "gen_ai.request.presence_penalty"
GEN_AI_OUTPUT_TYPE = "gen_ai.output.type"
GEN_AI_INPUT_MESSAGES = "gen_ai.input.messages"  # opt-in: content
GEN_AI_OUTPUT_MESSAGES = "gen_ai.output.messages"  # opt-in: content
GEN_AI_TOOL_DEFINITIONS = "gen_ai.tool.definitions"  # opt-in
GEN_AI_AGENT_NAME = "gen_ai.agent.name"
GEN_AI_AGENT_ID = "gen_ai.agent.id"
GEN_AI_WORKFLOW_NAME = "gen_ai.workflow.name"
GEN_AI_TOOL_NAME = "gen_ai.tool.name"
GEN_AI_TOOL_CALL_ID = "gen_ai.tool.call.id"
GEN_AI_TOOL_TYPE = "gen_ai.tool.type"
GEN_AI_TOOL_CALL_ARGUMENTS = "gen_ai.tool.call.arguments"  # opt-in: content
GEN_AI_TOOL_CALL_RESULT = "gen_ai.tool.call.result"  # opt-in: content
GEN_AI_TOKEN_TYPE = "gen_ai.token.type"  # a metric attribute: input / output
ERROR_TYPE = "error.type"  # stable, from the general conventions

# the GenAI client metrics (histograms; units {token} and s)
GEN_AI_CLIENT_TOKEN_USAGE = "gen_ai.client.token.usage"
GEN_AI_CLIENT_OPERATION_DURATION = "gen_ai.client.operation.duration"

# gen_ai.operation.name values
OP_CHAT = "chat"
OP_INVOKE_AGENT = "invoke_agent"
OP_INVOKE_WORKFLOW = "invoke_workflow"
OP_EXECUTE_TOOL = "execute_tool"

#: the standard switch for content capture (``true``/``false``; the newer ``SPAN_ONLY``,
#: ``SPAN_AND_EVENT``, ``EVENT_ONLY`` and ``NO_CONTENT`` are understood too)
CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"

# ------------------------------------------------------------------------------------ keel's own
KEEL_EXECUTION_ID = "keel.execution.id"
KEEL_TENANT = "keel.tenant"
KEEL_ATTEMPT = "keel.attempt"
KEEL_STATUS = "keel.status"
#: an execution's token totals. Not ``gen_ai.usage.*``: backends add those up over a trace, so
#: totals on the agent span as well as on its model requests would count every token twice.
KEEL_USAGE_INPUT_TOKENS = "keel.usage.input_tokens"
KEEL_USAGE_OUTPUT_TOKENS = "keel.usage.output_tokens"
KEEL_LATENCY_MS = "keel.model.latency_ms"
KEEL_FIRST_DELTA_MS = "keel.model.first_delta_ms"
KEEL_OUTPUT_REPAIRED = "keel.output.repaired"
KEEL_ACTION_RISK = "keel.action.risk"
KEEL_ACTION_VERDICT = "keel.action.verdict"
KEEL_ACTION_POLICY = "keel.action.policy"
KEEL_FLOW_PATH = "keel.flow.path"
KEEL_FLOW_STEP = "keel.flow.step"
KEEL_ENVIRONMENT_NAME = "keel.environment.name"
KEEL_ENVIRONMENT_DRIVER = "keel.environment.driver"
KEEL_ENVIRONMENT_RESTARTS = "keel.environment.restarts"
#: set on a span that keel-otel ended itself because its end never came (see ``open_span_ttl``)
KEEL_OTEL_ABANDONED = "keel.otel.abandoned"

__all__ = [name for name in dir() if name.isupper()]
