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

import difflib
import importlib.metadata
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from keel.budgets import BudgetsConfig
from keel.calls import CallsConfig
from keel.errors import DriverNotFoundError, KeelError, StackError
from keel.options import parse_options, validation_problems
from keel.types import ModelConfig

if TYPE_CHECKING:
    from keel.plugins import PluginHost, Registered

__all__ = [
    "STACKS_GROUP",
    "SlotChoice",
    "Stack",
    "StackConfig",
    "load_named",
    "load_stack",
    "named_stacks",
    "stack_entry_points",
]

STACKS_GROUP = "keel.stacks"

#: stack keys a plugin owns and declares with ``keel_stack_slots`` (the kernel only parses them)
PLUGIN_SLOTS = ("runner",)
#: the embedded defaults: what a fresh install runs on, with no stack file
DEFAULTS: dict[str, str] = {"model": "local", "store": "sqlite", "runner": "local"}
#: a default that is not installed falls back to a kernel built-in, and says so
FALLBACKS: dict[str, tuple[str, str]] = {
    "store": (
        "memory",
        "keel-store-sqlite is not installed, so the in-memory store is used: nothing survives a restart",
    ),
}
#: the plugin (entry point, distribution) that provides an embedded default
DEFAULT_PLUGINS: dict[str, tuple[str, str]] = {"store": ("sqlite", "keel-store-sqlite")}
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
    actions: list[str] = Field(
        default_factory=list, description="'module:attribute' of actions (@keel.action) the application adds"
    )
    approver: str | None = Field(
        default=None,
        description="'module:attribute' of the approver asked when policy says an action needs approval "
        "(an Approver, a class of one, or a function); a runtime given one in code uses that instead",
    )
    settings: dict[str, dict[str, Any]] = Field(default_factory=dict, description="per-plugin settings tables")
    budgets: BudgetsConfig | None = Field(default=None, description="[budgets]: limits per execution, runnable, tenant")
    calls: CallsConfig | None = Field(default=None, description="[calls]: timeouts and retries per runnable, action")


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

    def with_slot(self, slot: str, name: str, source: str) -> Stack:
        """This stack with ``slot`` set to ``name`` in a layer on top, ``source`` saying who set it
        (``keel replay`` runs flows on the local runner, whatever runner the stack names)."""
        return Stack([*self.layers, _Layer(source, StackConfig.model_validate({slot: name}))])

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

        ``source`` is where the slot chose the alias (``"argument"`` for an explicit alias); where
        the alias itself is defined is :meth:`alias_source`. A name that is not an alias in
        ``[models]`` is taken as a provider name with no settings.
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
            return alias, config, source
        return alias, ModelConfig(provider=alias), source

    def alias_source(self, alias: str) -> str | None:
        """Where ``[models.<alias>]`` is defined (the last layer that sets it), or ``None``."""
        return self.sources.get(f"models.{alias}")

    def settings(self, plugin: str) -> dict[str, Any]:
        """The ``[settings.<plugin>]`` table, or ``{}``."""
        return dict(self.config.settings.get(plugin, {}))

    # ------------------------------------------------------------------------------ resolving

    def resolve(self, slot: str, host: PluginHost) -> tuple[Registered[Any], SlotChoice]:
        """The registered driver for ``model`` or ``store``; an unknown name lists the available ones."""
        if slot == "model":
            alias, config, source = self.model_config()
            note = f"alias {alias!r}"
            defined = self.alias_source(alias)
            if defined is not None and defined != source:
                note += f" defined in {defined}"
            choice = SlotChoice("model", config.provider, config.model_dump(), source, note=note)
        else:
            choice = self.choice(slot)
        available = host.family(slot)
        if choice.name in available:
            registered = available[choice.name]
            _check_options(registered.spec, choice)
            return registered, choice
        fallback = FALLBACKS.get(slot)
        if choice.source == "embedded default" and fallback and fallback[0] in available:
            name, note = fallback
            entry_point, dist = DEFAULT_PLUGINS[slot]
            info = host.info(entry_point)
            if info is not None and info.status != "loaded":
                why = {"failed": "failed to load", "disabled": "disabled", "not-selected": "not in the plugins list"}
                note = (
                    f"{dist} is installed, but its plugin {entry_point!r} is {why.get(info.status, info.status)}, "
                    "so the in-memory store is used: nothing survives a restart"
                )
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
        report += self._check_environments(host)
        return report + self._check_plugin_slots(host)

    def _check_plugin_slots(self, host: PluginHost) -> list[dict[str, Any]]:
        """The slots plugins own (``keel_stack_slots``), each checked by its owner; a reserved key
        (``runner``) that no installed plugin declares is listed as ``unchecked``, saying so."""
        declared = host.stack_slots()
        rows = []
        for slot in sorted({*PLUGIN_SLOTS, *declared}):
            try:
                choice = self.choice(slot)
            except StackError:
                rows.append(_row(slot, "", "", None, "unset", "not set, and it has no default"))
                continue
            if slot not in declared:
                note = f"no installed plugin declares the {slot!r} slot, so nothing checks or uses it"
                rows.append(_row(slot, choice.name, choice.source, None, "unchecked", note))
                continue
            owner = declared[slot]
            try:
                provider = owner.spec.check(choice, host)
            except DriverNotFoundError as err:
                if err.source != "embedded default":
                    raise
                rows.append(_row(slot, choice.name, choice.source, None, "missing", str(err)))
                continue
            except KeelError:
                raise
            except Exception as err:  # a bug in the owner's check: shown, and not ok (fail closed)
                note = f"the check of plugin {owner.plugin!r} raised {type(err).__name__}: {err}"
                rows.append(_row(slot, choice.name, choice.source, owner.plugin, "failed", note))
                continue
            rows.append(_row(slot, choice.name, choice.source, provider or owner.plugin, "ok", choice.note))
        return rows

    def _check_environments(self, host: PluginHost) -> list[dict[str, Any]]:
        """Each ``[environments.<name>]``: its driver exists, and its options fit the model the
        driver declares (``EnvironmentSpec.options``). Nothing is started."""
        from keel.environments import MANAGER_KEYS

        rows = []
        for name, table in self.config.environments.items():
            source = self.sources.get(f"environments.{name}", "the stack")
            driver = str(table.get("driver", ""))
            available = host.environments()
            if driver not in available:
                raise DriverNotFoundError(
                    "environment driver", driver or "(none)", available, f"{source}: [environments.{name}]"
                )
            registered = available[driver]
            model = registered.spec.options
            if isinstance(model, type) and issubclass(model, BaseModel):
                options = {k: v for k, v in table.items() if k not in MANAGER_KEYS}
                parse_options(model, options, where=f"{source}: [environments.{name}] of driver {driver!r}")
            rows.append(
                {
                    "slot": f"environments.{name}",
                    "name": driver,
                    "source": source,
                    "plugin": registered.plugin,
                    "status": "ok",
                    "note": "",
                }
            )
        return rows


