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
    print every hook call (pluggy ``add_hookcall_monitoring``), registration hooks included.

A plugin that misbehaves never takes the others down: an entry point that fails to import, names a
class, or whose registration hook raises or returns the wrong shape is ``failed`` (entry point,
distribution, cause, the expected shape), two distributions using one entry-point name are both
``conflict`` and neither loads, and every such problem is listed by ``keel plugins``. A name in a
switch that no installed plugin has is an error (:class:`keel.UnknownPluginError`), never silence.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import logging
import os
import sys
import warnings
from collections import defaultdict
from collections.abc import Iterable, Mapping
from types import ModuleType
from typing import Any

import pluggy

from keel import hookspecs
from keel.errors import IncompatiblePluginError, KeelError, PluginConflictError, PluginLoadError, UnknownPluginError
from keel.events import BoundObserver
from keel.families import FAMILIES, PluginInfo, Registered, check_specs
from keel.types import (
    ActionCall,
    ActionContext,
    ActionSpec,
    ChannelSpec,
    EnvironmentSpec,
    EvaluatorSpec,
    ModelSpec,
    PolicyDecision,
    SlotSpec,
    StoreSpec,
)

__all__ = ["ENTRY_POINT_GROUP", "PluginHost", "PluginInfo", "Registered", "env_list"]

ENTRY_POINT_GROUP = "keel"
BUILTIN_PLUGIN = "keel.builtins"
log = logging.getLogger("keel.plugins")


