"""A small JSON path: ``$.items[0].title``, ``items[*].price``, ``['odd key']``; ``$`` or ``""`` is the root.

Enough for eval rules; no filters or recursive descent (an unknown form is an error, not a guess).
"""

from __future__ import annotations

import re
from typing import Any

from keel_eval.errors import EvalError

__all__ = ["parse_path", "resolve", "to_json"]

_TOKEN = re.compile(r"""\.?([A-Za-z_][\w-]*)|\[(\d+|-\d+|\*)\]|\[(?:'([^']*)'|"([^"]*)")\]|\.(\*)""")

Step = str | int | None  # None = every element or value


def parse_path(path: str) -> tuple[list[Step], bool]:
    """The steps of a path, and whether it has a wildcard (then it resolves to a list)."""
    text = path.strip()
    if text.startswith("$"):
        text = text[1:]
    steps: list[Step] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise EvalError(
                f"JSON path {path!r}: cannot read {text[pos:]!r}; write keys as a.b, indexes as [0], "
                "every element as [*], odd keys as ['key']"
            )
        name, index, single, double, star = match.groups()
        if name is not None:
            steps.append(name)
        elif index is not None:
            steps.append(None if index == "*" else int(index))
        elif star is not None:
            steps.append(None)
        else:
            steps.append(single if single is not None else double)
        pos = match.end()
    return steps, any(step is None for step in steps)


def resolve(data: Any, path: str | None) -> tuple[bool, Any]:
    """``(found, value)``: the value at ``path`` (a list of every match when it has a wildcard)."""
    if not path:
        return True, data
    steps, wild = parse_path(path)
    values = [data]
    for step in steps:
        following: list[Any] = []
        for value in values:
            if step is None:
                if isinstance(value, list):
                    following.extend(value)
                elif isinstance(value, dict):
                    following.extend(value.values())
            elif isinstance(step, int):
                if isinstance(value, list) and -len(value) <= step < len(value):
                    following.append(value[step])
            elif isinstance(value, dict) and step in value:
                following.append(value[step])
        values = following
    if wild:
        return True, values
    return (True, values[0]) if values else (False, None)


def to_json(value: Any) -> Any:
    """Plain JSON data from an output: pydantic models dumped, tuples as lists."""
    from pydantic_core import to_jsonable_python

    return to_jsonable_python(value, fallback=str)
