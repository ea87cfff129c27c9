"""Validating a plugin's options, with one error style everywhere.

A driver receives its options as a plain dict (a stack's ``[store]`` table, an environment's
settings). It declares them as a pydantic model and calls :func:`parse_options`: every problem is
named on one line with where it came from and which keys are valid, so a typo in ``keel.toml``
reads the same whichever plugin it reached::

    class SqliteOptions(BaseModel):
        model_config = ConfigDict(extra="forbid")
        path: str = ".keel/keel.db"

    options = keel.parse_options(SqliteOptions, {"pathh": "x.db"}, where="store 'sqlite'", error=keel.StoreError)
    # keel.StoreError: store 'sqlite': invalid options (pathh: Extra inputs are not permitted).
    #                  Valid options: path
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from keel.errors import KeelError, StackError

M = TypeVar("M", bound=BaseModel)

__all__ = ["parse_options", "validation_problems"]


def validation_problems(err: ValidationError, *, root: str = "(options)") -> str:
    """``err``'s problems on one line: ``a.b: message; c: message``; ``root`` names a problem with
    the whole value (an empty location)."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or root}: {e['msg']}" for e in err.errors())


def parse_options(
    model: type[M], options: dict[str, Any] | None, *, where: str, error: type[KeelError] = StackError
) -> M:
    """Validate ``options`` against ``model``, or raise ``error`` naming ``where``, every problem and
    the valid keys (the model's fields, by their alias where one is set)."""
    try:
        return model.model_validate(options or {})
    except ValidationError as err:
        keys = ", ".join(f.alias or name for name, f in model.model_fields.items())
        raise error(f"{where}: invalid options ({validation_problems(err)}). Valid options: {keys}") from err
