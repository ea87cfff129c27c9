"""Discovery, registration, conflicts and policy combination in PluginHost."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import BROKEN_PLUGIN, GOOD_PLUGIN

import keel
from keel.plugins import PluginHost
from keel.testing import make_host


def test_builtins_register_through_the_same_hooks() -> None:
    host = PluginHost()
    assert host.stores()["memory"].plugin == "keel.builtins"
    assert host.models()["scripted"].plugin == "keel.builtins"
    assert not PluginHost(builtins=False).stores()


def test_make_host_loads_no_entry_points(fake_site: Callable[..., Path]) -> None:
    fake_site("keel-echo", entry_points={"keel": {"echo": "keel_echo"}}, modules={"keel_echo": GOOD_PLUGIN})
    assert "echo" not in make_host().models()
    assert "echo" in PluginHost.discover().models()


def test_discovered_plugin_is_listed_with_its_distribution(fake_site: Callable[..., Path]) -> None:
    fake_site("keel-echo", entry_points={"keel": {"echo": "keel_echo"}}, modules={"keel_echo": GOOD_PLUGIN})
    infos = {i.name: i for i in PluginHost.discover().plugin_infos()}
    echo = infos["echo"]
    assert (echo.status, echo.distribution, echo.version) == ("loaded", "keel-echo", "0.1")
    assert echo.hooks == ["keel_models"]
    assert echo.registered == {"model": ["echo"]}


def test_load_switch_empty_loads_none(fake_site: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    fake_site("keel-echo", entry_points={"keel": {"echo": "keel_echo"}}, modules={"keel_echo": GOOD_PLUGIN})
    monkeypatch.setenv("KEEL_LOAD_PLUGINS", "")
    host = PluginHost.discover()
    assert "echo" not in host.models()
    assert {i.name: i.status for i in host.plugin_infos()}["echo"] == "not-selected"


def test_disable_switch_blocks(fake_site: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    fake_site("keel-echo", entry_points={"keel": {"echo": "keel_echo"}}, modules={"keel_echo": GOOD_PLUGIN})
    monkeypatch.setenv("KEEL_DISABLE_PLUGINS", "echo")
    host = PluginHost.discover()
    assert "echo" not in host.models()
    assert {i.name: i.status for i in host.plugin_infos()}["echo"] == "disabled"


def test_broken_plugin_is_a_warning_naming_it(fake_site: Callable[..., Path]) -> None:
    fake_site("keel-broken", entry_points={"keel": {"broken": "keel_broken"}}, modules={"keel_broken": BROKEN_PLUGIN})
    fake_site("keel-echo", entry_points={"keel": {"echo": "keel_echo"}}, modules={"keel_echo": GOOD_PLUGIN})
    with pytest.warns(RuntimeWarning, match=r"plugin 'broken' \(keel_broken, from distribution keel-broken\).*boom"):
        host = PluginHost.discover()
    assert "echo" in host.models(), "one broken plugin must not stop the others"
    info = {i.name: i for i in host.plugin_infos()}["broken"]
    assert info.status == "failed" and "boom: missing native library" in info.error


def test_broken_plugin_is_fatal_when_strict(fake_site: Callable[..., Path]) -> None:
    fake_site("keel-broken", entry_points={"keel": {"broken": "keel_broken"}}, modules={"keel_broken": BROKEN_PLUGIN})
    with pytest.raises(keel.PluginLoadError, match="boom") as caught:
        PluginHost.discover(strict=True)
    assert caught.value.distribution == "keel-broken"


ADDS_HOOKS = """
import keel, pluggy

class specs:
    @pluggy.HookspecMarker("keel")
    def acme_runners(self): ...

@keel.hookimpl
def keel_addhooks(pluginmanager):
    pluginmanager.add_hookspecs(specs)
"""

IMPLEMENTS_THEM = """
import keel

@keel.hookimpl
def acme_runners():
    return "third-party"
"""

MISSPELLED = """
import keel

@keel.hookimpl
def keel_modles():
    return []
