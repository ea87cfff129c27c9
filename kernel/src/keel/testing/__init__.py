"""Test helpers for Keel users and plugin authors.

- :class:`ScriptedModel` / :class:`Reply`: a model test double that streams scripted answers;
- :func:`make_host`: a plugin host holding the built-ins plus exactly the plugins you name;
- :mod:`keel.testing.conformance`: base test classes that prove a driver honours the contract
  (import it from a test module; it needs pytest);
- :func:`keel.testing.drills.kill_after_acks`: a crash drill, to prove a store loses nothing it
  acknowledged when its process is killed;
- the pytest plugin (loaded automatically through ``pytest11``) provides the fixtures
  ``keel_host``, ``make_keel_host`` and ``keel_runtime``.
"""

from __future__ import annotations

from types import ModuleType

from keel.plugins import PluginHost
from keel.testing.scripted import Reply, ScriptedModel

__all__ = ["Reply", "ScriptedModel", "make_host"]


def make_host(*plugins: ModuleType | object, builtins: bool = True) -> PluginHost:
    """A host that loads no entry points: the kernel's built-ins plus ``plugins``, in order; every
    hook they implement is checked once all are registered (so order does not matter)."""
    host = PluginHost(builtins=builtins, trace=False)
    for plugin in plugins:
        host.register(plugin, check=False)
    host.verify()
    return host
