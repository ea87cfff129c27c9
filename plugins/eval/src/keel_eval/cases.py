"""Cases and datasets: YAML files a person edits, validated with errors that name file, case and field.

A file holds one case (a mapping with ``name`` and ``input``) or a dataset (a mapping with
``cases``, and defaults for them: ``runnable``, ``evaluators``). A dataset on the command line is a
file or a folder; a folder's ``*.yaml``/``*.yml`` files are read in name order, recursively.

Evaluators are written by name, with or without arguments::

    evaluators:
      - schema                               # a bare name
      - equals: {path: vendor}               # a name with its arguments
      - max_model_requests: {max: 1}

``case.schema.json`` (package data, regenerated with ``keel eval schema``) gives editors completion.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from keel_eval.errors import CaseError

__all__ = [
    "ActionFixture",
    "Case",
    "CaseFile",
    "Dataset",
    "DatasetFile",
    "EvaluatorRef",
    "Fixtures",
    "SignalFixture",
    "case_schema",
    "load_dataset",
    "parse_evaluator",
]

SCHEMA_FILE = Path(__file__).with_name("case.schema.json")

#: what an evaluator entry looks like, for editors; the loader checks it with its own messages
_ENTRY_SCHEMA: dict[str, Any] = {
    "items": {
        "anyOf": [
            {"type": "string", "minLength": 1, "description": "an evaluator's name"},
            {
                "type": "object",
                "minProperties": 1,
                "maxProperties": 1,
                "additionalProperties": {"anyOf": [{"type": "object"}, {"type": "null"}]},
                "description": "{name: {arguments}}",
            },
        ]
    }
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ActionFixture(_Model):
    """A recorded action result: the case's run gets it instead of calling the action."""

    action: str = Field(description="the action's name")
    arguments: dict[str, Any] | None = Field(
        default=None, description="the arguments it was called with; None matches any call of the action"
    )
    result: Any = Field(default=None, description="what the action returned")
    error: dict[str, str] | None = Field(default=None, description="{type, message} when the call failed")


class SignalFixture(_Model):
    """An answer to a signal the run waits for (an approval), given when it starts waiting."""

    name: str = Field(description="the signal's name, as the execution.waiting event names it")
    payload: Any = Field(default=None, description="the answer")


class Fixtures(_Model):
    actions: list[ActionFixture] = Field(
        default_factory=list, description="recorded action results: the run calls no real action they cover"
    )
    signals: list[SignalFixture] = Field(default_factory=list, description="answers to signals the run waits for")


class CaseFile(_Model):
    """One case: an input, what is expected of the output, and who judges it."""

    name: str = Field(min_length=1, description="unique within the dataset; reports and comparisons key on it")
    description: str = ""
    input: Any = Field(description="what the runnable is started with: text or an object")
    expected: Any = Field(default=None, description="the expected output (or part of it) that evaluators compare to")
    metadata: dict[str, Any] = Field(default_factory=dict, description="free-form: tags, source, owner, ...")
    evaluators: list[Any] = Field(
        default_factory=list,
        description="evaluator names, or {name: {arguments}}; added to the dataset's own evaluators",
        json_schema_extra=_ENTRY_SCHEMA,
    )
    fixtures: Fixtures | None = Field(default=None, description="recorded action results and signal answers")
    expected_error: str | None = Field(
        default=None,
        description="the run must fail with an error matching this regular expression ('OutputLimitExceeded: .*depth')",
    )


class DatasetFile(_Model):
    """A dataset: defaults, and its cases."""

    name: str | None = Field(default=None, description="the dataset's name (default: the file's stem)")
    description: str = ""
    runnable: str | None = Field(default=None, description="the runnable to run (``keel eval run --runnable`` wins)")
    evaluators: list[Any] = Field(
        default_factory=list, description="evaluators applied to every case", json_schema_extra=_ENTRY_SCHEMA
    )
    timeout: float | None = Field(default=300.0, gt=0, description="seconds one run of one case may take")
    cases: list[CaseFile] = Field(description="the cases")


# ------------------------------------------------------------------------------ loaded form


class EvaluatorRef(_Model):
    """An evaluator as a case uses it: its name and its arguments."""

    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)

    def label(self) -> str:
        return self.name if not self.arguments else f"{self.name}({_brief(self.arguments)})"


class Case(_Model):
    """A case ready to run: the dataset's evaluators merged in, its source recorded."""

    name: str
    description: str = ""
    input: Any = None
    expected: Any = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    evaluators: list[EvaluatorRef] = Field(default_factory=list)
    fixtures: Fixtures = Field(default_factory=Fixtures)
    expected_error: str | None = None
    source: str = Field(default="", description="file the case came from")


class Dataset(_Model):
    name: str
    path: str = ""
    runnable: str | None = None
    timeout: float | None = 300.0
    cases: list[Case]

    def case(self, name: str) -> Case:
        for case in self.cases:
            if case.name == name:
                return case
        raise CaseError(f"dataset {self.name!r} has no case {name!r}")


def parse_evaluator(entry: Any, where: str) -> EvaluatorRef:
    """``"name"`` or ``{"name": {arguments}}`` (or ``{"name": null}``) as an :class:`EvaluatorRef`."""
    if isinstance(entry, str) and entry:
        return EvaluatorRef(name=entry)
    if isinstance(entry, dict) and len(entry) == 1:
        ((name, arguments),) = entry.items()
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            raise CaseError(
                f"{where}: evaluator {name!r} takes its arguments as a mapping ({name}: {{key: value}}), "
                f"got {type(arguments).__name__} {arguments!r}"
            )
        return EvaluatorRef(name=str(name), arguments=arguments)
    raise CaseError(
        f"{where}: an evaluator is a name (- equals) or one name with its arguments (- equals: {{path: x}}), "
        f"got {entry!r}"
    )