"""


def test_entry_point_plugins_implement_hooks_another_adds_in_any_order(fake_site: Callable[..., Path]) -> None:
    # "a-runner" sorts (and loads) before "z-acme", the plugin that adds the hook it implements
    fake_site("keel-a", entry_points={"keel": {"a-runner": "keel_a"}}, modules={"keel_a": IMPLEMENTS_THEM})
    fake_site("keel-z", entry_points={"keel": {"z-acme": "keel_z"}}, modules={"keel_z": ADDS_HOOKS})
    fake_site("keel-typo", entry_points={"keel": {"typo": "keel_typo"}}, modules={"keel_typo": MISSPELLED})
    with pytest.warns(RuntimeWarning, match=r"plugin 'typo'.*unknown hook 'keel_modles'"):
        host = PluginHost.discover()
    assert host.pm.hook.acme_runners() == ["third-party"]
    order = [name for name, _plugin in host.pm.list_name_plugin()]
    assert order.index("a-runner") < order.index("z-acme"), "the implementer must register first here"
    status = {i.name: i.status for i in host.plugin_infos()}
    assert (status["a-runner"], status["z-acme"], status["typo"]) == ("loaded", "loaded", "failed")
    assert host.pm.get_plugin("typo") is None
    with pytest.raises(keel.PluginLoadError, match="keel_modles"):
        PluginHost.discover(strict=True)


def test_duplicate_model_names_name_both_plugins() -> None:
    class A:
        @keel.hookimpl
        def keel_models(self) -> list[keel.ModelSpec]:
            return [keel.ModelSpec(name="gpt", factory=lambda c: None)]  # type: ignore[arg-type,return-value]

    host = make_host()
    host.register(A(), name="plugin-a")
    host.register(A(), name="plugin-b")
    with pytest.raises(keel.PluginConflictError) as caught:
        host.models()
    message = str(caught.value)
    assert "'gpt'" in message and "plugin-a" in message and "plugin-b" in message
    assert caught.value.plugins == ("plugin-a", "plugin-b")


def test_a_plugin_cannot_take_a_builtin_name() -> None:
    class Shadow:
        @keel.hookimpl
        def keel_stores(self) -> list[keel.StoreSpec]:
            return [keel.StoreSpec(name="memory", durable=False, factory=lambda o: None)]

    host = make_host(Shadow())
    with pytest.raises(keel.PluginConflictError, match="keel.builtins"):
        host.stores()


class Policy:
    def __init__(self, verdict: str | None):
        self.verdict = verdict

    @keel.hookimpl
    def keel_check_action(self, call: keel.ActionCall, context: keel.ActionContext) -> keel.PolicyDecision | None:
        if self.verdict is None:
            return None
        return keel.PolicyDecision(verdict=self.verdict, reason=f"said {self.verdict}", policy=f"p-{self.verdict}")  # type: ignore[arg-type]


def _call(risk: str = "read") -> keel.ActionCall:
    return keel.ActionCall(action="x", risk=risk)  # type: ignore[arg-type]


def test_default_policy_fails_closed_for_irreversible() -> None:
    host = make_host()
    assert host.check_action(_call("read"), keel.ActionContext()).verdict == "allow"
    denied = host.check_action(_call("irreversible"), keel.ActionContext())
    assert denied.verdict == "deny" and "fail closed" in denied.reason
    needs = host.check_action(_call("irreversible"), keel.ActionContext(approver_available=True))
    assert needs.verdict == "approve"


def test_deny_beats_approve_beats_allow() -> None:
    ctx = keel.ActionContext(approver_available=True)
    assert make_host(Policy("allow"), Policy("deny"), Policy("approve")).check_action(_call(), ctx).verdict == "deny"
    assert make_host(Policy("allow"), Policy("approve")).check_action(_call(), ctx).verdict == "approve"
    assert make_host(Policy("allow"), Policy(None)).check_action(_call("irreversible"), ctx).verdict == "allow"
    assert make_host(Policy(None)).check_action(_call("irreversible"), ctx).policy == "keel.default"
