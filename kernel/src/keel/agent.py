"""``Agent`` (a definition) and ``AgentExecution`` (one run of it).

    agent = keel.Agent("invoice", "Extract the invoice.", output={"vendor": (str, "who issued it")})
    execution = await agent.start(text, runtime=runtime)
    async for event in execution.instant():      # temporary UI: fields while they stream
        ...
    invoice = await execution.get_data()         # durable writes: the validated object, nothing partial

An ``Agent`` holds no per-run state: any number of executions may share it at once. Everything a run
owns (messages, attempts, events, the partial parse) lives on its :class:`AgentExecution`, which
lives in ``keel.agent_run`` (the model turn's stream in ``keel.agent_stream``) and is re-exported here.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import anyio.to_thread
from pydantic import BaseModel

from keel.agent_run import AgentExecution
from keel.errors import (
    AgentTimeoutError,
    ExecutionCancelled,
    KeelError,
)
from keel.instant import OutputLimits
from keel.output import Extra, OutputContract
from keel.refs import load_ref
from keel.types import (
    Model,
)

if TYPE_CHECKING:
    from keel.runtime import Runtime

__all__ = ["Agent", "AgentExecution", "AgentTimeoutError", "ExecutionCancelled"]

_FILE_KEYS = frozenset(
    {
        "name",
        "description",
        "role",
        "instructions",
        "model",
        "actions",
        "output",
        "output_model",
        "output_name",
        "ensure_keys",
        "max_retries",
        "max_tool_steps",
        "max_tool_calls",
        "max_parallel_tools",
        "limits",
        "output_extra",
        "timeout",
        "options",
    }
)


# ------------------------------------------------------------------------------------------ agent


class Agent:
    """An agent definition: who it is, which model it uses, what it may call, what it must answer.

    :param name: the name it is registered and started under.
    :param instructions: the system prompt (with ``role`` prepended when given).
    :param model: a model alias from the stack's ``[models]``; ``None`` = the stack's ``model`` slot.
    :param actions: names (or ``tag:<t>``) of the actions it may see (the tool loop uses them).
    :param output: the output contract: a pydantic model, the dict shorthand, an
        :class:`~keel.output.OutputContract`, or ``None`` for a free-text answer.
    :param ensure_keys: paths that must be present and non-empty (``items[*].title``).
    :param max_retries: how many times a failed parse/validation is fed back and retried.
    :param max_tool_steps: how many rounds of tool calls one attempt may make before it fails
        with :class:`keel.ToolLoopLimit`.
    :param max_tool_calls: how many tool calls one model turn may ask for; more fails the
        execution with :class:`keel.ToolLoopLimit` (no call of that turn runs).
    :param max_parallel_tools: how many of one round's tool calls run at once.
    :param limits: :class:`keel.OutputLimits` for the model's answers (size, depth, number and
        string length), or a dict of the ones to change; past one, the execution fails with
        :class:`keel.OutputLimitExceeded`.
    :param output_extra: for the dict shorthand: ``"forbid"`` (default) sends keys the contract
        does not name back to the model as an error; ``"ignore"`` drops them.
    :param timeout: seconds for a whole execution (``None`` = no limit).
    :param options: passed to the model driver (``temperature``, ``max_tokens``, ...).
    """

    kind = "agent"

    def __init__(
        self,
        name: str,
        instructions: str = "",
        *,
        role: str = "",
        description: str = "",
        model: str | None = None,
        actions: Iterable[str] = (),
        output: OutputContract | type[BaseModel] | Mapping[str, Any] | None = None,
        ensure_keys: Iterable[str] = (),
        output_name: str | None = None,
        max_retries: int = 2,
        max_tool_steps: int = 8,
        max_tool_calls: int = 32,
        max_parallel_tools: int = 4,
        timeout: float | None = None,
        options: Mapping[str, Any] | None = None,
        limits: OutputLimits | Mapping[str, int] | None = None,
        output_extra: Extra = "forbid",
    ):
        if not name:
            raise KeelError("an agent needs a name")
        if max_retries < 0:
            raise KeelError(f"agent {name!r}: max_retries must be 0 or more, got {max_retries}")
        self.name = name
        self.instructions = instructions
        self.role = role
        self.description = description or (instructions.strip().splitlines() or [""])[0]
        self.model = model
        self.actions = (actions,) if isinstance(actions, str) else tuple(actions)
        keys = tuple(ensure_keys)
        if output is None and keys:
            raise KeelError(f"agent {name!r}: ensure_keys needs an output contract")
        if output_name is None and isinstance(output, Mapping):
            output_name = "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]+", name) if part) or None
        self.contract = (
            None
            if output is None
            else OutputContract.of(output, ensure_keys=keys, name=output_name, limits=limits, extra=output_extra)
        )
        self.limits = self.contract.limits if self.contract is not None else OutputLimits.of(limits)
        self.max_retries = max_retries
        if max_tool_steps < 1 or max_parallel_tools < 1 or max_tool_calls < 1:
            raise KeelError(f"agent {name!r}: max_tool_steps, max_tool_calls and max_parallel_tools must be at least 1")
        self.max_tool_steps = max_tool_steps
        self.max_tool_calls = max_tool_calls
        self.max_parallel_tools = max_parallel_tools
        self.timeout = timeout
        self.options: dict[str, Any] = dict(options or {})
        # built once per agent (per kind of model), never per execution
        self._system: dict[bool, str] = {}

    def __repr__(self) -> str:
        return f"Agent({self.name!r}, model={self.model!r}, output={self.contract.name if self.contract else None!r})"

    # ------------------------------------------------------------------------------ loading

    @classmethod
    def from_file(cls, path: str | Path) -> Agent:
        """Load an agent from a TOML file (or YAML, with ``keel-kernel[yaml]``).

        The keys live in an ``[agent]`` table or at the top level: ``name``, ``instructions``,
        ``role``, ``description``, ``model``, ``actions``, ``output`` (the dict shorthand, type
        names as strings) or ``output_model = "package.module:Model"``, ``ensure_keys``,
        ``max_retries``, ``timeout``, ``options``.
        """
        file = Path(path)
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as err:
            raise KeelError(f"agent file {file}: cannot be read: {err}") from err
        if file.suffix in (".yaml", ".yml"):
            try:
                import yaml  # type: ignore[import-untyped]
            except ImportError:
                raise KeelError(
                    f"agent file {file}: YAML needs PyYAML; install keel-kernel[yaml] or write the file as TOML"
                ) from None
            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as err:
                raise KeelError(f"agent file {file}: not valid YAML: {err}") from err
        else:
            try:
                data = tomllib.loads(text)
            except tomllib.TOMLDecodeError as err:
                raise KeelError(f"agent file {file}: not valid TOML: {err}") from err
        if not isinstance(data, dict):
            raise KeelError(f"agent file {file}: expected a table of settings, got {type(data).__name__}")
        return cls.from_dict(data.get("agent", data), source=str(file))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "agent definition") -> Agent:
        """Build an agent from plain data (what :meth:`from_file` reads)."""
        unknown = set(data) - _FILE_KEYS
        if unknown:
            raise KeelError(f"{source}: unknown key(s) {sorted(unknown)}; known: {', '.join(sorted(_FILE_KEYS))}")
        if "name" not in data:
            raise KeelError(f'{source}: an agent needs a name (name = "...")')
        settings = dict(data)
        output: Any = settings.pop("output", None)
        target = settings.pop("output_model", None)
        if target is not None:
            if output is not None:
                raise KeelError(f"{source}: give either output or output_model, not both")
            output = _import_model(str(target), source)
        try:
            return cls(settings.pop("name"), output=output, **settings)
        except TypeError as err:
            raise KeelError(f"{source}: {err}") from err
        except KeelError as err:
            raise KeelError(f"{source}: {err}") from err

    # ---------------------------------------------------------------------------- runnable

    def input_schema(self) -> dict[str, Any]:
        return {
            "description": "the task: text, or an object sent to the model as JSON",
            "anyOf": [{"type": "string"}, {"type": "object"}],
        }

    def output_schema(self) -> dict[str, Any]:
        return self.contract.json_schema if self.contract is not None else {"type": "string"}

    async def start(
        self,
        input: Any,
        *,
        runtime: Runtime,
        tenant: str = "default",
        trace_id: str | None = None,
        parent_span_id: str | None = None,
    ) -> AgentExecution:
        """Start an execution in the runtime's task group and return it at once."""
        model = runtime.model(self.model)
        execution = AgentExecution(
            self, input, runtime=runtime, model=model, tenant=tenant, trace_id=trace_id, parent_span_id=parent_span_id
        )
        runtime.executions.add(execution)
        runtime.task_group.start_soon(execution._run, name=f"keel agent {self.name} {execution.id}")
        return execution

    async def run(self, input: Any, *, runtime: Runtime, tenant: str = "default") -> Any:
        """Start an execution and wait for its validated data."""
        execution = await self.start(input, runtime=runtime, tenant=tenant)
        return await execution.get_data()

    def run_sync(
        self,
        input: Any,
        *,
        runtime: Runtime | None = None,
        stack: str | Path | None = None,
        model: Model | None = None,
        tenant: str = "default",
    ) -> Any:
        """For scripts only: run one execution in a new event loop and return its data.

        :param runtime: a runtime that is not started yet (it is started and closed here);
            default: one built from the stack (``stack`` or the local ``keel.toml``).
        :param model: a model instance to use instead of the stack's (offline demos, tests).
        """

        try:
            anyio.get_current_task()
        except RuntimeError:  # no event loop here: as it should be
            pass
        else:
            raise KeelError(
                f"agent {self.name!r}: run_sync() is for scripts and cannot run inside an event loop; "
                "in async code use 'await agent.run(input, runtime=runtime)'"
            )

        async def main() -> Any:
            from keel.runtime import Runtime

            rt = runtime if runtime is not None else Runtime.from_stack(stack)
            async with rt:
                if model is not None:
                    rt.use_model(model, self.model)
                return await self.run(input, runtime=rt, tenant=tenant)

        return anyio.run(main)

    # ------------------------------------------------------------------------------ prompts

    def system_prompt(self, native_schema: bool) -> str:
        """The system message; it describes the contract when the model has no native schema support."""
        prompt = self._system.get(native_schema)
        if prompt is None:
            parts = [self.role.strip(), self.instructions.strip()]
            if self.contract is not None and not native_schema:
                parts.append(self.contract.instructions)
            prompt = self._system[native_schema] = "\n\n".join(p for p in parts if p)
        return prompt

    def render_input(self, input: Any) -> str:
        """The user message for an input: text as is, anything else as JSON."""
        if isinstance(input, str):
            return input
        if isinstance(input, BaseModel):
            return input.model_dump_json()
        try:
            return json.dumps(input, ensure_ascii=False, default=str)
        except (TypeError, ValueError) as err:
            raise KeelError(f"agent {self.name!r}: cannot send the input to a model as JSON: {err}") from err


def _import_model(target: str, source: str) -> type[BaseModel]:
    obj = load_ref(target, what=f"{source}: output_model")
    if not (isinstance(obj, type) and issubclass(obj, BaseModel)):
        raise KeelError(f"{source}: output_model {target!r} is not a pydantic model")
    return obj
