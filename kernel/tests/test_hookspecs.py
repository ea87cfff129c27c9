"""The contract module itself: every hook documented, typed, prefixed, and validated on register."""

from __future__ import annotations

import inspect

import pluggy
import pytest

import keel
from keel import hookspecs
from keel.plugins import FAMILIES, PluginHost

SPECS = {name: fn for name, fn in vars(hookspecs).items() if callable(fn) and hasattr(fn, "keel_spec")}


def test_the_families_of_the_design_card_exist() -> None:
    assert set(SPECS) == {
        "keel_models",
        "keel_actions",
        "keel_environments",
        "keel_stores",
        "keel_channels",
        "keel_evaluators",
        "keel_on_runtime_event",
        "keel_check_action",
        "keel_commands",
        "keel_addhooks",
        "keel_find_execution",
        "keel_adopt_executions",
        "keel_doctor_checks",
        "keel_model_prices",
        "keel_stack_slots",
    }
    assert set(FAMILIES) <= set(SPECS)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_every_hook_is_documented_and_typed(name: str) -> None:
    fn = SPECS[name]
    doc = inspect.getdoc(fn) or ""
    summary = doc.splitlines()[0] if doc else ""
    assert summary.endswith("."), f"{name}: the docstring must open with a one-line summary"
    assert "Example::" in doc, f"{name}: the docstring needs a runnable example"
    assert ":returns:" in doc or ":param" in doc, f"{name}: document the parameters or the return value"
    signature = inspect.signature(fn)
    assert signature.return_annotation is not inspect.Signature.empty, f"{name}: annotate the return type"
    for param in signature.parameters.values():
        assert param.annotation is not inspect.Parameter.empty, f"{name}: annotate {param.name}"


def test_a_misspelled_hook_is_an_error_not_silence() -> None:
    class Typo:
        @keel.hookimpl
        def keel_model(self) -> list[keel.ModelSpec]:  # missing the final s
            return []

    host = PluginHost()
    with pytest.raises(pluggy.PluginValidationError, match="keel_model"):
        host.register(Typo(), name="typo")
    assert host.pm.get_plugin("typo") is None


def test_a_wrong_argument_name_is_an_error() -> None:
    class Wrong:
        @keel.hookimpl
        def keel_on_runtime_event(self, evnt: keel.RuntimeEvent) -> None: ...

    with pytest.raises(pluggy.PluginValidationError):
        PluginHost().register(Wrong(), name="wrong")


# ----------------------------------------------------------------- plugins adding their own hooks


class _RunnerSpecs:
    """A plugin's own hookspecs, as a plugin module would define them."""

    @pluggy.HookspecMarker("keel")
    def acme_runners(self) -> list[str]:  # type: ignore[empty-body]
        """Runners of the acme plugin."""


class _AddsHooks:
    @keel.hookimpl
    def keel_addhooks(self, pluginmanager: pluggy.PluginManager) -> None:
        pluginmanager.add_hookspecs(_RunnerSpecs)

    @keel.hookimpl
    def acme_runners(self) -> list[str]:
        return ["built-in"]


class _ImplementsThem:
    @keel.hookimpl  # no optionalhook=True needed
    def acme_runners(self) -> list[str]:
        return ["third-party"]


def test_a_plugin_adds_hookspecs_that_earlier_and_later_plugins_implement() -> None:
    from keel.testing import make_host

    for order in [(_ImplementsThem(), _AddsHooks()), (_AddsHooks(), _ImplementsThem())]:
        host = make_host(*order)
        assert sorted(x for r in host.pm.hook.acme_runners() for x in r) == ["built-in", "third-party"]


def test_an_implementation_nobody_specifies_names_the_hook_and_the_plugin() -> None:
    from keel.testing import make_host

    with pytest.raises(pluggy.PluginValidationError, match=r"unknown hook 'acme_runners'.*keel_addhooks"):
        make_host(_ImplementsThem())
    host = PluginHost()
    with pytest.raises(pluggy.PluginValidationError, match="acme_runners"):
        host.register(_ImplementsThem(), name="third")
    assert host.pm.get_plugin("third") is None  # not left half-registered
