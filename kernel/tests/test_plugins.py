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


# ------------------------------------------------------------------- plugins that misbehave

RAISES = """
import keel

@keel.hookimpl
def keel_models():
    raise RuntimeError("no credentials file")
"""

YIELDS_DICT = """
import keel

@keel.hookimpl
def keel_models():
    yield {"name": "dicty", "factory": None}
"""

RETURNS_ONE = """
import keel

@keel.hookimpl
def keel_stores():
    return keel.StoreSpec(name="single", durable=False, factory=lambda options: None)

@keel.hookimpl
def keel_models():  # fine on its own: dropped with the plugin, which is failed as a whole
    return [keel.ModelSpec(name="single-model", factory=lambda config: None)]
"""

A_CLASS = """
import keel

class Plugin:
    @keel.hookimpl
    def keel_models(self):
        return [keel.ModelSpec(name="classy", factory=lambda config: None)]
"""


MISBEHAVING = ["raises", "dicty", "one", "classy", "echo"]


def install_misbehaving(fake_site: Callable[..., Path]) -> None:
    fake_site("keel-raises", entry_points={"keel": {"raises": "keel_raises"}}, modules={"keel_raises": RAISES})
    fake_site("keel-dicty", entry_points={"keel": {"dicty": "keel_dicty"}}, modules={"keel_dicty": YIELDS_DICT})
    fake_site("keel-one", entry_points={"keel": {"one": "keel_one"}}, modules={"keel_one": RETURNS_ONE})
    fake_site("keel-classy", entry_points={"keel": {"classy": "keel_classy:Plugin"}}, modules={"keel_classy": A_CLASS})
    fake_site("keel-echo", entry_points={"keel": {"echo": "keel_echo"}}, modules={"keel_echo": GOOD_PLUGIN})


def test_misbehaving_registration_hooks_fail_their_plugin_only(fake_site: Callable[..., Path]) -> None:
    install_misbehaving(fake_site)
    with pytest.warns(RuntimeWarning) as caught:
        host = PluginHost.discover(load=MISBEHAVING)
    assert set(host.models()) == {"scripted", "echo"}, "the well-behaved plugin still loads"
    assert set(host.stores()) == {"memory"}
    infos = {i.name: i for i in host.plugin_infos()}
    assert {n: infos[n].status for n in ("raises", "dicty", "one", "classy", "echo")} == {
        "raises": "failed", "dicty": "failed", "one": "failed", "classy": "failed", "echo": "loaded",
    }  # fmt: skip
    assert "(keel_raises, from distribution keel-raises) failed to register" in infos["raises"].error
    assert "RuntimeError: no credentials file" in infos["raises"].error
    assert "keel_models() gave a dict" in infos["dicty"].error
    assert "must return a list of keel.ModelSpec or yield each one" in infos["dicty"].error
    assert "keel_stores() returned one StoreSpec, not a list of them" in infos["one"].error
    assert "distribution keel-one" in infos["one"].error
    assert "keel_classy.Plugin is a class" in infos["classy"].error
    assert 'name = "keel_classy:plugin" with plugin = Plugin()' in infos["classy"].error
    assert host.pm.get_plugin("one") is None, "a failed plugin registers nothing, in any family"
    assert len(caught) == 4 and len(host.problems) == 4
    with pytest.raises(keel.PluginLoadError) as strict:
        PluginHost.discover(load=MISBEHAVING, strict=True)
    assert strict.value.distribution in {"keel-raises", "keel-dicty", "keel-one", "keel-classy"}
    tolerant = PluginHost.discover(load=MISBEHAVING, strict=True, tolerant=True)
    assert len(tolerant.problems) == 4, "tolerant discovery collects every problem for `keel plugins`"


def test_registration_hooks_are_traced(fake_site: Callable[..., Path], capfd: pytest.CaptureFixture[str]) -> None:
    fake_site("keel-echo", entry_points={"keel": {"echo": "keel_echo"}}, modules={"keel_echo": GOOD_PLUGIN})
    PluginHost.discover(load=["echo"], trace=True)
    err = capfd.readouterr().err
    assert "keel_models [hook]" in err and "keel_stores [hook]" in err


