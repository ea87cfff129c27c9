"""Plugin discovery and the registry of what plugins registered.

Discovery goes through stevedore over the entry-point group ``keel``: only the names enabled are
imported, a failure is reported per plugin (entry point, distribution, cause), and each loaded
module is registered with one pluggy ``PluginManager("keel")``. Switches, read from the
environment unless given explicitly:

``KEEL_LOAD_PLUGINS=a,b``
    load only these entry points (empty: none).
``KEEL_DISABLE_PLUGINS=a,b``
    never load these (pluggy ``set_blocked``).
``KEEL_STRICT_PLUGINS=1``
    a plugin that fails to load is an error instead of a warning.
``KEEL_TRACE_PLUGINS=1``
    print every hook call (pluggy ``add_hookcall_monitoring``).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import logging
import os
import sys
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Generic, TypeVar

import pluggy

from keel import hookspecs
from keel.errors import PluginConflictError, PluginLoadError
from keel.types import (
    ActionCall,
    ActionContext,
    ActionSpec,
    ChannelSpec,
    EnvironmentSpec,
    EvaluatorSpec,
    ModelSpec,
    PolicyDecision,
    StoreSpec,
)

__all__ = ["ENTRY_POINT_GROUP", "PluginHost", "PluginInfo", "Registered", "env_list"]

ENTRY_POINT_GROUP = "keel"
BUILTIN_PLUGIN = "keel.builtins"
log = logging.getLogger("keel.plugins")

S = TypeVar("S", ModelSpec, StoreSpec, EnvironmentSpec, ChannelSpec, EvaluatorSpec, ActionSpec)

#: registration hook → the family name used in messages and listings
FAMILIES: dict[str, str] = {
    "keel_models": "model",
    "keel_stores": "store",
    "keel_environments": "environment",
    "keel_channels": "channel",
    "keel_evaluators": "evaluator",
    "keel_actions": "action",
}


def env_list(name: str) -> list[str] | None:
    """``a, b`` → ``["a", "b"]``; unset → ``None``; set but empty → ``[]``."""
    raw = os.environ.get(name)
    if raw is None:
        return None
    return [part.strip() for part in raw.split(",") if part.strip()]


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


@dataclass
class PluginInfo:
    """One plugin as ``keel plugins`` shows it."""

    name: str
    status: str  # loaded | failed | disabled | not-selected | builtin | registered
    target: str = ""
    distribution: str = ""
    version: str = ""
    hooks: list[str] = field(default_factory=list)
    registered: dict[str, list[str]] = field(default_factory=dict)
    error: str = ""

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
        }


@dataclass(frozen=True)
class Registered(Generic[S]):
    """A spec and the plugin that registered it."""

    spec: S
    plugin: str


def _distribution(ep: importlib.metadata.EntryPoint) -> tuple[str, str]:
    """(distribution name, version) of an entry point; stevedore's cached entry points lack it."""
    return _distribution_index().get((ep.name, ep.value), ("unknown", ""))


@functools.cache
def _distribution_index() -> dict[tuple[str, str], tuple[str, str]]:
    index = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.dist is not None:
            index[(ep.name, ep.value)] = (ep.dist.metadata["Name"], ep.dist.version)
    return index


