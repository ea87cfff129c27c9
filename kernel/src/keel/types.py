"""The pydantic types that cross plugin boundaries.

Registration hooks return the ``*Spec`` descriptors defined here. A descriptor is cheap to build: it
carries a ``factory`` that imports a heavy SDK only when the driver is first used.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ActionCall",
    "ActionContext",
    "ActionSpec",
    "Channel",
    "ChannelSpec",
    "Environment",
    "EnvironmentSpec",
    "EnvironmentStatus",
    "EvalResult",
    "EvalSample",
    "EvaluatorSpec",
    "Health",
    "Interrupt",
    "Message",
    "Model",
    "ModelCapabilities",
    "ModelConfig",
    "ModelDone",
    "ModelEvent",
    "ModelRequest",
    "ModelSpec",
    "Permissions",
    "PolicyDecision",
    "ProductEvent",
    "Progress",
    "RestartPolicy",
    "Risk",
    "SlotSpec",
    "StoreSpec",
    "TextDelta",
    "ToolCall",
    "ToolCallEvent",
    "ToolSchema",
    "Usage",
    "new_id",
]

Risk = Literal["read", "write", "irreversible"]


def new_id(prefix: str = "") -> str:
    """A time-ordered unique id: milliseconds since the epoch, then 64 random bits (hex)."""
    body = f"{int(time.time() * 1000):012x}{os.urandom(8).hex()}"
    return f"{prefix}_{body}" if prefix else body


class _Type(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)


class _Spec(BaseModel):
    """Descriptors: immutable, may hold callables."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True, defer_build=True)


# --------------------------------------------------------------------------------------- models


class ToolCall(_Type):
    """A model's request to call an action."""

    id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class Message(_Type):
    """One chat message."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None


class ToolSchema(_Type):
    """An action as the model sees it."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class ModelRequest(_Type):
    """Everything a model driver needs for one call."""

    messages: list[Message]
    tools: list[ToolSchema] = Field(default_factory=list)
    output_schema: dict[str, Any] | None = Field(
        default=None, description="JSON schema the answer must match (native structured output when supported)"
    )
    output_name: str = "output"
    options: dict[str, Any] = Field(default_factory=dict, description="temperature, max_tokens, seed, ...")


class Usage(_Type):
    input_tokens: int = 0
    output_tokens: int = 0


class TextDelta(_Type):
    """A piece of the answer's text."""

    type: Literal["text"] = "text"
    text: str


class ToolCallEvent(_Type):
    """A complete tool call from the model."""

    type: Literal["tool_call"] = "tool_call"
    call: ToolCall


class ModelDone(_Type):
    """The last event of every model stream."""

    type: Literal["done"] = "done"
    finish_reason: str = "stop"
    usage: Usage | None = None
    model: str | None = None


ModelEvent = TextDelta | ToolCallEvent | ModelDone


class ModelCapabilities(_Type):
    streaming: bool = True
    tools: bool = False
    json_schema: bool = Field(default=False, description="honours ModelRequest.output_schema natively")


class ModelConfig(BaseModel):
    """One ``[models.<alias>]`` table of a stack. Unknown keys go to the driver as options."""

    model_config = ConfigDict(extra="allow", defer_build=True)

    provider: str
    alias: str | None = Field(default=None, description="the [models.<alias>] name; filled in by the stack")
    model: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)


@runtime_checkable
class Model(Protocol):
    """A model driver instance, built by ``ModelSpec.factory``."""

    name: str
    capabilities: ModelCapabilities

    def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        """Yield text deltas and tool calls, then exactly one ``ModelDone``."""
        ...

    async def aclose(self) -> None: ...


class ModelSpec(_Spec):
    """A model provider. ``factory(config)`` builds a :class:`Model`."""

    name: str
    description: str = ""
    factory: Callable[[ModelConfig], Model]
    capabilities: ModelCapabilities = Field(default_factory=ModelCapabilities)  # built on first use, not at import


# -------------------------------------------------------------------------------------- actions


class ActionSpec(_Spec):
    """An action (a tool): a typed callable with a schema, a scope and a risk level.

    Build one with :func:`keel.action` rather than by hand.
    """

    # the characters every major model API accepts in a tool name (no dots: OpenAI refuses them)
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
    description: str = ""
    parameters: dict[str, Any] = Field(description="JSON schema of the arguments (an object)")
    handler: Callable[..., Any] = Field(description="sync or async; called with validated keyword arguments")
    risk: Risk = "read"
    tags: frozenset[str] = frozenset()
    visible_to: frozenset[str] | None = Field(
        default=None, description="agent names or 'tag:<t>' allowed to see it; None = every agent"
    )
    timeout: float | None = 30.0
    redact: frozenset[str] = Field(default=frozenset(), description="argument names hidden in audit records")
    input_model: type[BaseModel] | None = None
    idempotency_key: Callable[[dict[str, Any]], str] | None = None

    def tool_schema(self) -> ToolSchema:
        return ToolSchema(name=self.name, description=self.description, parameters=self.parameters)


