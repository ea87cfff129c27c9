"""Stacks: which named driver fills each slot, and where that choice came from.

A stack is read, lowest layer first, from:

1. the embedded defaults (``model = "local"``, ``store = "sqlite"``, ``runner = "local"``);
2. a named stack shipped by a package in the entry-point group ``keel.stacks``, chosen with
   ``--stack NAME``, ``KEEL_STACK=NAME`` or ``extends = "NAME"`` in the local file;
3. the local file: ``keel.toml``, or ``[tool.keel]`` in ``pyproject.toml`` (or ``KEEL_STACK_FILE``).

Each layer overrides single slots of the one below. Application code never names a driver: change
``store = "sqlite"`` to ``store = "postgres"`` and nothing else changes.
"""

from __future__ import annotations

import importlib.metadata
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from keel.errors import DriverNotFoundError, StackError
from keel.options import validation_problems
from keel.types import ModelConfig

if TYPE_CHECKING:
    from keel.plugins import PluginHost, Registered

__all__ = ["STACKS_GROUP", "SlotChoice", "Stack", "StackConfig", "load_stack", "named_stacks"]

STACKS_GROUP = "keel.stacks"

#: the embedded defaults: what a fresh install runs on, with no stack file
DEFAULTS: dict[str, str] = {"model": "local", "store": "sqlite", "runner": "local"}
#: a default that is not installed falls back to a kernel built-in, and says so
FALLBACKS: dict[str, tuple[str, str]] = {
    "store": (
        "memory",
        "keel-store-sqlite is not installed, so the in-memory store is used: nothing survives a restart",
    ),
}
HINTS: dict[str, str] = {
    "model": 'install keel-model-local, or name a model in keel.toml: model = "..." with a [models.<alias>] table',
    "store": 'install keel-store-sqlite, or set store = "memory" in keel.toml',
}


class DriverSlot(BaseModel):
    """A slot as a table (``[store]``, ``[runner]``): ``driver`` plus the driver's options."""

    model_config = ConfigDict(extra="allow", defer_build=True)

    driver: str