def test_one_entry_point_name_in_two_distributions(fake_site: Callable[..., Path]) -> None:
    fake_site("keel-echo", entry_points={"keel": {"echo": "keel_echo"}}, modules={"keel_echo": GOOD_PLUGIN})
    fake_site("acme-echo", entry_points={"keel": {"echo": "acme_echo"}}, modules={"acme_echo": GOOD_PLUGIN})
    fake_site("keel-dicty", entry_points={"keel": {"dicty": "keel_dicty"}}, modules={"keel_dicty": YIELDS_DICT})
    with pytest.warns(RuntimeWarning, match="entry-point name 'echo' is registered twice"):
        host = PluginHost.discover(load=["echo", "dicty"])
    assert "echo" not in host.models(), "neither of two same-named plugins loads"
    rows = [(i.name, i.status, i.distribution) for i in host.plugin_infos() if i.name == "echo"]
    assert sorted(rows) == [("echo", "conflict", "acme-echo"), ("echo", "conflict", "keel-echo")]
    message = str(host.problems[0])
    assert "'echo' = 'keel_echo' of distribution keel-echo" in message
    assert "'echo' = 'acme_echo' of distribution acme-echo" in message and "Uninstall one of" in message
    with pytest.raises(keel.PluginConflictError, match="acme-echo"):
        PluginHost.discover(load=["echo"], strict=True)


def test_unknown_names_in_the_switches_are_errors(
    fake_site: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_site("keel-echo", entry_points={"keel": {"echo": "keel_echo"}}, modules={"keel_echo": GOOD_PLUGIN})
    monkeypatch.setenv("KEEL_LOAD_PLUGINS", "ecoh")
    with pytest.raises(keel.UnknownPluginError) as caught:
        PluginHost.discover()
    message = str(caught.value)
    assert "'ecoh' in KEEL_LOAD_PLUGINS" in message and "Installed plugins" in message
    assert "did you mean 'echo'?" in message
    monkeypatch.delenv("KEEL_LOAD_PLUGINS")
    monkeypatch.setenv("KEEL_DISABLE_PLUGINS", "echo,nope")
    with pytest.raises(keel.UnknownPluginError, match="'nope' in KEEL_DISABLE_PLUGINS"):
        PluginHost.discover()
    host = PluginHost.discover(tolerant=True)
    assert isinstance(host.problems[0], keel.UnknownPluginError)
    with pytest.raises(keel.UnknownPluginError):
        host.raise_problems()


def test_a_stack_plugins_list_typo_names_the_file(fake_site: Callable[..., Path], tmp_path: Path) -> None:
    fake_site("keel-echo", entry_points={"keel": {"echo": "keel_echo"}}, modules={"keel_echo": GOOD_PLUGIN})
    (tmp_path / "keel.toml").write_text('plugins = ["sqlit"]\ndisable_plugins = ["ehco"]\n')
    with pytest.raises(keel.UnknownPluginError) as caught:
        keel.Runtime.from_stack(tmp_path / "keel.toml")
    assert f"'sqlit' in plugins = [...] in {tmp_path / 'keel.toml'}" in str(caught.value)


COMMANDS_RAISE = """
import keel

@keel.hookimpl
def keel_commands(cli):
    raise ImportError("click-extra is missing")
"""


def test_a_commands_hook_that_raises_fails_its_plugin(fake_site: Callable[..., Path]) -> None:
    import click

    fake_site("keel-cmd", entry_points={"keel": {"cmd": "keel_cmd"}}, modules={"keel_cmd": COMMANDS_RAISE})
    host = PluginHost.discover(load=["cmd"])
    with pytest.warns(RuntimeWarning, match=r"plugin 'cmd'.*failed to add its commands.*click-extra"):
        host.add_commands(click.Group())
    assert {i.name: i.status for i in host.plugin_infos()}["cmd"] == "failed"