def _problems(err: ValidationError, prefix: str, cases: list[Any] | None) -> str:
    lines = []
    for problem in err.errors():
        loc = list(problem["loc"])
        where = prefix
        if cases is not None and len(loc) >= 2 and loc[0] == "cases" and isinstance(loc[1], int):
            index = loc[1]
            raw = cases[index] if index < len(cases) else None
            label = raw.get("name") if isinstance(raw, dict) and raw.get("name") else f"#{index + 1}"
            where = f"{prefix}: case {label!r}"
            loc = loc[2:]
        field = ".".join(str(p) for p in loc) or "(the case)"
        lines.append(f"{where}: {field}: {problem['msg']}")
    return "; ".join(lines)


def _read_yaml(path: Path) -> Any:
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise CaseError(f"{path}: cannot be read: {err}") from err
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise CaseError(f"{path}: not valid YAML: {err}") from err


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
        if not files:
            raise CaseError(f"{path}: a dataset folder holds case files (*.yaml, *.yml); found none")
        return files
    if not path.exists():
        raise CaseError(f"{path}: no such case file or folder")
    return [path]


def _from_data(data: Any, source: str) -> tuple[DatasetFile, bool]:
    if not isinstance(data, dict):
        raise CaseError(
            f"{source}: a case file is a mapping (name, input, expected, evaluators) or a dataset "
            f"(a mapping with cases: [...]); got {type(data).__name__}"
        )
    if "cases" in data:
        raw_cases = data.get("cases") if isinstance(data.get("cases"), list) else None
        try:
            return DatasetFile.model_validate(data), True
        except ValidationError as err:
            raise CaseError(_problems(err, source, raw_cases)) from None
    try:
        case = CaseFile.model_validate(data)
    except ValidationError as err:
        label = f"case {data['name']!r}" if isinstance(data.get("name"), str) else "case"
        raise CaseError(_problems(err, f"{source}: {label}", None)) from None
    return DatasetFile(cases=[case]), False


def load_dataset(path: str | Path, *, name: str | None = None) -> Dataset:
    """Read a case file, a dataset file, or a folder of them.

    :raises CaseError: naming the file, the case and the field of the first problems found.
    """
    root = Path(path)
    cases: list[Case] = []
    runnable: str | None = None
    timeout: float | None = 300.0
    dataset_name = name
    seen: dict[str, str] = {}
    for file in _files(root):
        parsed, is_dataset = _from_data(_read_yaml(file), str(file))
        if is_dataset:
            runnable = parsed.runnable or runnable
            timeout = parsed.timeout
            if dataset_name is None and parsed.name and not root.is_dir():
                dataset_name = parsed.name
        defaults = [parse_evaluator(e, f"{file}: evaluators") for e in parsed.evaluators]
        for raw in parsed.cases:
            where = f"{file}: case {raw.name!r}"
            if raw.name in seen:
                raise CaseError(f"{where}: the name is taken by a case in {seen[raw.name]}; names must be unique")
            seen[raw.name] = str(file)
            own = [parse_evaluator(e, f"{where}: evaluators") for e in raw.evaluators]
            evaluators = [*defaults, *own]
            if not evaluators and raw.expected is not None:
                evaluators = [EvaluatorRef(name="equals")]
            if raw.expected_error is not None:
                try:
                    re.compile(raw.expected_error)
                except re.error as err:
                    raise CaseError(f"{where}: expected_error is not a valid regular expression: {err}") from None
            elif not evaluators:
                raise CaseError(
                    f"{where}: nothing judges this case: give it evaluators (- equals, - schema, ...), "
                    "an expected output (then it is compared with equals), or an expected_error"
                )
            cases.append(
                Case(
                    name=raw.name,
                    description=raw.description,
                    input=raw.input,
                    expected=raw.expected,
                    metadata=raw.metadata,
                    evaluators=evaluators,
                    fixtures=raw.fixtures or Fixtures(),
                    expected_error=raw.expected_error,
                    source=str(file),
                )
            )
    if not cases:
        raise CaseError(f"{root}: the dataset has no cases")
    return Dataset(name=dataset_name or root.stem, path=str(root), runnable=runnable, timeout=timeout, cases=cases)


def dataset_of(cases: Iterable[Case], name: str = "cases") -> Dataset:
    """A dataset built in code (tests, a pytest fixture)."""
    return Dataset(name=name, cases=list(cases))


def case_schema() -> dict[str, Any]:
    """The JSON schema of a case file (one case, or a dataset of cases), for editor completion."""
    schema = TypeAdapter(DatasetFile | CaseFile).json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Keel eval case file"
    schema["description"] = "One case (name, input, expected, evaluators) or a dataset (cases: [...])."
    return schema


def shipped_schema() -> dict[str, Any]:
    result: dict[str, Any] = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    return result


def _brief(arguments: dict[str, Any], limit: int = 40) -> str:
    text = ", ".join(f"{k}={v!r}" for k, v in arguments.items())
    return text if len(text) <= limit else text[: limit - 1] + "…"