class StackConfig(BaseModel):
    """One layer of a stack, as written in TOML. Unknown keys are an error (a typo is not silence)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    extends: str | None = Field(default=None, description="name of a stack in the keel.stacks entry-point group")
    plugins: list[str] | None = Field(default=None, description="load only these plugins (entry-point names)")
    disable_plugins: list[str] = Field(default_factory=list)
    model: str | None = Field(default=None, description="a [models.<alias>] alias, or a model provider name")
    store: str | DriverSlot | None = None
    runner: str | DriverSlot | None = None
    channels: list[str] | None = None
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    environments: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="[environments.<name>] tables: driver, start, health_interval, restart, options",
    )
    runnables: list[str] = Field(default_factory=list, description="'module:attribute' of agents and flows to serve")
    settings: dict[str, dict[str, Any]] = Field(default_factory=dict, description="per-plugin settings tables")


@dataclass(frozen=True)
class SlotChoice:
    """What fills a slot, with its options and where it was chosen."""

    slot: str
    name: str
    options: Mapping[str, Any]
    source: str
    note: str = ""


@dataclass
class _Layer:
    source: str
    config: StackConfig


class Stack:
    """The layers of a stack merged, with the source of every slot."""

    def __init__(self, layers: list[_Layer] | None = None):
        self.layers = layers or []
        self.sources: dict[str, str] = {}
        merged: dict[str, Any] = {}
        for layer in self.layers:
            data = layer.config.model_dump(exclude_unset=True, exclude={"extends"})
            for key, value in data.items():
                if key in ("models", "settings", "environments"):
                    for sub, subvalue in value.items():
                        merged.setdefault(key, {})[sub] = subvalue
                        self.sources[f"{key}.{sub}"] = layer.source
                else:
                    merged[key] = value
                    self.sources[key] = layer.source
        self.config = StackConfig.model_validate(merged)

    @property
    def name(self) -> str:
        return " < ".join(layer.source for layer in self.layers) or "embedded defaults"

    # ---------------------------------------------------------------------------------- slots

    def choice(self, slot: str) -> SlotChoice:
        """The slot's chosen name and options, before checking that a plugin provides it."""
        value = getattr(self.config, slot, None)
        if value is None:
            if slot not in DEFAULTS:
                raise StackError(f"stack slot {slot!r} is not set and has no default")
            return SlotChoice(slot, DEFAULTS[slot], {}, "embedded default")
        if isinstance(value, DriverSlot):
            return SlotChoice(slot, value.driver, dict(value.model_extra or {}), self.sources[slot])
        if isinstance(value, str):
            return SlotChoice(slot, value, {}, self.sources[slot])
        raise StackError(f"stack slot {slot!r} must be a name, got {value!r}")

    def model_config(self, alias: str | None = None) -> tuple[str, ModelConfig, str]:
        """(alias, config, source) for a model alias; the stack's ``model`` slot when none is given.

        A name that is not an alias in ``[models]`` is taken as a provider name with no settings.
        """
        if alias is None:
            choice = self.choice("model")
            alias, source = choice.name, choice.source
        else:
            source = "argument"
        if alias in self.config.models:
            config = self.config.models[alias]
            if config.alias is None:  # drivers name the alias in their error messages
                config = config.model_copy(update={"alias": alias})
            return alias, config, self.sources.get(f"models.{alias}", source)
        return alias, ModelConfig(provider=alias), source

    def settings(self, plugin: str) -> dict[str, Any]:
        """The ``[settings.<plugin>]`` table, or ``{}``."""
        return dict(self.config.settings.get(plugin, {}))

    # ------------------------------------------------------------------------------ resolving

    def resolve(self, slot: str, host: PluginHost) -> tuple[Registered[Any], SlotChoice]:
        """The registered driver for ``model`` or ``store``; an unknown name lists the available ones."""
        if slot == "model":
            alias, config, source = self.model_config()
            choice = SlotChoice("model", config.provider, config.model_dump(), source, note=f"alias {alias!r}")
        else:
            choice = self.choice(slot)
        available = host.family(slot)
        if choice.name in available:
            return available[choice.name], choice
        fallback = FALLBACKS.get(slot)
        if choice.source == "embedded default" and fallback and fallback[0] in available:
            name, note = fallback
            return available[name], SlotChoice(slot, name, {}, "built-in fallback", note)
        hint = HINTS.get(slot, "") if choice.source == "embedded default" else ""
        if slot == "model" and not hint and choice.name not in self.config.models:
            hint = (
                f"use a provider name, or define the alias: [models.{choice.name}] with provider = one of the "
                "available names (and model, base_url, api_key_env as the provider needs); see docs/models.md"
            )
        raise DriverNotFoundError(slot, choice.name, available, choice.source, hint)

    def check(self, host: PluginHost) -> list[dict[str, Any]]:
        """Every slot with its resolution; raises for a slot set explicitly to an unknown driver.

        Embedded defaults that no plugin provides are reported (``status = "missing"``), not raised:
        they only fail when something uses them.
        """
        report: list[dict[str, Any]] = []
        for slot in ("model", "store"):
            try:
                registered, choice = self.resolve(slot, host)
                report.append(
                    {
                        "slot": slot,
                        "name": choice.name,
                        "source": choice.source,
                        "plugin": registered.plugin,
                        "status": "ok",
                        "note": choice.note,
                    }
                )
            except DriverNotFoundError as err:
                if err.source != "embedded default":
                    raise
                report.append(
                    {
                        "slot": slot,
                        "name": err.name,
                        "source": err.source,
                        "plugin": None,
                        "status": "missing",
                        "note": str(err),
                    }
                )
        for name in self.config.channels or []:
            channels = host.channels()
            if name not in channels:
                raise DriverNotFoundError("channel", name, channels, self.sources.get("channels", ""))
            report.append(
                {
                    "slot": "channels",
                    "name": name,
                    "source": self.sources["channels"],
                    "plugin": channels[name].plugin,
                    "status": "ok",
                    "note": "",
                }
            )
        runner = self.choice("runner")
        report.append(
            {
                "slot": "runner",
                "name": runner.name,
                "source": runner.source,
                "plugin": None,
                "status": "unchecked",
                "note": "checked by the plugin that runs flows",
            }
        )
        return report


