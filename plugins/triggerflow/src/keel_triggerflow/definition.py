"""Flows as data (the seed's Dynamic Task): a JSON/YAML graph of registered chunk names.

A model or a business system submits a definition; :meth:`Registry.load` validates the whole of
it (shape, names, wiring, declared types) and raises one :class:`FlowDefinitionError` listing
every problem, before anything runs. ``FlowDefinition.model_json_schema()`` is the schema to give
a model that writes definitions.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError

from keel_triggerflow.flow import Chain, TriggerFlow
from keel_triggerflow.types import FlowDefinitionError

__all__ = ["Comparison", "FlowDefinition", "Registry"]


class _Node(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Comparison(_Node):
    """``value[path] <op> value``: a condition written as data."""

    path: str = Field("", description="dotted path into the current value; empty = the value itself")
    op: Literal["==", "!=", ">", ">=", "<", "<=", "in", "not in", "truthy"] = "=="
    value: Any = None


Condition = str | Comparison  # a registered condition name, or a comparison


class ToNode(_Node):
    to: str = Field(description="a registered chunk name")
    retries: int = Field(0, ge=0)


class FlowNode(_Node):
    flow: str = Field(description="a registered flow, run as a sub-flow")


class EmitNode(_Node):
    emit: str


class EndNode(_Node):
    end: Literal[True]


class SetStateNode(_Node):
    set_state: str


class PauseNode(_Node):
    pause_for: str
    payload: Any = None
    timeout: float | None = Field(None, gt=0)
    on_timeout: Literal["fail", "continue"] = "fail"
    default: Any = None


class CollectNode(_Node):
    collect: str
    key: str


class IfBranch(_Node):
    condition: Condition
    then: list[Node]


class IfNode(_Node):
    if_: list[IfBranch] = Field(alias="if", min_length=1)
    else_: list[Node] | None = Field(None, alias="else")
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Case(_Node):
    case: Any = Field(description="a value to equal, or {'condition': ...}")
    then: list[Node]


class MatchNode(_Node):
    match: list[Case] = Field(min_length=1)
    key: str = Field("", description="dotted path of the subject in the value; empty = the value")
    mode: Literal["hit_first", "hit_all"] = "hit_first"
    else_: list[Node] | None = Field(None, alias="else")
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class BatchNode(_Node):
    batch: dict[str, str] = Field(min_length=1, description="branch name -> registered chunk (or flow) name")
    concurrency: int | None = Field(None, ge=1)
    on_error: Literal["fail_fast", "collect"] = "fail_fast"


class ForEachNode(_Node):
    for_each: list[Node] = Field(min_length=1)
    concurrency: int | None = Field(None, ge=1)
    on_error: Literal["fail_fast", "collect"] = "fail_fast"


_KINDS = {
    "to": ToNode,
    "flow": FlowNode,
    "emit": EmitNode,
    "end": EndNode,
    "set_state": SetStateNode,
    "pause_for": PauseNode,
    "collect": CollectNode,
    "if": IfNode,
    "match": MatchNode,
    "batch": BatchNode,
    "for_each": ForEachNode,
}


def _kind(value: Any) -> str | None:
    if isinstance(value, dict):
        for key in _KINDS:
            if key in value:
                return key
        return None
    for key, model in _KINDS.items():
        if isinstance(value, model):
            return key
    return None


Node = Annotated[
    Annotated[ToNode, Tag("to")]
    | Annotated[FlowNode, Tag("flow")]
    | Annotated[EmitNode, Tag("emit")]
    | Annotated[EndNode, Tag("end")]
    | Annotated[SetStateNode, Tag("set_state")]
    | Annotated[PauseNode, Tag("pause_for")]
    | Annotated[CollectNode, Tag("collect")]
    | Annotated[IfNode, Tag("if")]
    | Annotated[MatchNode, Tag("match")]
    | Annotated[BatchNode, Tag("batch")]
    | Annotated[ForEachNode, Tag("for_each")],
    Discriminator(
        _kind, custom_error_type="unknown_step", custom_error_message=f"a step is one of: {', '.join(_KINDS)}"
    ),
]


class Trigger(_Node):
    when: str | list[str]
    mode: Literal["or", "and"] = "or"
    steps: list[Node] = Field(min_length=1)


class FlowDefinition(_Node):
    """A whole flow as data."""

    name: str
    description: str = ""
    steps: list[Node] = Field(default_factory=list, description="the main chain")
    on: list[Trigger] = Field(default_factory=list, description="chains started by events")
    reducers: dict[str, Literal["last", "list", "dict"]] = Field(default_factory=dict)
    resources: list[str] = Field(default_factory=list)


for _model in (IfBranch, IfNode, Case, MatchNode, ForEachNode, Trigger, FlowDefinition):
    _model.model_rebuild()


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "in": lambda a, b: a in b,
    "not in": lambda a, b: a not in b,
}


def _subject(path: str) -> Callable[[Any], Any]:
    return lambda value: _dig(value, path)


def _dig(value: Any, path: str) -> Any:
    for part in path.split(".") if path else ():
        value = value[int(part)] if isinstance(value, list) else (value or {}).get(part)
    return value


class Registry:
    """The chunks, conditions and flows a data definition may name, with their declared types.

    :param chunks: name -> chunk function (``async def chunk(ctx)``).
    """

    def __init__(self) -> None:
        self.chunks: dict[str, tuple[Callable[..., Any], Any, Any]] = {}
        self.conditions: dict[str, Callable[..., Any]] = {}
        self.flows: dict[str, TriggerFlow] = {}

    def chunk(
        self, name: str | None = None, *, input: Any = None, output: Any = None
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: register a chunk under ``name`` (default: the function's name), optionally
        with the type it takes and the type it returns (checked between adjacent steps)."""

        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            self.add_chunk(name or fn.__name__, fn, input=input, output=output)
            return fn

        return register

    def add_chunk(self, name: str, fn: Callable[..., Any], *, input: Any = None, output: Any = None) -> None:
        self.chunks[name] = (fn, input, output)

    def add_condition(self, name: str, fn: Callable[..., Any]) -> None:
        self.conditions[name] = fn

    def add_flow(self, flow: TriggerFlow) -> None:
        self.flows[flow.name] = flow

    # --------------------------------------------------------------------------- loading
    def parse(self, source: str | bytes | dict[str, Any] | Path) -> FlowDefinition:
        """Parse JSON/YAML text, a dict or a file, and check it whole; raises with every problem.

        Anything else (``None``, a list, bytes that are not UTF-8, an unreadable file) is a
        :class:`FlowDefinitionError` too, naming what was given and what to give instead."""
        data = _read(source)
        name = str(data.get("name", "<unnamed>")) if isinstance(data, dict) else "<unnamed>"
        try:
            definition = FlowDefinition.model_validate(data)
        except ValidationError as err:
            problems = [f"{'.'.join(map(str, e['loc'])) or 'definition'}: {e['msg']}" for e in err.errors()]
            try:
                problems += self._check_names(data)  # names too, so that one round lists every problem
            except RecursionError:
                problems.append("nested too deeply to check: flatten the definition (sub-flows can replace nesting)")
            raise FlowDefinitionError(name, problems) from None
        problems = self.check(definition)
        if problems:
            raise FlowDefinitionError(definition.name, problems)
        return definition

    def load(self, source: str | bytes | dict[str, Any] | Path | FlowDefinition) -> TriggerFlow:
        """A runnable :class:`TriggerFlow` from a definition, validated whole before anything runs."""
        definition = source if isinstance(source, FlowDefinition) else self.parse(source)
        if isinstance(source, FlowDefinition):
            problems = self.check(definition)
            if problems:
                raise FlowDefinitionError(definition.name, problems)
        flow = TriggerFlow(
            definition.name,
            description=definition.description,
            reducers=dict(definition.reducers),
            resources=definition.resources,
        )
        flow.definition = definition.model_dump(by_alias=True, exclude_defaults=True)
        flow.registry = self  # an adopted execution of a data flow is rebuilt from its recorded definition
        self._build(flow.chain, definition.steps)
        for trigger in definition.on:
            self._build(flow.when(trigger.when, mode=trigger.mode), trigger.steps)
        flow.compile()
        return flow

    def check(self, definition: FlowDefinition) -> list[str]:
        """Every problem of names, wiring and declared types (the shape is pydantic's job)."""
        problems: list[str] = []
        emitted: set[str] = set()
        handled: set[str] = set()
        for trigger in definition.on:
            handled.update([trigger.when] if isinstance(trigger.when, str) else trigger.when)
        self._check(definition.steps, "steps", problems, emitted)
        for i, trigger in enumerate(definition.on):
            self._check(trigger.steps, f"on.{i}.steps", problems, emitted)
        for event in sorted(emitted - handled):
            problems.append(f"emit {event!r}: no 'on' chain handles this event (add one with when: {event!r})")
        return problems

    def _check(self, nodes: list[Any], where: str, problems: list[str], emitted: set[str]) -> None:
        previous_output: Any = None
        for i, node in enumerate(nodes):
            at = f"{where}.{i}"
            current_output: Any = None
            if isinstance(node, ToNode):
                if node.to not in self.chunks:
                    problems.append(f"{at}: unknown chunk {node.to!r} (registered: {_names(self.chunks)})")
                else:
                    _fn, wants, gives = self.chunks[node.to]
                    if previous_output is not None and wants is not None and not _fits(previous_output, wants):
                        problems.append(
                            f"{at}: chunk {node.to!r} takes {_tname(wants)}, but the step before returns "
                            f"{_tname(previous_output)}"
                        )
                    current_output = gives
            elif isinstance(node, FlowNode):
                if node.flow not in self.flows:
                    problems.append(f"{at}: unknown flow {node.flow!r} (registered: {_names(self.flows)})")
            elif isinstance(node, EmitNode):
                emitted.add(node.emit)
                current_output = previous_output
            elif isinstance(node, IfNode):
                for b, branch in enumerate(node.if_):
                    self._check_condition(branch.condition, f"{at}.if.{b}.condition", problems)
                    self._check(branch.then, f"{at}.if.{b}.then", problems, emitted)
                if node.else_:
                    self._check(node.else_, f"{at}.else", problems, emitted)
            elif isinstance(node, MatchNode):
                for c, case in enumerate(node.match):
                    if isinstance(case.case, dict) and "condition" in case.case:
                        self._check_condition(case.case["condition"], f"{at}.match.{c}.case", problems)
                    self._check(case.then, f"{at}.match.{c}.then", problems, emitted)
                if node.else_:
                    self._check(node.else_, f"{at}.else", problems, emitted)
            elif isinstance(node, BatchNode):
                for bname, target in node.batch.items():
                    if target not in self.chunks and target not in self.flows:
                        problems.append(
                            f"{at}.batch.{bname}: unknown chunk or flow {target!r} (registered: {_names(self.chunks)})"
                        )
            elif isinstance(node, ForEachNode):
                self._check(node.for_each, f"{at}.for_each", problems, emitted)
            previous_output = current_output

    def _check_names(self, data: Any) -> list[str]:
        """Unknown names in a definition whose shape is invalid (a lenient walk of the raw data)."""
        problems: list[str] = []

        def walk(nodes: Any, where: str) -> None:
            for i, node in enumerate(nodes if isinstance(nodes, list) else []):
                at = f"{where}.{i}"
                if not isinstance(node, dict):
                    continue
                if isinstance(node.get("to"), str) and node["to"] not in self.chunks:
                    problems.append(f"{at}: unknown chunk {node['to']!r} (registered: {_names(self.chunks)})")
                if isinstance(node.get("flow"), str) and node["flow"] not in self.flows:
                    problems.append(f"{at}: unknown flow {node['flow']!r} (registered: {_names(self.flows)})")
                for b, branch in enumerate(node.get("if") or [] if isinstance(node.get("if"), list) else []):
                    if isinstance(branch, dict):
                        condition = branch.get("condition")
                        if isinstance(condition, str) and condition not in self.conditions:
                            problems.append(f"{at}.if.{b}.condition: unknown condition {condition!r}")
                        walk(branch.get("then"), f"{at}.if.{b}.then")
                for key in ("else", "for_each"):
                    walk(node.get(key), f"{at}.{key}")
                for c, case in enumerate(node.get("match") or [] if isinstance(node.get("match"), list) else []):
                    if isinstance(case, dict):
                        walk(case.get("then"), f"{at}.match.{c}.then")
                if isinstance(node.get("batch"), dict):
                    for bname, target in node["batch"].items():
                        if isinstance(target, str) and target not in self.chunks and target not in self.flows:
                            problems.append(f"{at}.batch.{bname}: unknown chunk or flow {target!r}")

        if isinstance(data, dict):
            walk(data.get("steps"), "steps")
            for i, trigger in enumerate(data.get("on") or [] if isinstance(data.get("on"), list) else []):
                if isinstance(trigger, dict):
                    walk(trigger.get("steps"), f"on.{i}.steps")
        return problems

    def _check_condition(self, condition: Any, at: str, problems: list[str]) -> None:
        if isinstance(condition, str) and condition not in self.conditions:
            problems.append(f"{at}: unknown condition {condition!r} (registered: {_names(self.conditions)})")
        elif isinstance(condition, dict):
            try:
                Comparison.model_validate(condition)
            except ValidationError as err:
                problems.append(f"{at}: {err.errors()[0]['msg']}")

    # -------------------------------------------------------------------------- building
    def _build(self, chain: Chain, nodes: list[Any]) -> None:
        for node in nodes:
            if isinstance(node, ToNode):
                fn = self.chunks[node.to][0]
                chain.to(fn, name=node.to, retries=node.retries)
            elif isinstance(node, FlowNode):
                chain.to(self.flows[node.flow])
            elif isinstance(node, EmitNode):
                chain.emit(node.emit)
            elif isinstance(node, EndNode):
                chain.end()
            elif isinstance(node, SetStateNode):
                chain.set_state(node.set_state)
            elif isinstance(node, PauseNode):
                chain.pause_for(
                    node.pause_for, node.payload, timeout=node.timeout, on_timeout=node.on_timeout, default=node.default
                )
            elif isinstance(node, CollectNode):
                chain.collect(node.collect, node.key)
            elif isinstance(node, IfNode):
                for b, branch in enumerate(node.if_):
                    condition = self._condition(branch.condition)
                    chain.if_condition(condition) if b == 0 else chain.elif_condition(condition)
                    self._build(chain, branch.then)
                if node.else_ is not None:
                    chain.else_condition()
                    self._build(chain, node.else_)
                chain.end_condition()
            elif isinstance(node, MatchNode):
                chain.match(_subject(node.key) if node.key else None, mode=node.mode)
                for case in node.match:
                    if isinstance(case.case, dict) and "condition" in case.case:
                        chain.case(self._condition(case.case["condition"]))
                    else:
                        chain.case(case.case)
                    self._build(chain, case.then)
                if node.else_ is not None:
                    chain.case_else()
                    self._build(chain, node.else_)
                chain.end_match()
            elif isinstance(node, BatchNode):
                branches = [
                    (name, self.flows[target] if target in self.flows else self.chunks[target][0])
                    for name, target in node.batch.items()
                ]
                chain.batch(*branches, concurrency=node.concurrency, on_error=node.on_error)
            elif isinstance(node, ForEachNode):
                chain.for_each(concurrency=node.concurrency, on_error=node.on_error)
                self._build(chain, node.for_each)
                chain.end_for_each()

    def _condition(self, condition: Any) -> Callable[..., Any]:
        if isinstance(condition, str):
            return self.conditions[condition]
        comparison = condition if isinstance(condition, Comparison) else Comparison.model_validate(condition)
        path, value = comparison.path, comparison.value
        if comparison.op == "truthy":
            return lambda v: bool(_dig(v, path))
        compare = _OPS[comparison.op]
        return lambda v: compare(_dig(v, path), value)


