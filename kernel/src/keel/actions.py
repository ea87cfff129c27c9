"""``@keel.action``: turn a typed function into an :class:`keel.ActionSpec`."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from typing import Any, get_type_hints, overload

import anyio
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from keel.errors import ActionError, ActionInputError
from keel.types import ActionSpec, Risk

__all__ = ["action", "invoke_action"]


@overload
def action(function: Callable[..., Any], /) -> ActionSpec: ...


@overload
def action(
    *,
    name: str | None = None,
    description: str | None = None,
    risk: Risk = "read",
    tags: Iterable[str] = (),
    visible_to: Iterable[str] | None = None,
    timeout: float | None = 30.0,
    redact: Iterable[str] = (),
    idempotency_key: Callable[[dict[str, Any]], str] | None = None,
) -> Callable[[Callable[..., Any]], ActionSpec]: ...


def action(
    function: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    risk: Risk = "read",
    tags: Iterable[str] = (),
    visible_to: Iterable[str] | None = None,
    timeout: float | None = 30.0,
    redact: Iterable[str] = (),
    idempotency_key: Callable[[dict[str, Any]], str] | None = None,
) -> ActionSpec | Callable[[Callable[..., Any]], ActionSpec]:
    """Describe a function as an action. The schema comes from its annotations, the description
    from its docstring.

    Example::

        @keel.action(risk="write", tags=["crm"])
        async def add_note(customer_id: int, text: str) -> str:
            "Attach a note to a customer record."
            ...
    """

    def build(fn: Callable[..., Any]) -> ActionSpec:
        model = _input_model(fn)
        schema = model.model_json_schema()
        schema.pop("title", None)
        return ActionSpec(
            name=name or fn.__name__,
            description=description if description is not None else inspect.cleandoc(fn.__doc__ or ""),
            parameters=schema,
            handler=fn,
            risk=risk,
            tags=frozenset(tags),
            visible_to=frozenset(visible_to) if visible_to is not None else None,
            timeout=timeout,
            redact=frozenset(redact),
            input_model=model,
            idempotency_key=idempotency_key,
        )

    return build(function) if function is not None else build


def _input_model(fn: Callable[..., Any]) -> type[BaseModel]:
    signature = inspect.signature(fn)
    hints = get_type_hints(fn)
    fields: dict[str, Any] = {}
    for param in signature.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ActionError(f"action {fn.__name__}: *args/**kwargs cannot be described by a schema")
        annotation = hints.get(param.name, Any)
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (annotation, default)
    return create_model(  # type: ignore[call-overload,no-any-return]
        f"{fn.__name__}_arguments", __config__=ConfigDict(extra="forbid"), **fields
    )


async def invoke_action(spec: ActionSpec, arguments: dict[str, Any]) -> Any:
    """Validate arguments against the spec and call its handler (sync handlers in a worker thread),
    within its timeout. Policy and audit are the caller's business."""
    kwargs = arguments
    if spec.input_model is not None:
        try:
            parsed = spec.input_model.model_validate(arguments)
        except ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(arguments)'}: {e['msg']}" for e in err.errors()
            )
            raise ActionInputError(
                f"action {spec.name!r} got invalid arguments: {problems}. Expected schema: {spec.parameters}"
            ) from err
        kwargs = {k: getattr(parsed, k) for k in type(parsed).model_fields}
    with anyio.fail_after(spec.timeout) if spec.timeout else nullcontext():
        if inspect.iscoroutinefunction(spec.handler):
            return await spec.handler(**kwargs)
        return await anyio.to_thread.run_sync(lambda: spec.handler(**kwargs))
