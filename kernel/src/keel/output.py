"""Output contracts: what an agent's answer must be, and how a raw answer becomes validated data.

A contract is a pydantic model, or a compact dict shorthand turned into one::

    contract = keel.OutputContract.of({
        "vendor": (str, "who issued the invoice"),
        "total": (float, "total in EUR", {"ge": 0}),
        "status": (Literal["open", "paid"], "payment status"),
        "lines": [{"item": (str, "what was sold"), "qty": (int, "how many")}],
        "customer": {"name": (str, ""), "vat_id": ("str?", "VAT number if printed")},
    }, ensure_keys=["lines[*].item"])

Shorthand rules: ``(type, "description")`` or ``(type, "description", {constraints})`` is a field
(``ge``, ``le``, ``gt``, ``lt``, ``min_length``, ``max_length``, ``pattern``, ``enum``, ``default``,
``required``); a dict is a nested object; a one-element list ``[spec]`` is a list of ``spec``. A
type is a Python type (``Literal[...]`` for enums) or, in agent files, a name: ``str``, ``int``,
``float``, ``bool``, ``list[str]``... A name ending in ``?`` is optional (default ``None``);
every other field is required.

Unknown keys are refused by default (``extra="forbid"``: the model is told which key to drop on
the retry); ``extra="ignore"`` drops them silently. ``NaN`` and ``Infinity`` are refused in the
shorthand's number fields.

The final text is parsed strictly first (pydantic's JSON parser). When that fails it is repaired in
one linear pass by :class:`keel.InstantParser` (prose and code fences around the JSON, brackets in
the prose, trailing commas, an answer cut off mid-way: the open strings and containers are closed;
an example quoted in the prose that fails the contract gives way to the next JSON value),
and only if that finds no JSON, by ``json-repair`` (single quotes, comments, unquoted keys), on
answers up to ``OutputLimits.repair_max_chars``, since its time grows faster than the text. Then the
value is validated. ``ensure_keys`` lists paths (``items[*].title``) that must be present and
non-empty. No error other than a :class:`keel.KeelError` leaves :meth:`OutputContract.check`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from keel.errors import KeelError, OutputLimitExceeded
from keel.instant import InstantParser, OutputLimits

__all__ = ["OutputCheck", "OutputContract", "OutputLimits", "contract_model"]

Extra = Literal["forbid", "ignore"]

_TYPE_NAMES: dict[str, Any] = {
    "str": str,
    "string": str,
    "int": int,
    "integer": int,
    "float": float,
    "number": float,
    "bool": bool,
    "boolean": bool,
    "any": Any,
    "dict": dict[str, Any],
    "object": dict[str, Any],
}
_CONSTRAINTS = frozenset({"ge", "le", "gt", "lt", "min_length", "max_length", "pattern", "multiple_of"})
_MAX_CANDIDATES = 8  # JSON values in one answer tried against the contract, prose examples included
_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\*|\d+)\]")


# ------------------------------------------------------------------------------------ shorthand


def _type_from_name(name: str, where: str) -> Any:
    text = name.strip()
    if text.startswith("list[") and text.endswith("]"):
        return list[_type_from_name(text[5:-1], where)]  # type: ignore[misc]
    if text in _TYPE_NAMES:
        return _TYPE_NAMES[text]
    raise KeelError(
        f"output contract: unknown type name {name!r} for {where}; use one of "
        f"{', '.join(sorted(_TYPE_NAMES))}, list[...], or a Python type in code"
    )


def _is_field_spec(spec: Any) -> bool:
    return (
        isinstance(spec, (tuple, list))
        and 2 <= len(spec) <= 3
        and not isinstance(spec[0], (dict, list, tuple))
        and isinstance(spec[1], str)
    )


def _field(spec: Any, name: str, where: str, extra: Extra) -> tuple[Any, Any]:
    """(annotation, FieldInfo) for one shorthand entry."""
    if isinstance(spec, Mapping):
        return contract_model(spec, name=_model_name(where), extra=extra), Field()
    if isinstance(spec, list) and len(spec) == 1:
        item, _ = _field(spec[0], name, where + "[]", extra)
        return list[item], Field()  # type: ignore[valid-type]
    if _is_field_spec(spec):
        kind, description = spec[0], spec[1]
        options = dict(spec[2]) if len(spec) == 3 else {}
    elif isinstance(spec, (type, str)) or getattr(spec, "__origin__", None) is not None:
        kind, description, options = spec, "", {}
    else:
        raise KeelError(
            f"output contract: {where} must be (type, 'description'), (type, 'description', {{...}}), "
            f"a dict (nested object) or [spec] (a list), got {spec!r}"
        )
    optional = False
    if isinstance(kind, str):
        if kind.endswith("?"):
            optional, kind = True, kind[:-1]
        kind = _type_from_name(kind, where)
    if "enum" in options:
        kind = Literal[tuple(options.pop("enum"))]
    required = options.pop("required", not optional)
    unknown = set(options) - _CONSTRAINTS - {"default"}
    if unknown:
        raise KeelError(f"output contract: {where}: unknown constraint(s) {sorted(unknown)}")
    if "default" in options:
        default = options.pop("default")
    elif required:
        default = ...
    else:
        default = None
    if default is None:
        kind = kind | None
    return kind, Field(default, description=description or None, **options)


def _model_name(where: str) -> str:
    parts = re.split(r"[^A-Za-z0-9]+", where)
    return "".join(p[:1].upper() + p[1:] for p in parts if p) or "Output"


def contract_model(shorthand: Mapping[str, Any], *, name: str = "Output", extra: Extra = "forbid") -> type[BaseModel]:
    """Turn the dict shorthand into a pydantic model.

    :param extra: ``"forbid"`` (the default) refuses keys the contract does not name, so a
        misspelled key is fed back to the model instead of being lost; ``"ignore"`` drops them.
        Numbers are finite: ``NaN`` and ``Infinity`` are refused.
    """
    if extra not in ("forbid", "ignore"):
        raise KeelError(f"output contract {name}: extra must be 'forbid' or 'ignore', got {extra!r}")
    fields: dict[str, Any] = {}
    for key, spec in shorthand.items():
        where = f"{name}.{key}" if name != "Output" else key
        fields[key] = _field(spec, key, where, extra)
    return create_model(name, __config__=ConfigDict(extra=extra, allow_inf_nan=False), **fields)


# ------------------------------------------------------------------------------------- contract


@dataclass(slots=True)
class OutputCheck:
    """The verdict on one answer: ``data`` when it satisfies the contract, else ``errors``."""

    data: BaseModel | None
    errors: list[str] = field(default_factory=list)
    repaired: bool = False

    @property
    def ok(self) -> bool:
        return self.data is not None


class OutputContract:
    """A pydantic model plus what an agent needs around it; built once and shared by executions.

    :param model: the pydantic model the answer must validate against.
    :param ensure_keys: paths (``a.b``, ``items[*].title``, ``items[0]``) that must be present and
        neither ``None`` nor empty.
    :param limits: the :class:`OutputLimits` an answer is checked against (default: the defaults).
    """

    def __init__(
        self,
        model: type[BaseModel],
        *,
        ensure_keys: Iterable[str] = (),
        name: str | None = None,
        limits: OutputLimits | Mapping[str, int] | None = None,
    ):
        self.model = model
        self.name = name or model.__name__
        self.ensure_keys = tuple(ensure_keys)
        self.limits = OutputLimits.of(limits)
        self._paths = [(key, _parse_path(key)) for key in self.ensure_keys]
        self.json_schema: dict[str, Any] = model.model_json_schema()
        self.root: Literal["object", "any"] = "object" if self.json_schema.get("type") == "object" else "any"
        self._instructions: str | None = None

    @classmethod
    def of(
        cls,
        spec: OutputContract | type[BaseModel] | Mapping[str, Any],
        *,
        ensure_keys: Iterable[str] = (),
        name: str | None = None,
        limits: OutputLimits | Mapping[str, int] | None = None,
        extra: Extra = "forbid",
    ) -> OutputContract:
        """A contract from a model, the dict shorthand, or a contract (returned as is, unless keys or
        limits are added). ``extra`` applies to the shorthand only: a pydantic model keeps its own
        ``model_config``."""
        if isinstance(spec, OutputContract):
            if not ensure_keys and limits is None:
                return spec
            return cls(
                spec.model,
                ensure_keys=[*spec.ensure_keys, *ensure_keys],
                name=name or spec.name,
                limits=spec.limits if limits is None else limits,
            )
        if isinstance(spec, type) and issubclass(spec, BaseModel):
            return cls(spec, ensure_keys=ensure_keys, name=name, limits=limits)
        if isinstance(spec, Mapping):
            model = contract_model(spec, name=name or "Output", extra=extra)
            return cls(model, ensure_keys=ensure_keys, name=name, limits=limits)
        raise KeelError(f"an output contract is a pydantic model or a dict of fields, got {spec!r}")

    @property
    def instructions(self) -> str:
        """Prompt text describing the schema, for models without native structured output."""
        if self._instructions is None:
            schema = json.dumps(self.json_schema, ensure_ascii=False, separators=(",", ":"))
            lines = [
                "Answer with one JSON object and nothing else: no prose, no code fence.",
                f"It must match this JSON schema: {schema}",
            ]
            if self.ensure_keys:
                lines.append(f"These fields must be present and not empty: {', '.join(self.ensure_keys)}.")
            self._instructions = "\n".join(lines)
        return self._instructions

    # -------------------------------------------------------------------------------- checking

    def check(self, text: str, *, parsed: InstantParser | None = None) -> OutputCheck:
        """Parse (strictly, else with repair) and validate one answer.

        :param parsed: an :class:`~keel.InstantParser` that was fed exactly ``text`` (an agent's
            instant stream): its parse is reused for the repair instead of reading the text again.
        :raises keel.OutputLimitExceeded: the answer is past one of :attr:`limits`.

        Time is linear in the text, except ``json-repair``'s, which is bounded by
        ``limits.repair_max_chars``. An agent runs it in a worker thread for long answers, under the
        execution's timeout.
        """
        limits = self.limits
        if len(text) > limits.max_chars:
            raise OutputLimitExceeded("max_chars", len(text), limits.max_chars, "the answer's size")
        try:
            data = self.model.model_validate_json(text)
        except ValidationError as err:
            if not any(e["type"] == "json_invalid" for e in err.errors()):
                return OutputCheck(None, _describe(err))
        except (ValueError, RecursionError, MemoryError) as err:  # a validator of the user's model
            return OutputCheck(None, [f"(answer): could not be validated: {type(err).__name__}: {err}"])
        else:
            return self._ensure(data, False)
        first: OutputCheck | None = None
        for value in self._candidates(text, parsed):
            check = self._validate(value)
            if check.ok:
                return check
            first = first or check
        if first is not None:  # JSON was found, and none of it satisfied the contract
            return first
        if len(text) > limits.repair_max_chars:
            return OutputCheck(
                None,
                [f"(answer): not valid JSON, and no JSON object could be found in it ({len(text):,} characters)"],
                True,
            )
        found, value = _json_repair(text)
        if not found:
            return OutputCheck(None, ["(answer): not valid JSON, and it could not be repaired"], True)
        # prose after the JSON may itself hold brackets, which the repairer returns as more values
        if isinstance(value, list) and self.root == "object":
            value = next((v for v in value if isinstance(v, dict)), value)
        return self._validate(value)

    def _validate(self, value: Any) -> OutputCheck:
        try:
            data = self.model.model_validate(value)
        except ValidationError as err:
            return OutputCheck(None, _describe(err), True)
        except (ValueError, RecursionError, MemoryError) as err:
            return OutputCheck(None, [f"(answer): could not be validated: {type(err).__name__}: {err}"], True)
        return self._ensure(data, True)

    def _candidates(self, text: str, parsed: InstantParser | None) -> Iterator[Any]:
        """The JSON values in ``text``, in order, each found and closed in one linear pass (limits
        enforced): prose may quote an example before the answer, so a value that does not satisfy
        the contract is followed by the next one (at most ``_MAX_CANDIDATES``)."""
        start = 0
        for _ in range(_MAX_CANDIDATES):
            if parsed is None or parsed.chars != len(text) - start:
                parsed = InstantParser(limits=self.limits, root=self.root)
                parsed.feed(text[start:] if start else text)
            found, value = parsed.partial_value()
            if not found:
                return
            yield value
            if not parsed.done or parsed.end >= parsed.chars:
                return
            start += parsed.end
            parsed = None

    def _ensure(self, data: BaseModel, repaired: bool) -> OutputCheck:
        missing = self.missing_keys(data)
        if missing:
            return OutputCheck(None, missing, repaired)
        return OutputCheck(data, [], repaired)

    def missing_keys(self, data: Any) -> list[str]:
        """Errors for every ``ensure_keys`` path that is absent or empty in ``data``."""
        errors: list[str] = []
        for key, parts in self._paths:
            for path, value in _walk(data, parts, ""):
                if value is None or value == "" or (isinstance(value, (list, dict)) and not value):
                    errors.append(f"{path or key}: must be present and not empty (ensure_keys)")
        return errors

    def feedback(self, errors: list[str]) -> str:
        """The message that tells the model what to fix on a retry."""
        listed = "\n".join(f"- {e}" for e in errors)
        return (
            f"Your answer did not match the required output:\n{listed}\n"
            "Answer again with the corrected JSON object only."
        )


def _json_repair(text: str) -> tuple[bool, Any]:
    import json_repair  # imported on the repair path only (about 50 ms)

    try:
        return True, json_repair.loads(text)
    except (ValueError, RecursionError, MemoryError, TypeError, IndexError, KeyError):
        return False, None  # the repairer's own failures are "could not be repaired", never a crash


def _describe(err: ValidationError) -> list[str]:
    out = []
    for e in err.errors(include_url=False):
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e["loc"]).lstrip(".")
        out.append(f"{loc or '(answer)'}: {e['msg']}")
    return out


def _parse_path(key: str) -> list[str | int]:
    parts: list[str | int] = []
    pos = 0
    for m in _PATH_PART.finditer(key):
        if m.start() != pos and key[pos : m.start()] != ".":
            raise KeelError(f"ensure_keys: cannot read the path {key!r}; write it like 'items[*].title'")
        pos = m.end()
        if m.group(1) is not None:
            parts.append(m.group(1))
        else:
            parts.append("*" if m.group(2) == "*" else int(m.group(2)))
    if not parts or pos != len(key):
        raise KeelError(f"ensure_keys: cannot read the path {key!r}; write it like 'items[*].title'")
    return parts


def _walk(value: Any, parts: list[str | int], path: str) -> Iterable[tuple[str, Any]]:
    """(path, value) for every place the path reaches; ``None`` where it breaks off."""
    if not parts:
        yield path, value
        return
    head, rest = parts[0], parts[1:]
    if value is None:
        yield path, None
        return
    if head == "*":
        items = value if isinstance(value, list) else None
        if not items:
            yield path, items
            return
        for i, item in enumerate(items):
            yield from _walk(item, rest, f"{path}[{i}]")
    elif isinstance(head, int):
        items = value if isinstance(value, list) else []
        yield from _walk(items[head] if head < len(items) else None, rest, f"{path}[{head}]")
    else:
        if isinstance(value, BaseModel):
            child = getattr(value, head, None)
            if child is None and value.model_extra:
                child = value.model_extra.get(head)
        elif isinstance(value, dict):
            child = cast(dict[str, Any], value).get(head)
        else:
            child = None
        yield from _walk(child, rest, f"{path}.{head}" if path else head)