_ACCEPTED = "JSON or YAML text (str or UTF-8 bytes), a dict, a pathlib.Path to a .json/.yaml file, or a FlowDefinition"


def _read(source: object) -> Any:
    """The raw data of a definition; anything unreadable is a :class:`FlowDefinitionError` that says
    what was given and what to give instead (never a bare AttributeError or UnicodeDecodeError)."""
    if isinstance(source, dict):
        return source
    if isinstance(source, Path):
        try:
            raw = source.read_bytes()
        except OSError as err:
            raise _unparsed(
                f"cannot read {str(source)!r}: {err.strerror or err} (give the path of a definition file)"
            ) from None
        return _parse_text(_decode(raw, f"file {str(source)!r}"), yaml=source.suffix in {".yaml", ".yml"})
    if isinstance(source, bytes | bytearray | memoryview):
        text = _decode(bytes(source), "the bytes given")
    elif isinstance(source, str):
        text = source
    elif isinstance(source, list | tuple):
        raise _unparsed(
            f"got a {type(source).__name__} ({len(source)} item(s)): a definition is one mapping with 'name' and "
            "'steps'; load each definition with its own Registry.load() call"
        )
    else:
        raise _unparsed(f"cannot read a definition from {type(source).__name__}: give {_ACCEPTED}")
    return _parse_text(text, yaml=not text.lstrip().startswith(("{", "[")))