def _check_options(spec: Any, choice: SlotChoice) -> None:
    """Validate a slot's options against the options model its driver declares (``StoreSpec.options``),
    naming where they were set; the driver is not started."""
    model = getattr(spec, "options", None)
    if not (isinstance(model, type) and issubclass(model, BaseModel)) or choice.slot == "model":
        return
    where = f"{choice.source}: [{choice.slot}] of {choice.slot} {choice.name!r}"
    parse_options(model, dict(choice.options), where=where)


# ---------------------------------------------------------------------------------- loading


def named_stacks() -> dict[str, importlib.metadata.EntryPoint]:
    """Stacks shipped by installed packages (entry-point group ``keel.stacks``), by name; a name
    two distributions ship is left out (see :func:`stack_entry_points`)."""
    return {name: eps[0] for name, eps in stack_entry_points().items() if len(eps) == 1}


def stack_entry_points() -> dict[str, list[importlib.metadata.EntryPoint]]:
    """Every entry point of the group ``keel.stacks`` by name: more than one is a conflict."""
    found: dict[str, list[importlib.metadata.EntryPoint]] = {}
    for ep in importlib.metadata.entry_points(group=STACKS_GROUP):
        found.setdefault(ep.name, []).append(ep)
    return found


def _dist(ep: importlib.metadata.EntryPoint) -> str:
    return ep.dist.metadata["Name"] if ep.dist is not None else "unknown"


def _named_layer(name: str, where: str = "") -> StackConfig:
    """Load the named stack ``name``; ``where`` says where the name was set (for the errors)."""
    stacks = stack_entry_points()
    set_in = f" (set in {where})" if where else ""
    if name not in stacks:
        names = ", ".join(sorted(stacks)) or "none installed"
        close = difflib.get_close_matches(name, list(stacks), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise StackError(
            f"no stack named {name!r}{set_in} in the {STACKS_GROUP!r} entry-point group. Available: {names}.{hint} "
            "Install the package that ships it, or fix the name."
        )
    if len(stacks[name]) > 1:
        shipped = " and ".join(f"{ep.value!r} of distribution {_dist(ep)}" for ep in stacks[name])
        raise StackError(
            f"stack name {name!r}{set_in} is shipped twice: by {shipped}. Neither is used: uninstall one of "
            f"{', '.join(_dist(ep) for ep in stacks[name])}."
        )
    ep = stacks[name]
    return load_named(ep[0])


def load_named(ep: importlib.metadata.EntryPoint) -> StackConfig:
    """The :class:`StackConfig` a ``keel.stacks`` entry point names (a dict, a StackConfig, a
    ``.toml`` path, or a callable returning one); any failure is a :class:`StackError` naming the
    entry point and its distribution."""
    origin = f"named stack {ep.name!r} ({ep.value}, from distribution {_dist(ep)})"
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
            f"{origin} is invalid: {validation_problems(err, root='(stack)')}. A named stack is a dict of "
            "keel.toml's keys, a keel.StackConfig, a path to a .toml file, or a function returning one"
        ) from err
    except StackError as err:
        raise StackError(f"{origin}: {err}") from err
    except Exception as err:  # its module raised: the package is broken, not the stack's user
        raise StackError(
            f"{origin} could not be loaded: {type(err).__name__}: {err}. Fix or reinstall {_dist(ep)}, or pick "
            "another stack"
        ) from err


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
    base: str | None
    if name:
        base, where = name, "--stack, or the name argument"
    elif os.environ.get("KEEL_STACK"):
        base, where = os.environ["KEEL_STACK"], "KEEL_STACK"
    else:
        base = local.config.extends if local else None
        where = f"extends = ... in {local.source}" if local else ""
    seen: list[str] = []
    while base:
        if base in seen:
            raise StackError(f"named stacks extend each other in a loop: {' -> '.join([*seen, base])}")
        seen.append(base)
        config = _named_layer(base, where)
        layers.insert(0, _Layer(f"stack:{base}", config))
        base, where = config.extends, f"extends = ... in stack:{base}"
    if local is not None:
        layers.append(local)
    return Stack(layers)


def _row(slot: str, name: str, source: str, plugin: str | None, status: str, note: str) -> dict[str, Any]:
    """One row of :meth:`Stack.check`."""
    return {"slot": slot, "name": name, "source": source, "plugin": plugin, "status": status, "note": note}