def env_list(name: str) -> list[str] | None:
    """``a, b`` → ``["a", "b"]``; unset → ``None``; set but empty → ``[]``."""
    raw = os.environ.get(name)
    if raw is None:
        return None
    return [part.strip() for part in raw.split(",") if part.strip()]


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


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

    :ivar problems: every problem noticed, in order: plugins that failed, entry-point names and
        registrations that collide, unknown names in the switches. ``keel plugins`` lists them.
    """

    def __init__(self, *, builtins: bool = True, trace: bool | None = None, strict: bool | None = None):
        self.pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
        self.pm.add_hookspecs(hookspecs)
        # historic: every plugin that registers from now on adds its own hookspecs at once
        self.pm.hook.keel_addhooks.call_historic(kwargs={"pluginmanager": self.pm})
        self.strict = strict if strict is not None else _env_flag("KEEL_STRICT_PLUGINS")
        self.problems: list[KeelError] = []
        self._fatal: list[KeelError] = []
        self._infos: dict[str, PluginInfo] = {}
        self._conflicting: list[PluginInfo] = []  # two distributions, one entry-point name
        self._command_conflicts: list[PluginConflictError] = []  # two plugins, one `keel` command name
        self._entry_points: dict[str, importlib.metadata.EntryPoint] = {}
        self._ranges: dict[str, str] = {}  # plugin name -> the keel-kernel range it declares
        self._cache: dict[str, tuple[dict[str, Registered[Any]], list[Registered[Any]], list[PluginConflictError]]] = {}
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
        disable: Iterable[str] | Mapping[str, str] | None = None,
        strict: bool | None = None,
        trace: bool | None = None,
        load_source: str = "KEEL_LOAD_PLUGINS",
        tolerant: bool = False,
    ) -> PluginHost:
        """A host with the built-ins plus the installed plugins the switches select.

        :param load: only these entry-point names (default ``KEEL_LOAD_PLUGINS``; ``None`` = all).
        :param disable: never these (default ``KEEL_DISABLE_PLUGINS``); a mapping names where each
            name was set, for the error when it is not installed.
        :param strict: every problem is an error (default ``KEEL_STRICT_PLUGINS``).
        :param load_source: where ``load`` was set, for the error when a name is not installed.
        :param tolerant: raise nothing; the problems are in :attr:`problems` and
            :meth:`raise_problems` raises them later (``keel plugins`` lists them first).
        """
        host = cls(trace=trace, strict=strict)
        host.load_entry_points(load=load, disable=disable, load_source=load_source)
        if not tolerant:
            host.raise_problems()
        return host

    def raise_problems(self) -> None:
        """Raise the first problem that is an error: an unknown plugin name always, any problem
        in strict mode. Duplicate registrations raise when their family is used."""
        if self._fatal:
            raise self._fatal[0]

    def _problem(self, error: KeelError, *, fatal: bool = False) -> None:
        if any(str(p) == str(error) for p in self.problems):
            return
        self.problems.append(error)
        if fatal or self.strict:
            self._fatal.append(error)
        else:
            warnings.warn(str(error), RuntimeWarning, stacklevel=3)

    def load_entry_points(
        self,
        *,
        load: Iterable[str] | None = None,
        disable: Iterable[str] | Mapping[str, str] | None = None,
        strict: bool | None = None,
        load_source: str = "KEEL_LOAD_PLUGINS",
    ) -> list[PluginInfo]:
        """Import and register the selected entry points; problems go to :attr:`problems` (and are
        warnings, or errors for :meth:`raise_problems` in strict mode)."""
        if strict is not None:
            self.strict = strict
        load = list(load) if load is not None else env_list("KEEL_LOAD_PLUGINS")
        if disable is None:
            disable = dict.fromkeys(env_list("KEEL_DISABLE_PLUGINS") or [], "KEEL_DISABLE_PLUGINS")
        elif not isinstance(disable, Mapping):
            disable = dict.fromkeys(disable, "the disable list")
        blocked = set(disable)
        selected = self._select(load, disable, blocked, load_source)
        if not selected:
            return []
        loaded = self._import_selected(selected)
        # only now, with every plugin's own hookspecs added (keel_addhooks), can unknown hooks be told
        for name, unknown_hook in self._unknown_hooks().items():
            if name in self._entry_points:
                self._fail(name, unknown_hook)
        # call every registration hook now, so that a misbehaving one is reported here, by plugin
        for hook_name in FAMILIES:
            self._collect(hook_name)
        return [info for info in loaded if info.status == "loaded"]

    def _select(
        self, load: list[str] | None, disable: Mapping[str, str], blocked: set[str], load_source: str
    ) -> list[str]:
        """The entry points to import: listed, not disabled, not in conflict, compatible. Unknown
        names in the load or disable lists are problems; every other plugin is listed with its status."""
        all_eps = list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))  # lists, imports nothing
        by_name: dict[str, list[importlib.metadata.EntryPoint]] = defaultdict(list)
        for ep in all_eps:
            by_name[ep.name].append(ep)
        known = set(by_name)
        if load is not None and (unknown := [n for n in load if n not in known]):
            self._problem(UnknownPluginError(unknown, load_source, known), fatal=True)
        by_source: dict[str, list[str]] = defaultdict(list)
        for name, source in disable.items():
            if name not in known:
                by_source[source].append(name)
        for source, names in by_source.items():
            self._problem(UnknownPluginError(names, source, known), fatal=True)

        # two distributions, one entry-point name: pluggy keeps one plugin per name and stevedore's
        # conflict resolver assumes classes, so neither loads and both are named
        for name, eps in by_name.items():
            if len(eps) > 1:
                self._entry_point_conflict(name, eps)
        selected = [n for n in by_name if len(by_name[n]) == 1 and (load is None or n in load) and n not in blocked]
        # a plugin built for another kernel contract is reported before it is imported
        selected = [n for n in selected if self._compatible(n, by_name[n][0])]
        for name, eps in by_name.items():
            if len(eps) == 1 and name not in selected:
                status = "disabled" if name in blocked else "not-selected"
                dist, version = _distribution(eps[0])
                self._infos.setdefault(
                    name, PluginInfo(name, status, target=eps[0].value, distribution=dist, version=version)
                )
        for name in blocked:
            self.pm.set_blocked(name)
        return selected

    def _import_selected(self, selected: list[str]) -> list[PluginInfo]:
        """Import the selected entry points (stevedore) and register each; failures become problems."""
        from stevedore import NamedExtensionManager

        def on_failure(_manager: object, ep: importlib.metadata.EntryPoint, err: BaseException) -> None:
            self._fail(ep.name, err, target=ep.value, entry_point=ep)

        manager: NamedExtensionManager[Any] = NamedExtensionManager(
            ENTRY_POINT_GROUP,
            names=selected,
            name_order=True,
            on_load_failure_callback=on_failure,
            on_missing_entrypoints_callback=None,
        )
        loaded = []
        for ext in manager:
            self._entry_points[ext.name] = ext.entry_point
            try:
                info = self.register(
                    ext.plugin, name=ext.name, status="loaded", target=ext.entry_point.value, check=False
                )
            except Exception as err:  # a class instead of a module, a bad hookimpl signature...
                self._fail(ext.name, err, target=ext.entry_point.value, entry_point=ext.entry_point)
                continue
            loaded.append(info)
        return loaded

    def _compatible(self, name: str, ep: importlib.metadata.EntryPoint) -> bool:
        """Whether the plugin's distribution declares a kernel range the installed kernel is in; an
        incompatible plugin is listed as ``incompatible`` (and is an error in strict mode)."""
        from keel.compat import kernel_range

        dist, version = _distribution(ep)
        if dist == "unknown" or ep.dist is None:
            return True
        declared = kernel_range(dist, ep.dist.requires or [])
        if declared is None:
            return True
        self._ranges[name] = declared.specifier
        if declared.compatible:
            return True
        error = IncompatiblePluginError(name, ep.value, dist, version, declared.problem())
        self._infos[name] = PluginInfo(
            name,
            "incompatible",
            target=ep.value,
            distribution=dist,
            version=version,
            error=str(error),
            kernel_range=declared.specifier,
        )
        self._problem(error)
        return False

    def _entry_point_conflict(self, name: str, eps: list[importlib.metadata.EntryPoint]) -> None:
        origins = []
        for ep in eps:
            dist, version = _distribution(ep)
            origins.append(f"entry point {name!r} = {ep.value!r} of distribution {dist}")
            self._conflicting.append(PluginInfo(name, "conflict", target=ep.value, distribution=dist, version=version))
        dists = [_distribution(ep)[0] for ep in eps]
        error = PluginConflictError(
            "entry-point",
            name,
            dists[0],
            dists[1],
            origins=(origins[0], " and by ".join(origins[1:])),
            fix=f"Neither is loaded. Uninstall one of {', '.join(dists)} (one name, one plugin).",
        )
        for info in self._conflicting:
            if info.name == name:
                info.error = str(error)
        self._problem(error)

    def _fail(
        self,
        name: str,
        err: BaseException,
        *,
        target: str = "",
        entry_point: importlib.metadata.EntryPoint | None = None,
        during: str = "load",
    ) -> None:
        """Unregister plugin ``name`` if it was registered, mark it ``failed`` and report it."""
        ep = entry_point or self._entry_points.get(name)
        info = self._infos.get(name)
        target = target or (ep.value if ep is not None else (info.target if info else ""))
        dist, version = (
            _distribution(ep) if ep is not None else ((info.distribution, info.version) if info else ("", ""))
        )
        if self.pm.get_plugin(name) is not None:
            self.pm.unregister(name=name)
        self._cache.clear()
        error = PluginLoadError(name, target, dist, err, during=during)
        self._infos[name] = PluginInfo(
            name, "failed", target=target, distribution=dist, version=version, error=str(error)
        )
        self._problem(error)

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
        if isinstance(plugin, type):
            raise TypeError(
                f"{plugin.__module__}.{plugin.__qualname__} is a class; a plugin is a module or an instance. "
                f'Name the module in the entry point (name = "{plugin.__module__}"), or an instance of the class '
                f'(name = "{plugin.__module__}:plugin" with plugin = {plugin.__qualname__}())'
            )
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

    def info(self, name: str) -> PluginInfo | None:
        """What this host knows of the plugin (entry point) ``name``, or ``None``."""
        return self._infos.get(name)

    def origin(self, plugin: str) -> str:
        """``plugin 'x' (entry point x = "mod", distribution keel-x)``: how messages name a plugin."""
        info = self._infos.get(plugin)
        parts = []
        if info is not None and info.target:
            parts.append(f"entry point {plugin} = {info.target!r}")
        if info is not None and info.distribution:
            parts.append(f"distribution {info.distribution}")
        return f"plugin {plugin!r}" + (f" ({', '.join(parts)})" if parts else "")

    # ---------------------------------------------------------------------------- collecting

    def _collect(
        self, hook_name: str
    ) -> tuple[dict[str, Registered[Any]], list[Registered[Any]], list[PluginConflictError]]:
        """Call each plugin's implementation of a registration hook on its own (through pluggy, so
        ``KEEL_TRACE_PLUGINS`` shows it): a plugin whose hook raises or returns the wrong shape is
        ``failed`` and the others still count, and a duplicate name names both plugins."""
        if hook_name in self._cache:
            return self._cache[hook_name]
        family = FAMILIES[hook_name]
        while True:
            found: dict[str, Registered[Any]] = {}
            every: list[Registered[Any]] = []
            conflicts: list[PluginConflictError] = []
            impls = getattr(self.pm.hook, hook_name).get_hookimpls()
            failed = False
            # get_hookimpls() is in registration order: the built-ins first, then plugins as loaded
            for impl in impls:
                caller = self.pm.subset_hook_caller(hook_name, [i.plugin for i in impls if i is not impl])
                try:
                    specs = check_specs(hook_name, caller())
                except Exception as err:
                    self._fail(impl.plugin_name, err, during="register")
                    failed = True  # unregistered: its registrations in every family are dropped
                    break
                for spec in specs:
                    registered = Registered(spec, impl.plugin_name)
                    every.append(registered)
                    existing = found.get(spec.name)
                    if existing is None:
                        found[spec.name] = registered
                        continue
                    conflict = PluginConflictError(
                        family,
                        spec.name,
                        existing.plugin,
                        impl.plugin_name,
                        origins=(self.origin(existing.plugin), self.origin(impl.plugin_name)),
                    )
                    conflicts.append(conflict)
                    self._problem(conflict)
            if not failed:
                break
        self._cache[hook_name] = (found, every, conflicts)
        return found, every, conflicts

    def _registered(self, hook_name: str) -> dict[str, Registered[Any]]:
        found, _every, conflicts = self._collect(hook_name)
        if conflicts:
            raise conflicts[0]
        return found

    def models(self) -> dict[str, Registered[ModelSpec]]:
        return self._registered("keel_models")

    def stores(self) -> dict[str, Registered[StoreSpec]]:
        return self._registered("keel_stores")

    def environments(self) -> dict[str, Registered[EnvironmentSpec]]:
        return self._registered("keel_environments")

    def channels(self) -> dict[str, Registered[ChannelSpec]]:
        return self._registered("keel_channels")

    def evaluators(self) -> dict[str, Registered[EvaluatorSpec]]:
        return self._registered("keel_evaluators")

    def actions(self) -> dict[str, Registered[ActionSpec]]:
        return self._registered("keel_actions")

    def stack_slots(self) -> dict[str, Registered[SlotSpec]]:
        """The stack slots plugins declare (``keel_stack_slots``), by slot name."""
        return self._registered("keel_stack_slots")

    def family(self, family: str) -> Mapping[str, Registered[Any]]:
        """Registrations of one family by its singular name (``"model"``, ``"store"``, ...)."""
        for hook_name, name in FAMILIES.items():
            if name == family:
                return self._registered(hook_name)
        raise KeyError(family)

    # ------------------------------------------------------------------------------- runtime

    def observers(self, runtime: Any = None) -> list[tuple[str, Any]]:
        """(plugin name, function) for each ``keel_on_runtime_event`` implementation, bound to the
        runtime whose events it will observe (an inline observer's ``bind`` may leave it out)."""
        impls = self.pm.hook.keel_on_runtime_event.get_hookimpls()
        bound = [
            (impl.plugin_name, _bind_event(impl.plugin_name, impl.function, impl.argnames, runtime)) for impl in impls
        ]
        return [(name, observer) for name, observer in bound if observer is not None]

    def check_action(self, call: ActionCall, context: ActionContext) -> PolicyDecision:
        """Every policy's answer to ``call``, combined by :func:`keel.policy.combine_decisions`."""
        from keel.policy import combine_decisions

        return combine_decisions(self.pm.hook.keel_check_action(call=call, context=context), call, context)

    def add_commands(self, cli: Any) -> None:
        """Let each plugin add its sub-commands; one whose hook raises is ``failed``, the rest still add theirs."""
        impls = self.pm.hook.keel_commands.get_hookimpls()
        for impl in impls:
            caller = self.pm.subset_hook_caller("keel_commands", [i.plugin for i in impls if i is not impl])
            if hasattr(cli, "adding_plugin"):  # keel.cli.KeelGroup names the plugin of a lazy command
                cli.adding_plugin = impl.plugin_name
            try:
                caller(cli=cli)
            except Exception as err:
                self._fail(impl.plugin_name, err, during="add its commands")
        if hasattr(cli, "adding_plugin"):
            cli.adding_plugin = ""
        for name, plugins in (cli.conflicts() if hasattr(cli, "conflicts") else {}).items():
            for other in plugins[1:]:
                conflict = PluginConflictError(
                    "command",
                    name,
                    plugins[0],
                    other,
                    origins=(self.origin(plugins[0]), self.origin(other)),
                    fix=f"Running `keel {name}` fails until one is disabled: KEEL_DISABLE_PLUGINS={other} "
                    f"(or {plugins[0]}), or uninstall its distribution.",
                )
                self._command_conflicts.append(conflict)
                self._problem(conflict)

    # ------------------------------------------------------------------------------- listing

    def plugin_infos(self) -> list[PluginInfo]:
        """Every plugin known to this host, with what it registered."""
        registered: dict[str, dict[str, list[str]]] = {}
        problems: dict[str, list[str]] = {}
        for hook_name, family in FAMILIES.items():
            _found, every, conflicts = self._collect(hook_name)
            for reg in every:
                registered.setdefault(reg.plugin, {}).setdefault(family, []).append(reg.spec.name)
            for conflict in conflicts:
                for plugin in conflict.plugins:
                    problems.setdefault(plugin, []).append(str(conflict))
        for conflict in self._command_conflicts:
            for plugin in conflict.plugins:
                problems.setdefault(plugin, []).append(str(conflict))
        out = []
        for name, info in self._infos.items():
            registered_plugin = self.pm.get_plugin(name)
            if registered_plugin is not None:
                info.hooks = sorted(caller.name for caller in self.pm.get_hookcallers(registered_plugin) or [])
            info.registered = registered.get(name, {})
            info.problems = problems.get(name, [])
            info.kernel_range = self._ranges.get(name, info.kernel_range)
            out.append(info)
        return out + self._conflicting


def _bind_event(plugin: str, function: Any, argnames: tuple[str, ...], runtime: Any) -> Any:
    bind = getattr(function, "keel_bind", None)
    if bind is not None and runtime is not None:  # keel.inline_observer(bind=...): its own per-runtime callable
        try:
            observer = bind(runtime)
        except Exception as err:  # a plugin must never break the runtime: out for this runtime, said on its first event
            log.exception("inline runtime-event observer %r could not bind to a runtime", plugin)
            failure = KeelError(f"binding to this runtime failed ({type(err).__name__}: {err})")

            def failed(event: Any) -> None:
                raise failure

            observer = failed
        return None if observer is None else BoundObserver(observer)  # the bus calls it from publish
    if "runtime" in argnames:

        def observer_with_runtime(event: Any) -> Any:
            return function(event=event, runtime=runtime)

        bound = observer_with_runtime
    else:

        def observer(event: Any) -> Any:
            return function(event=event)

        bound = observer
    if getattr(function, "keel_inline", False) is True:  # keel.inline_observer: the bus calls it from publish
        bound.keel_inline = True  # type: ignore[attr-defined]
    return bound
