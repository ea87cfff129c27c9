"""The registration families: which hook registers what, the descriptor type each must give, and
the records the plugin host keeps (:class:`Registered`, :class:`PluginInfo`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from keel.types import ActionSpec, ChannelSpec, EnvironmentSpec, EvaluatorSpec, ModelSpec, SlotSpec, StoreSpec

__all__ = ["FAMILIES", "SPEC_TYPES", "PluginInfo", "Registered", "check_specs"]

S = TypeVar("S", ModelSpec, StoreSpec, EnvironmentSpec, ChannelSpec, EvaluatorSpec, ActionSpec, SlotSpec)

#: registration hook → the family name used in messages and listings
FAMILIES: dict[str, str] = {
    "keel_models": "model",
    "keel_stores": "store",
    "keel_environments": "environment",
    "keel_channels": "channel",
    "keel_evaluators": "evaluator",
    "keel_actions": "action",
    "keel_stack_slots": "slot",
}
#: registration hook → the descriptor type each item must be
SPEC_TYPES: dict[str, type[BaseModel]] = {
    "keel_models": ModelSpec,
    "keel_stores": StoreSpec,
    "keel_environments": EnvironmentSpec,
    "keel_channels": ChannelSpec,
    "keel_evaluators": EvaluatorSpec,
    "keel_actions": ActionSpec,
    "keel_stack_slots": SlotSpec,
}


@dataclass
class PluginInfo:
    """One plugin as ``keel plugins`` shows it."""

    name: str
    status: str  # loaded | failed | conflict | disabled | not-selected | builtin | registered
    target: str = ""
    distribution: str = ""
    version: str = ""
    hooks: list[str] = field(default_factory=list)
    registered: dict[str, list[str]] = field(default_factory=dict)
    error: str = ""
    #: conflicts this plugin is part of (a name another plugin registers too)
    problems: list[str] = field(default_factory=list)
    #: the keel-kernel range its distribution declares ('' when it declares none)
    kernel_range: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "target": self.target,
            "distribution": self.distribution,
            "version": self.version,
            "hooks": self.hooks,
            "registered": self.registered,
            "error": self.error,
            "problems": self.problems,
            "kernel_range": self.kernel_range,
        }


@dataclass(frozen=True)
class Registered(Generic[S]):
    """A spec and the plugin that registered it."""

    spec: S
    plugin: str


def check_specs(hook_name: str, results: list[Any]) -> list[Any]:
    """The descriptors one plugin's registration hook gave (pluggy's result list holds its one
    answer, or nothing for ``None``); the wrong shape is a ``TypeError`` saying the right one."""
    expected = SPEC_TYPES[hook_name]
    shape = (
        f"{hook_name}() must return a list of keel.{expected.__name__} or yield each one "
        f"(`yield keel.{expected.__name__}(...)`)"
    )
    if not results or results[0] is None:
        return []
    result = results[0]
    if isinstance(result, BaseModel):
        raise TypeError(f"{hook_name}() returned one {type(result).__name__}, not a list of them; {shape}")
    if isinstance(result, (str, bytes, Mapping)) or not isinstance(result, Iterable):
        raise TypeError(f"{hook_name}() returned {_describe(result)}; {shape}")
    specs = list(result)  # a generator runs here: an error inside it propagates as itself
    for item in specs:
        if not isinstance(item, expected):
            raise TypeError(f"{hook_name}() gave {_describe(item)} among its results; {shape}")
    return specs


def _describe(value: Any) -> str:
    text = repr(value)
    return f"a {type(value).__name__} ({text if len(text) <= 60 else text[:57] + '...'})"
