"""The built-in evaluators, registered through ``keel_evaluators()`` like anyone else's.

Each takes its arguments from the case file (``sample.arguments``), validated by its own pydantic
model, so a typo in a case is an error that names the evaluator and the field before anything runs.

| name | judges |
|---|---|
| ``schema`` | the output against the runnable's output contract (or a ``schema`` given inline) |
| ``equals``, ``contains``, ``regex`` | the output (or the value at ``path``) against ``expected`` or ``value`` |
| ``json_path`` | rules on the value at ``path``: ``exists``, ``equals``, ``one_of``, ``min``/``max``, ``type``, lengths |
| ``numeric`` | a number within an absolute (``abs``) or relative (``rel``) tolerance |
| ``max_duration``, ``max_model_requests``, ``max_tokens``, ``max_cost``, ``max_action_calls`` | limits, read from the run's events |
| ``trajectory`` | the action calls made: ``in_order`` (a subsequence), ``exact``, or as a ``set`` |
| ``judge`` | a model's label, score and reason against a ``rubric``, through the agent core's structured output |
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from keel import EvalResult, EvalSample, EvaluatorSpec
from keel_eval.errors import EvalError
from keel_eval.paths import resolve, to_json
from keel_eval.trace import ActionCallRecord, read_trace

__all__ = ["BUILTINS", "builtin_specs", "check_arguments", "evaluate_builtin"]


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _result(name: str, passed: bool, reason: str, score: float | None = None, label: str | None = None) -> EvalResult:
    value = (1.0 if passed else 0.0) if score is None else min(max(score, 0.0), 1.0)
    return EvalResult(evaluator=name, passed=passed, score=value, reason=reason, label=label)


def _show(value: Any, limit: int = 80) -> str:
    text = json.dumps(to_json(value), ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _target(sample: EvalSample, path: str | None) -> tuple[bool, Any]:
    return resolve(to_json(sample.output), path)


def _wanted(name: str, sample: EvalSample, args: BaseModel, path: str | None) -> Any:
    """The value to compare with: ``value`` when the case gives one, else ``expected`` at ``path``."""
    if "value" in args.model_fields_set:
        return to_json(getattr(args, "value"))  # noqa: B009
    if sample.expected is None:
        raise EvalError(f"evaluator {name!r}: give the case an expected output, or the evaluator a value")
    found, value = resolve(to_json(sample.expected), path)
    if not found:
        raise EvalError(f"evaluator {name!r}: the expected output has nothing at path {path!r}")
    return value


def _where(path: str | None) -> str:
    return f" at {path}" if path else ""


# ------------------------------------------------------------------------------------- rules


class EqualsArgs(_Args):
    path: str | None = Field(default=None, description="JSON path into the output (and into expected)")
    value: Any = Field(default=None, description="the value to equal (default: expected at path)")
    ignore_case: bool = False


def _fold(value: Any) -> Any:
    if isinstance(value, str):
        return value.casefold()
    if isinstance(value, list):
        return [_fold(v) for v in value]
    if isinstance(value, dict):
        return {k: _fold(v) for k, v in value.items()}
    return value


def equals(sample: EvalSample, args: EqualsArgs) -> EvalResult:
    wanted = _wanted("equals", sample, args, args.path)
    found, got = _target(sample, args.path)
    if not found:
        return _result("equals", False, f"nothing{_where(args.path)} in the output")
    same = _fold(got) == _fold(wanted) if args.ignore_case else got == wanted
    if same:
        return _result("equals", True, f"equal{_where(args.path)}")
    differences = _differences(wanted, got, args.path or "")
    if isinstance(wanted, dict | list) and differences:
        return _result(
            "equals",
            False,
            "; ".join(differences[:3]) + (f" (+{len(differences) - 3} more)" if len(differences) > 3 else ""),
        )
    return _result("equals", False, f"expected {_show(wanted)}{_where(args.path)}, got {_show(got)}")


def _differences(wanted: Any, got: Any, path: str) -> list[str]:
    """Where two JSON values differ, as ``path: expected X, got Y`` lines."""
    if isinstance(wanted, dict) and isinstance(got, dict):
        found = []
        for key in [*wanted, *(k for k in got if k not in wanted)]:
            where = f"{path}.{key}" if path else str(key)
            if key not in got:
                found.append(f"{where}: missing (expected {_show(wanted[key], 40)})")
            elif key not in wanted:
                found.append(f"{where}: unexpected {_show(got[key], 40)}")
            else:
                found += _differences(wanted[key], got[key], where)
        return found
    if isinstance(wanted, list) and isinstance(got, list) and len(wanted) == len(got):
        return [d for i, (w, g) in enumerate(zip(wanted, got, strict=True)) for d in _differences(w, g, f"{path}[{i}]")]
    if wanted == got:
        return []
    return [f"{path or '(output)'}: expected {_show(wanted, 40)}, got {_show(got, 40)}"]


class ContainsArgs(_Args):
    path: str | None = None
    value: Any = Field(default=None, description="substring, list element(s), or a sub-mapping (default: expected)")
    ignore_case: bool = False


def _contains(got: Any, wanted: Any) -> bool:
    if isinstance(got, str):
        return isinstance(wanted, str) and wanted in got
    if isinstance(got, list):
        items = wanted if isinstance(wanted, list) else [wanted]
        return all(item in got for item in items)
    if isinstance(got, dict) and isinstance(wanted, dict):
        return all(k in got and (got[k] == v or _contains(got[k], v)) for k, v in wanted.items())
    return bool(got == wanted)


def contains(sample: EvalSample, args: ContainsArgs) -> EvalResult:
    wanted = _wanted("contains", sample, args, args.path)
    found, got = _target(sample, args.path)
    if not found:
        return _result("contains", False, f"nothing{_where(args.path)} in the output")
    if args.ignore_case:
        got, wanted = _fold(got), _fold(wanted)
    if _contains(got, wanted):
        return _result("contains", True, f"contains {_show(wanted, 40)}")
    return _result("contains", False, f"{_show(got)}{_where(args.path)} does not contain {_show(wanted)}")


class RegexArgs(_Args):
    pattern: str = Field(description="a Python regular expression, searched in the text")
    path: str | None = None
    ignore_case: bool = False
    full: bool = Field(default=False, description="the whole text must match, not only a part")


def regex(sample: EvalSample, args: RegexArgs) -> EvalResult:
    try:
        pattern = re.compile(args.pattern, re.IGNORECASE if args.ignore_case else 0)
    except re.error as err:
        raise EvalError(
            f"evaluator 'regex': pattern {args.pattern!r} is not a valid regular expression: {err}"
        ) from err
    found, got = _target(sample, args.path)
    if not found:
        return _result("regex", False, f"nothing{_where(args.path)} in the output")
    text = got if isinstance(got, str) else json.dumps(got, ensure_ascii=False)
    match = pattern.fullmatch(text) if args.full else pattern.search(text)
    if match:
        return _result("regex", True, f"/{args.pattern}/ matches")
    return _result("regex", False, f"/{args.pattern}/ does not match {_show(text)}{_where(args.path)}")


_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
    "null": lambda v: v is None,
}


class JsonPathArgs(_Args):
    path: str = Field(description="JSON path into the output: a.b, items[0], items[*].price")
    exists: bool | None = None
    equals: Any = None
    one_of: list[Any] | None = None
    min: float | None = None
    max: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    type: Literal["string", "number", "integer", "boolean", "array", "object", "null"] | None = None


def json_path(sample: EvalSample, args: JsonPathArgs) -> EvalResult:
    found, got = _target(sample, args.path)
    checks: list[tuple[bool, str]] = []
    given = args.model_fields_set - {"path"}
    if not given:
        given = {"exists"}
    if "exists" in given:
        want = True if args.exists is None else args.exists
        checks.append((found == want, f"{'exists' if found else 'missing'}"))
    if found:
        if "equals" in given:
            checks.append((got == to_json(args.equals), f"{_show(got)} == {_show(args.equals)}"))
        if args.one_of is not None:
            checks.append((got in to_json(args.one_of), f"{_show(got)} in {_show(args.one_of)}"))
        number = got if isinstance(got, int | float) and not isinstance(got, bool) else None
        if args.min is not None:
            checks.append((number is not None and number >= args.min, f"{_show(got)} >= {args.min}"))
        if args.max is not None:
            checks.append((number is not None and number <= args.max, f"{_show(got)} <= {args.max}"))
        size = len(got) if isinstance(got, str | list | dict) else None
        if args.min_length is not None:
            checks.append((size is not None and size >= args.min_length, f"length {size} >= {args.min_length}"))
        if args.max_length is not None:
            checks.append((size is not None and size <= args.max_length, f"length {size} <= {args.max_length}"))
        if args.type is not None:
            checks.append((_TYPES[args.type](got), f"{_show(got, 30)} is {args.type}"))
    elif given - {"exists"}:
        checks.append((False, f"nothing at {args.path}"))
    failed = [why for ok, why in checks if not ok]
    score = sum(ok for ok, _ in checks) / len(checks)
    if failed:
        return _result("json_path", False, f"{args.path}: not {'; not '.join(failed)}", score)
    return _result("json_path", True, f"{args.path}: {'; '.join(why for _, why in checks)}", score)


class NumericArgs(_Args):
    path: str | None = None
    value: float | None = Field(default=None, description="the target (default: expected at path)")
    abs: float = Field(default=0.0, ge=0, description="absolute tolerance")
    rel: float = Field(default=0.0, ge=0, description="relative tolerance (0.01 = 1%)")


def numeric(sample: EvalSample, args: NumericArgs) -> EvalResult:
    wanted = _wanted("numeric", sample, args, args.path)
    found, got = _target(sample, args.path)
    if not found:
        return _result("numeric", False, f"nothing{_where(args.path)} in the output")
    try:
        a, b = float(got), float(wanted)
    except (TypeError, ValueError):
        return _result("numeric", False, f"{_show(got)}{_where(args.path)} is not a number (target {_show(wanted)})")
    if math.isnan(a):
        return _result("numeric", False, f"got NaN{_where(args.path)}")
    tolerance = max(args.abs, args.rel * abs(b))
    diff = abs(a - b)
    if diff <= tolerance:
        return _result("numeric", True, f"{a:g} within {tolerance:g} of {b:g}")
    score = max(0.0, 1.0 - (diff - tolerance) / max(abs(b), tolerance, 1e-9))
    return _result(
        "numeric", False, f"{a:g}{_where(args.path)} is {diff:g} from {b:g} (tolerance {tolerance:g})", score
    )


# ------------------------------------------------------------------------------------ schema


class SchemaArgs(_Args):
    schema_: dict[str, Any] | None = Field(
        default=None, alias="schema", description="a JSON schema (default: the runnable's output contract)"
    )


def schema(sample: EvalSample, args: SchemaArgs) -> EvalResult:
    import jsonschema

    contract = args.schema_ or sample.output_schema
    if not contract:
        raise EvalError(
            "evaluator 'schema': the runnable has no output contract; give the evaluator one (schema: {schema: {...}})"
        )
    if sample.error is not None:
        return _result("schema", False, f"no output: the run failed ({sample.error})")
    validator = jsonschema.Draft202012Validator(contract)
    problems = sorted(validator.iter_errors(to_json(sample.output)), key=lambda e: list(e.absolute_path))
    if not problems:
        return _result("schema", True, "the output satisfies the contract")
    shown = "; ".join(f"{'.'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}" for e in problems[:3])
    more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
    return _result("schema", False, f"{shown}{more}")


# ------------------------------------------------------------------------------------ limits


class DurationArgs(_Args):
    max_ms: float = Field(gt=0, description="the most the run may take, in milliseconds")


def _ratio_score(used: float, limit: float) -> float:
    return 1.0 if used <= limit else max(0.0, limit / used) if used else 0.0


def max_duration(sample: EvalSample, args: DurationArgs) -> EvalResult:
    took = sample.duration_ms if sample.duration_ms is not None else read_trace(sample.events).duration_ms
    if took is None:
        raise EvalError("evaluator 'max_duration': the run has no duration and no timed events")
    ok = took <= args.max_ms
    return _result(
        "max_duration", ok, f"{took:.1f} ms {'<=' if ok else '>'} {args.max_ms:g} ms", _ratio_score(took, args.max_ms)
    )


class CountArgs(_Args):
    max: int = Field(ge=0, description="the most allowed")


def max_model_requests(sample: EvalSample, args: CountArgs) -> EvalResult:
    used = read_trace(sample.events).model_requests
    ok = used <= args.max
    return _result(
        "max_model_requests", ok, f"{used} model request(s), limit {args.max}", _ratio_score(used, args.max or 0.5)
    )


class TokenArgs(_Args):
    max: int | None = Field(default=None, ge=0, description="input and output tokens together")
    max_input: int | None = Field(default=None, ge=0)
    max_output: int | None = Field(default=None, ge=0)


def max_tokens(sample: EvalSample, args: TokenArgs) -> EvalResult:
    trace = read_trace(sample.events)
    limits = [
        (trace.tokens, args.max, "tokens"),
        (trace.input_tokens, args.max_input, "input tokens"),
        (trace.output_tokens, args.max_output, "output tokens"),
    ]
    given = [(used, limit, what) for used, limit, what in limits if limit is not None]
    if not given:
        raise EvalError("evaluator 'max_tokens': give max, max_input or max_output")
    over = [f"{used} {what} > {limit}" for used, limit, what in given if used > limit]
    score = min(_ratio_score(used, limit or 0.5) for used, limit, _ in given)
    if over:
        return _result("max_tokens", False, "; ".join(over), score)
    return _result("max_tokens", True, "; ".join(f"{used} {what} <= {limit}" for used, limit, what in given))


class CostArgs(_Args):
    max: float = Field(ge=0, description="the most one run may cost")
    input_per_million: float = Field(ge=0, description="price of a million input tokens")
    output_per_million: float = Field(ge=0, description="price of a million output tokens")
    currency: str = "USD"


def max_cost(sample: EvalSample, args: CostArgs) -> EvalResult:
    trace = read_trace(sample.events)
    cost = (trace.input_tokens * args.input_per_million + trace.output_tokens * args.output_per_million) / 1e6
    ok = cost <= args.max
    return _result(
        "max_cost",
        ok,
        f"{cost:.6f} {args.currency} ({trace.input_tokens} in, {trace.output_tokens} out) {'<=' if ok else '>'} {args.max:g}",
        _ratio_score(cost, args.max or 1e-12),
    )


class ActionCountArgs(_Args):
    max: int = Field(ge=0)
    action: str | None = Field(default=None, description="count only calls of this action")


def max_action_calls(sample: EvalSample, args: ActionCountArgs) -> EvalResult:
    calls = [c for c in read_trace(sample.events).calls if args.action is None or c.action == args.action]
    what = f"call(s) of {args.action}" if args.action else "action call(s)"
    ok = len(calls) <= args.max
    return _result(
        "max_action_calls", ok, f"{len(calls)} {what}, limit {args.max}", _ratio_score(len(calls), args.max or 0.5)
    )


# -------------------------------------------------------------------------------- trajectory


class ExpectedCall(_Args):
    action: str
    arguments: dict[str, Any] | None = Field(default=None, description="a subset the call's arguments must hold")


class TrajectoryArgs(_Args):
    calls: list[str | ExpectedCall] = Field(description="the expected action calls: names, or {action, arguments}")
    mode: Literal["in_order", "exact", "set"] = Field(
        default="in_order",
        description="in_order: a subsequence of the calls made; exact: the same list; set: any order",
    )
    allow_extra: bool = Field(default=True, description="for set: whether calls beyond the expected ones are allowed")


def _matches(expected: ExpectedCall, call: ActionCallRecord) -> bool:
    if expected.action != call.action:
        return False
    if expected.arguments is None:
        return True
    return all(k in call.arguments and call.arguments[k] == to_json(v) for k, v in expected.arguments.items())


def trajectory(sample: EvalSample, args: TrajectoryArgs) -> EvalResult:
    wanted = [c if isinstance(c, ExpectedCall) else ExpectedCall(action=c) for c in args.calls]
    made = read_trace(sample.events).calls
    names = [c.action for c in made]
    if args.mode == "exact":
        hits = sum(1 for w, c in zip(wanted, made, strict=False) if _matches(w, c))
        ok = hits == len(wanted) == len(made)
        score = hits / max(len(wanted), len(made)) if (wanted or made) else 1.0
    elif args.mode == "in_order":
        hits, i = 0, 0
        for w in wanted:
            while i < len(made) and not _matches(w, made[i]):
                i += 1
            if i == len(made):
                break
            hits, i = hits + 1, i + 1
        ok = hits == len(wanted)
        score = hits / len(wanted) if wanted else 1.0
    else:
        hits = sum(1 for w in wanted if any(_matches(w, c) for c in made))
        extra = [c.action for c in made if not any(_matches(w, c) for w in wanted)]
        ok = hits == len(wanted) and (args.allow_extra or not extra)
        score = hits / len(wanted) if wanted else (1.0 if not extra else 0.0)
        if ok:
            return _result("trajectory", True, f"made every expected call: {names}", score)
        reason = f"expected {[w.action for w in wanted]} in any order, made {names}"
        return _result(
            "trajectory", False, reason + (f" (unexpected: {extra})" if extra and not args.allow_extra else ""), score
        )
    mode = "in this order" if args.mode == "in_order" else "exactly"
    if ok:
        return _result("trajectory", True, f"made {names}", score)
    return _result("trajectory", False, f"expected {[w.action for w in wanted]} {mode}, made {names}", score)


# ------------------------------------------------------------------------------------- judge


class JudgeArgs(_Args):
    rubric: str = Field(min_length=1, description="what a good output is, in words the judge model reads")
    labels: list[str] = Field(default=["pass", "fail"], min_length=2, description="the labels the judge picks from")
    pass_labels: list[str] | None = Field(default=None, description="labels that pass (default: the first label)")
    threshold: float | None = Field(default=None, ge=0, le=1, description="also require score >= threshold")
    model: str | None = Field(default=None, description="a model alias from the stack (default: the stack's model)")
    include_expected: bool = Field(default=True, description="show the judge the expected output")
    options: dict[str, Any] = Field(
        default_factory=lambda: {"temperature": 0.0, "seed": 0},
        description="model options for the judge (temperature, seed, max_tokens)",
    )


_JUDGES: dict[str, Any] = {}


def _judge_agent(args: JudgeArgs) -> Any:
    from pydantic import create_model

    import keel

    key = json.dumps([args.rubric, args.labels, args.model, args.options], sort_keys=True, default=str)
    agent = _JUDGES.get(key)
    if agent is None:
        verdict = create_model(
            "Verdict",
            label=(Literal[tuple(args.labels)], Field(description="one of: " + ", ".join(args.labels))),  # type: ignore[valid-type,arg-type]
            score=(float, Field(ge=0, le=1, description="how well the output meets the rubric, 0 to 1")),
            reason=(str, Field(description="one short sentence")),
        )
        instructions = (
            "You judge the output of a task against a rubric. Read the task input, the output and, when "
            "given, the expected output. Answer with a label, a score from 0 to 1 and a one-sentence reason.\n\n"
            f"Rubric: {args.rubric.strip()}\nLabels: {', '.join(args.labels)}"
        )
        agent = keel.Agent(
            "eval_judge", instructions, model=args.model, output=verdict, max_retries=2, options=args.options
        )
        if len(_JUDGES) > 64:
            _JUDGES.clear()
        _JUDGES[key] = agent
    return agent


async def judge(sample: EvalSample, args: JudgeArgs) -> EvalResult:
    if sample.runtime is None:
        raise EvalError("evaluator 'judge' calls a model: it needs the runtime the case ran in")
    shown: dict[str, Any] = {"input": to_json(sample.input), "output": to_json(sample.output)}
    if args.include_expected and sample.expected is not None:
        shown["expected"] = to_json(sample.expected)
    if sample.error is not None:
        shown["error"] = sample.error
    verdict = await _judge_agent(args).run(shown, runtime=sample.runtime)
    pass_labels = args.pass_labels or args.labels[:1]
    passed = verdict.label in pass_labels and (args.threshold is None or verdict.score >= args.threshold)
    return _result("judge", passed, verdict.reason, verdict.score, label=verdict.label)


# ---------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Builtin:
    name: str
    args: type[BaseModel]
    function: Callable[[EvalSample, Any], EvalResult | Awaitable[EvalResult]]
    description: str
    needs_model: bool = False


BUILTINS: dict[str, Builtin] = {
    b.name: b
    for b in [
        Builtin("schema", SchemaArgs, schema, "the output satisfies the runnable's output contract (JSON schema)"),
        Builtin("equals", EqualsArgs, equals, "the output (or the value at path) equals expected (or value)"),
        Builtin("contains", ContainsArgs, contains, "the output contains a substring, element(s) or sub-mapping"),
        Builtin("regex", RegexArgs, regex, "a regular expression matches the output (or the value at path)"),
        Builtin("json_path", JsonPathArgs, json_path, "rules on the value at a JSON path"),
        Builtin("numeric", NumericArgs, numeric, "a number within a tolerance of the target"),
        Builtin("max_duration", DurationArgs, max_duration, "the run took at most max_ms"),
        Builtin("max_model_requests", CountArgs, max_model_requests, "the run made at most max model requests"),
        Builtin("max_tokens", TokenArgs, max_tokens, "the run used at most so many tokens"),
        Builtin("max_cost", CostArgs, max_cost, "the run's tokens cost at most max, at the given prices"),
        Builtin("max_action_calls", ActionCountArgs, max_action_calls, "the run made at most max action calls"),
        Builtin("trajectory", TrajectoryArgs, trajectory, "the action calls made, in order or as a set"),
        Builtin("judge", JudgeArgs, judge, "a model judges the output against a rubric: label, score, reason", True),
    ]
}


def check_arguments(name: str, arguments: dict[str, Any], where: str) -> BaseModel | None:
    """Validate a built-in evaluator's arguments (``None`` for an evaluator from another plugin).

    :raises EvalError: naming ``where``, the evaluator, each bad field and the valid ones.
    """
    builtin = BUILTINS.get(name)
    if builtin is None:
        return None
    try:
        return builtin.args.model_validate(arguments)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(arguments)'}: {e['msg']}" for e in err.errors())
        valid = ", ".join(f.alias or n for n, f in builtin.args.model_fields.items())
        raise EvalError(f"{where}: evaluator {name!r}: {problems}. Its arguments: {valid}") from None


def evaluate_builtin(name: str, sample: EvalSample) -> EvalResult | Awaitable[EvalResult]:
    """Run built-in evaluator ``name`` on a sample, its arguments checked first."""
    builtin = BUILTINS[name]
    return builtin.function(sample, check_arguments(name, sample.arguments, "case"))


def builtin_specs() -> list[EvaluatorSpec]:
    """The built-ins as specs, as ``keel_eval.plugin`` registers them (without importing this module)."""
    from keel_eval.plugin import keel_evaluators

    return list(keel_evaluators())