# ---------------------------------------------------------------------------------- loading


def named_stacks() -> dict[str, importlib.metadata.EntryPoint]:
    """Stacks shipped by installed packages (entry-point group ``keel.stacks``), by name."""
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=STACKS_GROUP)}


def _named_layer(name: str) -> StackConfig:
    stacks = named_stacks()
    if name not in stacks:
        names = ", ".join(sorted(stacks)) or "none installed"
        raise StackError(
            f"no stack named {name!r} in the {STACKS_GROUP!r} entry-point group. Available: {names}. "
            "Install the package that ships it, or fix the name."
        )
    ep = stacks[name]
    try:
        obj = ep.load()
        if isinstance(obj, Callable) and not isinstance(obj, type):  # type: ignore[arg-type]
            obj = obj()
        if isinstance(obj, StackConfig):
            return obj
        if isinstance(obj, (str, Path)) and str(obj).endswith(".toml"):
            return _parse_file(Path(obj), keyed=False)
        return StackConfig.model_validate(obj)
    except ValidationError as err:
        raise StackError(
            f"named stack {name!r} ({ep.value}) is invalid: {validation_problems(err, root='(stack)')}"
        ) from err
    except (ImportError, AttributeError, OSError) as err:
        raise StackError(f"named stack {name!r} ({ep.value}) could not be loaded: {err}") from err


def _parse_file(path: Path, *, keyed: bool) -> StackConfig:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise StackError(f"{path}: not valid TOML: {err}") from err
    if keyed:
        data = data.get("tool", {}).get("keel", {})
    try:
        return StackConfig.model_validate(data)
    except ValidationError as err:
        raise StackError(
            f"{path}: {validation_problems(err, root='(stack)')}. See docs/architecture.md, 'Stacks'."
        ) from err


def _local_file(cwd: Path) -> tuple[Path, bool] | None:
    env = os.environ.get("KEEL_STACK_FILE")
    if env:
        path = Path(env)
        if not path.is_file():
            raise StackError(f"KEEL_STACK_FILE={env} does not exist")
        return path, path.name == "pyproject.toml"
    if (cwd / "keel.toml").is_file():
        return cwd / "keel.toml", False
    pyproject = cwd / "pyproject.toml"
    if pyproject.is_file() and "[tool.keel" in pyproject.read_text(encoding="utf-8"):
        return pyproject, True
    return None


def load_stack(path: str | Path | None = None, *, name: str | None = None, cwd: str | Path | None = None) -> Stack:
    """Read the stack in force: defaults < named stack < local file.

    :param path: a stack file (``keel.toml`` or a ``pyproject.toml`` with ``[tool.keel]``).
    :param name: a named stack; default ``KEEL_STACK``, else the local file's ``extends``.
    """
    layers: list[_Layer] = []
    local: _Layer | None = None
    found = (Path(path), Path(path).name == "pyproject.toml") if path else _local_file(Path(cwd or Path.cwd()))
    if found is not None:
        if not found[0].is_file():
            raise StackError(f"stack file {found[0]} does not exist")
        local = _Layer(str(found[0]), _parse_file(found[0], keyed=found[1]))
    base = name or os.environ.get("KEEL_STACK") or (local.config.extends if local else None)
    seen: list[str] = []
    while base:
        if base in seen:
            raise StackError(f"named stacks extend each other in a loop: {' -> '.join([*seen, base])}")
        seen.append(base)
        config = _named_layer(base)
        layers.insert(0, _Layer(f"stack:{base}", config))
        base = config.extends
    if local is not None:
        layers.append(local)
    return Stack(layers)