def _unparsed(problem: str) -> FlowDefinitionError:
    return FlowDefinitionError("<unparsed>", [problem])


def _decode(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _unparsed(
            f"{what}: not UTF-8 text (byte {err.start} is {raw[err.start : err.start + 1]!r}); "
            "a definition is JSON or YAML text: encode it as UTF-8"
        ) from None


def _parse_text(text: str, *, yaml: bool) -> Any:
    try:
        return _parse(text, yaml=yaml)
    except RecursionError:
        raise _unparsed(
            "nested too deeply to parse: flatten the definition (sub-flows can replace deep nesting)"
        ) from None
    except ValueError as err:  # e.g. an integer literal past Python's 4,300-digit limit
        if isinstance(err, FlowDefinitionError):
            raise
        raise _unparsed(f"a value cannot be read: {err}") from None


def _parse(text: str, *, yaml: bool) -> Any:
    if not yaml:
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise _unparsed(f"not valid JSON: {err}") from None
    try:
        import yaml as pyyaml
    except ImportError:
        raise _unparsed("YAML definitions need PyYAML: pip install 'keel-triggerflow[yaml]' (or submit JSON)") from None
    try:
        return pyyaml.safe_load(text)
    except pyyaml.YAMLError as err:
        raise _unparsed(f"not valid YAML: {err}") from None


def _names(table: dict[str, Any]) -> str:
    return ", ".join(sorted(table)) or "none"


def _tname(t: Any) -> str:
    return getattr(t, "__name__", repr(t))


def _fits(given: Any, wanted: Any) -> bool:
    if given is wanted or wanted is Any:
        return True
    try:
        return isinstance(given, type) and isinstance(wanted, type) and issubclass(given, wanted)
    except TypeError:
        return False
