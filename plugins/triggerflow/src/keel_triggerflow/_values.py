"""Values as the history and the state keep them: JSON-compatible data, pydantic outputs revived."""

from __future__ import annotations

import sys
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticSerializationError, to_jsonable_python

BLOB_THRESHOLD = 64 * 1024  # outputs larger than this go to a blob; the record keeps the hash

_PLAIN = (str, int, float, bool, type(None))


def jsonable(value: Any) -> Any:
    """JSON-compatible data for history records and state (pydantic models, nested, become dicts)."""
    if isinstance(value, _PLAIN):
        return value
    try:
        return to_jsonable_python(value)
    except PydanticSerializationError:
        return value  # the store reports what cannot be stored, with its own clear message


def model_ref(value: Any) -> str:
    """``module:qualname`` of a pydantic output, recorded so that replay gives back the model."""
    return f"{type(value).__module__}:{type(value).__qualname__}"


def revive(ref: str, data: Any) -> Any:
    """Rebuild a recorded pydantic output; a class that cannot be found leaves the data as is."""
    module_name, _, qualname = ref.partition(":")
    target: Any = sys.modules.get(module_name)
    for part in qualname.split("."):
        target = getattr(target, part, None)
    if isinstance(target, type) and issubclass(target, BaseModel):
        return target.model_validate(data)
    return data