class ActionContext(_Type):
    """Who is calling, for policy and audit."""

    agent: str | None = None
    execution_id: str | None = None
    tenant: str = "default"
    approver_available: bool = False
    idempotency_key: str | None = Field(
        default=None, description="set by a flow step: the same key means the same effect"
    )


class ActionCall(_Type):
    """One call of an action, as policy sees it."""

    id: str = Field(default_factory=lambda: new_id("call"))
    action: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    risk: Risk = "read"
    tags: frozenset[str] = frozenset()


class PolicyDecision(_Type):
    """A policy plugin's answer. The kernel combines answers: deny beats approve beats allow."""

    verdict: Literal["allow", "deny", "approve"]
    reason: str = ""
    policy: str = ""


# --------------------------------------------------------------------------------- environments


class Permissions(_Type):
    read_paths: list[str] = Field(default_factory=list)
    write_paths: list[str] = Field(default_factory=list)
    network: bool = False
    env: list[str] = Field(default_factory=list, description="environment variable names passed through")
    cpu_seconds: float | None = None
    memory_mb: int | None = None
    wall_seconds: float | None = None


class RestartPolicy(_Type):
    mode: Literal["never", "on-failure"] = "on-failure"
    max_restarts: int = 5
    backoff_seconds: float = 0.5


EnvironmentStatus = Literal["stopped", "starting", "ready", "unhealthy", "restarting", "failed"]


class Health(_Type):
    ok: bool
    detail: str = ""
    checked_at: float = Field(default_factory=time.time)


@runtime_checkable
class Environment(Protocol):
    """Something hosted with a lifecycle (an MCP server, a sandbox, a browser)."""

    name: str

    @property
    def status(self) -> EnvironmentStatus: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def health(self) -> Health: ...


class EnvironmentSpec(_Spec):
    """A kind of environment. ``factory(options)`` builds one from its ``[environments.<name>]``
    table (the manager's keys removed, ``name`` added).

    ``options`` declares the table's driver keys as a pydantic model (``extra="forbid"``): the
    stack checks them when it resolves (``keel stack``), naming the table and the key, before
    anything starts.
    """

    name: str
    kind: str
    description: str = ""
    permissions: Permissions = Field(default_factory=Permissions)  # (factories: no model is built at import)
    restart: RestartPolicy = Field(default_factory=RestartPolicy)
    factory: Callable[[dict[str, Any]], Environment]
    options: type[BaseModel] | None = Field(
        default=None, description="the options model; None = the factory checks its options itself"
    )


# ---------------------------------------------------------------------------------------- stores


class StoreSpec(_Spec):
    """A store backend. ``factory(options)`` builds a :class:`keel.store.Store`.

    ``options`` declares the ``[store]`` table's keys as a pydantic model (``extra="forbid"``):
    the stack checks them when it resolves, naming the file and the key, without starting the store.
    """

    name: str
    description: str = ""
    durable: bool = Field(description="data survives a process restart")
    factory: Callable[[dict[str, Any]], Any]
    options: type[BaseModel] | None = Field(
        default=None, description="the options model; None = the factory checks its options itself"
    )


class SlotSpec(_Spec):
    """A stack slot a plugin owns (TriggerFlow's ``runner``), so that ``keel stack`` checks it.

    ``check(choice, host)`` gets the stack's :class:`keel.stack.SlotChoice` for the slot (name,
    options, where it was chosen) and the plugin host; it starts nothing, returns the name of the
    plugin that provides the chosen driver, and raises a :class:`keel.KeelError` (a
    :class:`keel.DriverNotFoundError` listing the available names, or a :class:`keel.StackError`
    for bad options) when the choice cannot work.
    """

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$", description="the stack key: runner = ... or [runner]")
    description: str = ""
    check: Callable[[Any, Any], str]


# ---------------------------------------------------------------------------------------- doctor


class DoctorResult(_Type):
    """What one ``keel doctor`` check found: a verdict, the evidence, and the fix in one line."""

    status: Literal["pass", "warn", "fail"]
    evidence: list[str] = Field(
        default_factory=list, description="which runnable, action, environment or setting; one line each"
    )
    fix: str = Field(default="", description="what to change, in one line (empty on a pass)")