class PluginHost:
    """One pluggy manager plus the kernel's policy on top of it (duplicates, load errors, listing).

    Build it with :meth:`discover` for an application, or empty (``PluginHost()``) in tests and
    register exactly the plugins you mean: the kernel's built-ins are always registered.
    """

    def __init__(self, *, builtins: bool = True, trace: bool | None = None):
        self.pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
        self.pm.add_hookspecs(hookspecs)
        # historic: every plugin that registers from now on adds its own hookspecs at once
        self.pm.hook.keel_addhooks.call_historic(kwargs={"pluginmanager": self.pm})
        self._infos: dict[str, PluginInfo] = {}
        self._cache: dict[str, Any] = {}
        if builtins:
            from keel import builtins as builtin_module

            info = self.register(builtin_module, name=BUILTIN_PLUGIN, status="builtin", distribution="keel-kernel")
            with contextlib.suppress(importlib.metadata.PackageNotFoundError):
                info.version = importlib.metadata.version("keel-kernel")
        if trace if trace is not None else _env_flag("KEEL_TRACE_PLUGINS"):
            self.pm.trace.root.setwriter(lambda message: sys.stderr.write(message))
            self.pm.enable_tracing()

    # ------------------------------------------------------------------------------ loading

    @classmethod
    def discover(
        cls,
        *,
        load: Iterable[str] | None = None,
        disable: Iterable[str] | None = None,
        strict: bool | None = None,
        trace: bool | None = None,
    ) -> PluginHost:
        """A host with the built-ins plus the installed plugins the switches select.

        :param load: only these entry-point names (default ``KEEL_LOAD_PLUGINS``; ``None`` = all).
        :param disable: never these (default ``KEEL_DISABLE_PLUGINS``).
        :param strict: raise :class:`PluginLoadError` on the first failure (default ``KEEL_STRICT_PLUGINS``).
        """
        host = cls(trace=trace)
        host.load_entry_points(load=load, disable=disable, strict=strict)
        return host

    def load_entry_points(
        self,
        *,
        load: Iterable[str] | None = None,
        disable: Iterable[str] | None = None,
        strict: bool | None = None,
    ) -> list[PluginInfo]:
        from stevedore import NamedExtensionManager

        load = list(load) if load is not None else env_list("KEEL_LOAD_PLUGINS")
        blocked = set(disable if disable is not None else env_list("KEEL_DISABLE_PLUGINS") or [])
        strict = strict if strict is not None else _env_flag("KEEL_STRICT_PLUGINS")
        failures: list[PluginLoadError] = []

        def on_failure(_manager: object, ep: importlib.metadata.EntryPoint, err: BaseException) -> None:
            dist, version = _distribution(ep)
            error = PluginLoadError(ep.name, ep.value, dist, err)
            failures.append(error)
            self._infos[ep.name] = PluginInfo(
                ep.name, "failed", target=ep.value, distribution=dist, version=version, error=str(error)
            )
            if not strict:
                warnings.warn(str(error), RuntimeWarning, stacklevel=2)

        all_eps = list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))  # lists, imports nothing
        names = [ep.name for ep in all_eps]
        selected = [n for n in names if (load is None or n in load) and n not in blocked]
        for ep in all_eps:
            if ep.name not in selected:
                status = "disabled" if ep.name in blocked else "not-selected"
                dist, version = _distribution(ep)
                self._infos.setdefault(
                    ep.name, PluginInfo(ep.name, status, target=ep.value, distribution=dist, version=version)
                )
        for name in blocked:
            self.pm.set_blocked(name)
        if not selected:
            return []
        manager: NamedExtensionManager[Any] = NamedExtensionManager(
            ENTRY_POINT_GROUP,
            names=selected,
            name_order=True,
            on_load_failure_callback=on_failure,
            on_missing_entrypoints_callback=None,
        )
        if strict and failures:
            raise failures[0]
        loaded = []
        by_name = {}
        for ext in manager:
            try:
                info = self.register(
                    ext.plugin, name=ext.name, status="loaded", target=ext.entry_point.value, check=False
                )
            except Exception as err:  # a bad hookimpl signature, say
                on_failure(manager, ext.entry_point, err)
                if strict:
                    raise failures[-1] from err
                continue
            loaded.append(info)
            by_name[ext.name] = ext
        # only now, with every plugin's own hookspecs added (keel_addhooks), can unknown hooks be told
        for name, unknown in self._unknown_hooks().items():
            if name in by_name:
                self.pm.unregister(name=name)
                self._cache.clear()
                loaded = [info for info in loaded if info.name != name]
                on_failure(manager, by_name[name].entry_point, unknown)
                if strict:
                    raise failures[-1] from unknown
        return loaded

    def verify(self) -> None:
        """Raise :class:`pluggy.PluginValidationError` for the first implementation of a hook that no
        plugin specifies (a misspelled hook, or a hook of a plugin that is not installed); for
        plugins registered with ``check=False``."""
        for err in self._unknown_hooks().values():
            raise err

    def _unknown_hooks(self) -> dict[str, pluggy.PluginValidationError]:
        """Plugin name -> the error for its first non-optional implementation without a spec."""
        found: dict[str, pluggy.PluginValidationError] = {}
        for name, caller in vars(self.pm.hook).items():
            if name.startswith("_") or caller.has_spec():
                continue
            for impl in caller.get_hookimpls():
                if not impl.optionalhook and impl.plugin_name not in found:
                    found[impl.plugin_name] = pluggy.PluginValidationError(
                        impl.plugin,
                        f"unknown hook {name!r} in plugin {impl.plugin_name!r}: no installed plugin specifies "
                        "it (a misspelled name, or the plugin that adds it with keel_addhooks is missing)",
                    )
        return found

    def register(
        self,
        plugin: ModuleType | object,
        name: str | None = None,
        *,
        status: str = "registered",
        target: str = "",
        distribution: str = "",
        check: bool = True,
    ) -> PluginInfo:
        """Register a module or object holding ``@keel.hookimpl`` functions; misspelled hooks fail here.

        ``check=False`` defers that check to :meth:`verify`, for a batch of plugins where one may
        implement a hook that a later one adds (``keel_addhooks``).
        """
        name = name or getattr(plugin, "__name__", None) or repr(plugin)
        registered_name = self.pm.register(plugin, name=name)
        if registered_name is None:  # blocked
            info = PluginInfo(name, "disabled", target=target)
            self._infos[name] = info
            return info
        unknown = self._unknown_hooks().get(registered_name) if check else None
        if unknown is not None:
            self.pm.unregister(plugin)
            raise unknown
        self._cache.clear()
        info = PluginInfo(name, status, target=target, distribution=distribution)
        if status == "loaded" and target:
            ep = importlib.metadata.EntryPoint(name=name, value=target, group=ENTRY_POINT_GROUP)
            info.distribution, info.version = _distribution(ep)
        self._infos[name] = info
        return info

    def unregister(self, name: str) -> None:
        self.pm.unregister(name=name)
        self._infos.pop(name, None)
        self._cache.clear()

    # ---------------------------------------------------------------------------- collecting

    def _collect(self, hook_name: str) -> dict[str, Registered[Any]]:
        """Call each implementation of a registration hook separately, so a duplicate names both plugins."""
        if hook_name in self._cache:
            return self._cache[hook_name]  # type: ignore[no-any-return]
        family = FAMILIES[hook_name]
        found: dict[str, Registered[Any]] = {}
        caller = getattr(self.pm.hook, hook_name)
        # get_hookimpls() is in registration order: the built-ins first, then plugins as loaded
        for impl in caller.get_hookimpls():
            result = impl.function()
            for spec in result or ():
                existing = found.get(spec.name)
                if existing is not None:
                    raise PluginConflictError(family, spec.name, existing.plugin, impl.plugin_name)
                found[spec.name] = Registered(spec, impl.plugin_name)
        self._cache[hook_name] = found
        return found

    def models(self) -> dict[str, Registered[ModelSpec]]:
        return self._collect("keel_models")

    def stores(self) -> dict[str, Registered[StoreSpec]]:
        return self._collect("keel_stores")

    def environments(self) -> dict[str, Registered[EnvironmentSpec]]:
        return self._collect("keel_environments")

    def channels(self) -> dict[str, Registered[ChannelSpec]]:
        return self._collect("keel_channels")

    def evaluators(self) -> dict[str, Registered[EvaluatorSpec]]:
        return self._collect("keel_evaluators")

    def actions(self) -> dict[str, Registered[ActionSpec]]:
        return self._collect("keel_actions")

    def family(self, family: str) -> Mapping[str, Registered[Any]]:
        """Registrations of one family by its singular name (``"model"``, ``"store"``, ...)."""
        for hook_name, name in FAMILIES.items():
            if name == family:
                return self._collect(hook_name)
        raise KeyError(family)

    # ------------------------------------------------------------------------------- runtime

    def observers(self, runtime: Any = None) -> list[tuple[str, Any]]:
        """(plugin name, function) for each ``keel_on_runtime_event`` implementation, bound to the
        runtime whose events it will observe."""
        impls = self.pm.hook.keel_on_runtime_event.get_hookimpls()
        return [(impl.plugin_name, _bind_event(impl.function, impl.argnames, runtime)) for impl in impls]

    def check_action(self, call: ActionCall, context: ActionContext) -> PolicyDecision:
        """Combine every policy's answer: deny > approve > allow; none → the default policy."""
        decisions = [d for d in self.pm.hook.keel_check_action(call=call, context=context) if d is not None]
        for verdict in ("deny", "approve", "allow"):
            for decision in decisions:
                if decision.verdict == verdict:
                    return _fail_closed(decision, context)
        default = PolicyDecision(verdict="allow", reason="default policy", policy="keel.default")
        if call.risk == "irreversible":
            default = PolicyDecision(
                verdict="approve", reason="irreversible actions need approval", policy="keel.default"
            )
        return _fail_closed(default, context)

    def add_commands(self, cli: Any) -> None:
        self.pm.hook.keel_commands(cli=cli)

    # ------------------------------------------------------------------------------- listing

    def plugin_infos(self) -> list[PluginInfo]:
        """Every plugin known to this host, with what it registered."""
        registered: dict[str, dict[str, list[str]]] = {}
        for hook_name, family in FAMILIES.items():
            for name, reg in self._collect(hook_name).items():
                registered.setdefault(reg.plugin, {}).setdefault(family, []).append(name)
        out = []
        for name, info in self._infos.items():
            plugin = self.pm.get_plugin(name)
            if plugin is not None:
                info.hooks = sorted(caller.name for caller in self.pm.get_hookcallers(plugin) or [])
            info.registered = registered.get(name, {})
            out.append(info)
        return out


def _bind_event(function: Any, argnames: tuple[str, ...], runtime: Any) -> Any:
    if "runtime" in argnames:

        def observer_with_runtime(event: Any) -> Any:
            return function(event=event, runtime=runtime)

        return observer_with_runtime

    def observer(event: Any) -> Any:
        return function(event=event)

    return observer


def _fail_closed(decision: PolicyDecision, context: ActionContext) -> PolicyDecision:
    if decision.verdict == "approve" and not context.approver_available:
        return PolicyDecision(
            verdict="deny",
            reason=f"{decision.reason}; no approver is configured, so the call is denied (fail closed)",
            policy=decision.policy,
        )
    return decision