class DoctorCheck(_Spec):
    """A check of one pre-launch checklist row, run by ``keel doctor``.

    ``check(context)`` receives a read-only :class:`keel.doctor.DoctorContext` (the resolved stack,
    the runnables, the actions with their risk, the declared environments, the plugin host) and
    returns a :class:`DoctorResult`. It must start nothing: no environment, model or store call.
    """

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$", description="unique among all checks")
    row: str = Field(
        pattern=r"^[a-z0-9][a-z0-9-]{0,63}$",
        description="a checklist row id (keel.doctor.ROWS: 'output-contract', 'state'...) or a row of your own",
    )
    title: str = Field(description="what the check looks at, in a few words")
    check: Callable[[Any], DoctorResult]


# -------------------------------------------------------------------------------------- channels


class ProductEvent(_Type):
    """What a UI or an IM channel sees: never RuntimeEvent payloads or parser paths."""

    type: Literal["task.started", "task.progress", "task.partial", "task.waiting", "task.completed", "task.failed"]
    task_id: str
    execution_id: str
    tenant: str = "default"
    seq: int = 0
    message: str = ""
    percent: float | None = None
    data: Any = None
    waiting_for: dict[str, Any] | None = None
    time: float = Field(default_factory=time.time)


# ------------------------------------------------------------------------------ execution events


class Interrupt(_Type):
    """One signal an execution waits for: an item of ``execution.waiting``'s ``interrupts``.

    ``payload`` is what the waiter shows: a message, or ``{"message": ..., "schema": <JSON schema
    of the expected answer>}``. Answer it with ``execution.signal(name, answer, request_id=...)``.
    """

    name: str = Field(min_length=1, description="the signal name to answer with")
    payload: Any = Field(default=None, description="a message, or {'message': ..., 'schema': {...}}")
    id: str = Field(default="", description="this wait's id, when the runnable tells waits of one name apart")
    path: str = Field(default="", description="where in the runnable it waits (a flow's step path)")
    deadline: float | None = Field(default=None, description="epoch seconds; None waits forever")


class Progress(_Type):
    """How far an execution got: the payload of an ``execution.progress`` (or ``<kind>.progress``)
    RuntimeEvent, shown to users as ``task.progress``. ``message`` is user-safe text."""

    message: str = Field(min_length=1, max_length=500, description="human-readable, user-safe")
    percent: float | None = Field(
        default=None, ge=0.0, le=100.0, allow_inf_nan=False, description="0..100, where known"
    )

    @classmethod
    def read(cls, payload: Any) -> Progress:
        """A progress from any event payload, never raising: a missing or non-text message reads
        ``"working"`` (a long one is cut at 500 characters), a percent that is not a finite number
        is dropped and one out of range is clamped to 0..100."""
        data = payload if isinstance(payload, dict) else {}
        message = data.get("message")
        percent = data.get("percent")
        if isinstance(percent, bool) or not isinstance(percent, int | float) or not math.isfinite(percent):
            percent = None
        return cls(
            message=message[:500] if isinstance(message, str) and message else "working",
            percent=None if percent is None else max(0.0, min(100.0, float(percent))),
        )


@runtime_checkable
class Channel(Protocol):
    name: str

    async def send(self, event: ProductEvent) -> None: ...

    async def aclose(self) -> None: ...


class ChannelSpec(_Spec):
    name: str
    description: str = ""
    factory: Callable[[dict[str, Any]], Channel]


# ------------------------------------------------------------------------------------ evaluators


class EvalSample(_Type):
    """What an evaluator judges: one run of one case.

    ``input``, ``output`` and ``expected`` are the case's; the rest is what an evaluator may need
    beyond them, all optional so that a plain ``EvalSample(output=..., expected=...)`` still works.
    """

    input: Any = None
    output: Any = None
    expected: Any = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    arguments: dict[str, Any] = Field(
        default_factory=dict, description="this evaluator's arguments, as the case file gives them"
    )
    events: list[dict[str, Any]] = Field(
        default_factory=list,
        description="the run's RuntimeEvents as JSON objects (model.request, model.response, action.*, ...)",
    )
    duration_ms: float | None = Field(default=None, description="wall-clock time of the run")
    error: str | None = Field(default=None, description="what the run failed with; None when it finished")
    output_schema: dict[str, Any] | None = Field(
        default=None, description="JSON schema of the runnable's output contract, when it has one"
    )
    runtime: Any = Field(
        default=None,
        exclude=True,
        description="the keel.Runtime the case ran in, for evaluators that call a model (a judge); "
        "None when a finished run is re-scored offline",
    )


class EvalResult(_Type):
    evaluator: str
    passed: bool
    score: float = Field(ge=0.0, le=1.0)
    reason: str = ""
    label: str | None = Field(default=None, description="a category, when the evaluator gives one (a judge's)")


class EvaluatorSpec(_Spec):
    name: str
    description: str = ""
    evaluate: Callable[[EvalSample], EvalResult | Awaitable[EvalResult]]
    needs_model: bool = Field(
        default=False,
        description="the evaluator calls a model (a judge): an offline re-score keeps its earlier result",
    )
