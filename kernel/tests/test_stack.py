"""Stacks: layers, provenance, named stacks from entry points, and clear errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import keel
from keel.stack import load_stack
from keel.testing import make_host


def test_no_file_means_embedded_defaults(tmp_path: Path) -> None:
    stack = load_stack(cwd=tmp_path)
    assert stack.name == "embedded defaults"
    assert stack.choice("model").name == "local"
    _registered, choice = stack.resolve("store", make_host())
    assert (choice.name, choice.source) == ("memory", "built-in fallback")
    assert "nothing survives a restart" in choice.note


def test_missing_default_model_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(keel.DriverNotFoundError, match="install keel-model-local") as caught:
        load_stack(cwd=tmp_path).resolve("model", make_host())
    assert caught.value.available == ["scripted"]


def test_keel_toml_picks_drivers_with_provenance(tmp_path: Path) -> None:
    (tmp_path / "keel.toml").write_text(
        'model = "fast"\nstore = "memory"\n[models.fast]\nprovider = "scripted"\nreplies = ["hi"]\n'
    )
    stack = load_stack(cwd=tmp_path)
    registered, choice = stack.resolve("model", make_host())
    assert registered.spec.name == "scripted" and choice.note == "alias 'fast'"
    assert stack.sources["store"].endswith("keel.toml")


def test_model_config_carries_its_alias(tmp_path: Path) -> None:
    (tmp_path / "keel.toml").write_text('[models.fast]\nprovider = "scripted"\n')
    _alias, config, _source = load_stack(cwd=tmp_path).model_config("fast")
    assert config.alias == "fast", "drivers name the alias in their errors"


def test_pyproject_tool_keel(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname="app"\n[tool.keel]\nstore = "memory"\n')
    assert load_stack(cwd=tmp_path).choice("store").source.endswith("pyproject.toml")


def test_unknown_store_lists_available(tmp_path: Path) -> None:
    (tmp_path / "keel.toml").write_text('store = "casandra"\n')
    stack = load_stack(cwd=tmp_path)
    with pytest.raises(keel.DriverNotFoundError) as caught:
        stack.check(make_host())
    assert "'casandra'" in str(caught.value) and "'memory'" in str(caught.value)
    assert "keel.toml" in str(caught.value)


def test_runner_and_store_slots_take_a_table_of_driver_options(tmp_path: Path) -> None:
    (tmp_path / "keel.toml").write_text('[store]\ndriver = "memory"\n[runner]\ndriver = "local"\nretention = "30d"\n')
    stack = load_stack(tmp_path / "keel.toml")
    runner = stack.choice("runner")
    assert (runner.name, dict(runner.options)) == ("local", {"retention": "30d"})
    assert runner.source.endswith("keel.toml")
    assert (stack.choice("store").name, dict(stack.choice("store").options)) == ("memory", {})
    (tmp_path / "keel.toml").write_text('[runner]\nretention = "30d"\n')
    with pytest.raises(keel.StackError, match="runner.*driver"):
        load_stack(tmp_path / "keel.toml")


def test_a_typo_in_the_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "keel.toml").write_text('stroe = "memory"\n')
    with pytest.raises(keel.StackError, match="stroe"):
        load_stack(cwd=tmp_path)


def test_bad_toml_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "keel.toml").write_text("model = \n")
    with pytest.raises(keel.StackError, match="keel.toml: not valid TOML"):
        load_stack(cwd=tmp_path)


NAMED = """
prod = {"store": {"driver": "memory", "path": "/data"}, "model": "scripted", "channels": []}
base = {"model": "scripted"}
child = {"extends": "base", "store": "memory"}
loop_a = {"extends": "loop_b"}
loop_b = {"extends": "loop_a"}
"""


def test_named_stack_from_entry_point_and_local_override(fake_site: Callable[..., Path], tmp_path: Path) -> None:
    fake_site(
        "acme-stacks",
        entry_points={"keel.stacks": {n: f"acme_stacks:{n}" for n in ("prod", "base", "child", "loop_a", "loop_b")}},
        modules={"acme_stacks": NAMED},
    )
    app = tmp_path / "app"
    app.mkdir()
    stack = load_stack(cwd=app, name="prod")
    store = stack.choice("store")
    assert (store.name, dict(store.options), store.source) == ("memory", {"path": "/data"}, "stack:prod")
    (app / "keel.toml").write_text('extends = "child"\nmodel = "local"\n')
    stack = load_stack(cwd=app)
    assert stack.name == "stack:base < stack:child < " + str(app / "keel.toml")
    assert stack.choice("model").source.endswith("keel.toml")
    assert stack.choice("store").source == "stack:child"
    with pytest.raises(keel.StackError, match="loop"):
        load_stack(cwd=tmp_path, name="loop_a")
    with pytest.raises(keel.StackError, match=r"Available: base, child"):
        load_stack(cwd=tmp_path, name="nope")


def test_runnables_must_be_importable(tmp_path: Path) -> None:
    (tmp_path / "keel.toml").write_text('runnables = ["no_such_module:agent"]\n')
    with pytest.raises(keel.StackError, match="no_such_module"):
        keel.Runtime.from_stack(tmp_path / "keel.toml", host=make_host())


def test_an_unknown_model_name_says_how_to_define_the_alias(tmp_path: Path) -> None:
    (tmp_path / "keel.toml").write_text('model = "gpt4"\n')
    with pytest.raises(keel.DriverNotFoundError, match=r"\[models\.gpt4\] with provider = one of the available"):
        load_stack(cwd=tmp_path).resolve("model", make_host())


def test_store_options_are_checked_when_the_stack_resolves(tmp_path: Path) -> None:
    (tmp_path / "keel.toml").write_text('[store]\ndriver = "memory"\npaht = "x"\n')
    stack = load_stack(tmp_path / "keel.toml")
    with pytest.raises(keel.StackError) as caught:
        stack.check(make_host())
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'keel.toml'}: [store] of store 'memory': invalid options")
    assert "paht: Extra inputs are not permitted" in message


def test_where_a_missing_named_stack_was_set(
    fake_site: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_site("acme-stacks", entry_points={"keel.stacks": {"prod": "acme_stacks:prod"}}, modules={"acme_stacks": NAMED})
    (tmp_path / "keel.toml").write_text('extends = "prd"\n')
    with pytest.raises(keel.StackError, match=r"'prd' \(set in extends = \.\.\. in .*keel.toml\).*Did you mean 'prod'"):
        load_stack(cwd=tmp_path)
    monkeypatch.setenv("KEEL_STACK", "nope")
    with pytest.raises(keel.StackError, match=r"'nope' \(set in KEEL_STACK\)"):
        load_stack(cwd=tmp_path)
    monkeypatch.delenv("KEEL_STACK")
    with pytest.raises(keel.StackError, match=r"'nope' \(set in --stack"):
        load_stack(cwd=tmp_path, name="nope")


def test_a_named_stack_whose_module_raises_names_its_distribution(
    fake_site: Callable[..., Path], tmp_path: Path
) -> None:
    fake_site(
        "acme-broken",
        entry_points={"keel.stacks": {"prod": "acme_broken:prod"}},
        modules={"acme_broken": 'raise KeyError("ACME_REGION")'},
    )
    with pytest.raises(keel.StackError) as caught:
        load_stack(cwd=tmp_path, name="prod")
    message = str(caught.value)
    assert "named stack 'prod' (acme_broken:prod, from distribution acme-broken) could not be loaded" in message
    assert "KeyError: 'ACME_REGION'" in message


def test_two_distributions_shipping_one_stack_name(fake_site: Callable[..., Path], tmp_path: Path) -> None:
    fake_site("acme-stacks", entry_points={"keel.stacks": {"prod": "acme_stacks:prod"}}, modules={"acme_stacks": NAMED})
    fake_site(
        "other-stacks", entry_points={"keel.stacks": {"prod": "other_stacks:prod"}}, modules={"other_stacks": NAMED}
    )
    with pytest.raises(keel.StackError) as caught:
        load_stack(cwd=tmp_path, name="prod")
    message = str(caught.value)
    assert (
        "shipped twice" in message and "distribution acme-stacks" in message and "distribution other-stacks" in message
    )


def test_a_local_alias_override_keeps_the_slot_provenance(fake_site: Callable[..., Path], tmp_path: Path) -> None:
    fake_site(
        "acme-stacks",
        entry_points={"keel.stacks": {"team": "acme_stacks:team"}},
        modules={"acme_stacks": 'team = {"model": "fast", "models": {"fast": {"provider": "scripted"}}}'},
    )
    (tmp_path / "keel.toml").write_text('extends = "team"\n[models.fast]\nprovider = "scripted"\nreplies = ["hi"]\n')
    stack = load_stack(cwd=tmp_path)
    _registered, choice = stack.resolve("model", make_host())
    assert choice.source == "stack:team", "the slot was chosen by the named stack"
    assert choice.note == f"alias 'fast' defined in {tmp_path / 'keel.toml'}"


ENV_WITH_OPTIONS = """
import keel
from pydantic import BaseModel, ConfigDict

class FolderOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = "."

@keel.hookimpl
def keel_environments():
    yield keel.EnvironmentSpec(name="folder", kind="folder", factory=lambda options: None, options=FolderOptions)
"""


def test_environment_options_are_checked_when_the_stack_resolves(
    fake_site: Callable[..., Path], tmp_path: Path
) -> None:
    import importlib

    fake_site(
        "keel-folder", entry_points={"keel": {"folder": "keel_folder"}}, modules={"keel_folder": ENV_WITH_OPTIONS}
    )
    host = make_host(importlib.import_module("keel_folder"))
    (tmp_path / "keel.toml").write_text(
        'store = "memory"\n[environments.docs]\ndriver = "folder"\nstart = "eager"\npth = "x"\n'
    )
    with pytest.raises(keel.StackError) as caught:
        load_stack(tmp_path / "keel.toml").check(host)
    assert str(caught.value).startswith(f"{tmp_path / 'keel.toml'}: [environments.docs] of driver 'folder': invalid")
    assert "pth: Extra inputs are not permitted" in str(caught.value) and "Valid options: path" in str(caught.value)
    (tmp_path / "keel.toml").write_text('store = "memory"\n[environments.docs]\ndriver = "folder"\npath = "x"\n')
    rows = {r["slot"]: r for r in load_stack(tmp_path / "keel.toml").check(host)}
    assert rows["environments.docs"]["plugin"] == "keel_folder"
    (tmp_path / "keel.toml").write_text('store = "memory"\n[environments.docs]\ndriver = "foldr"\n')
    with pytest.raises(keel.DriverNotFoundError, match=r"unknown environment driver 'foldr'.*\[environments\.docs\]"):
        load_stack(tmp_path / "keel.toml").check(host)


def test_a_slot_is_checked_by_the_plugin_that_declares_it(tmp_path: Path) -> None:
    from keel.testing import make_host

    seen = []

    def check(choice: Any, host: Any) -> str:
        seen.append((choice.name, dict(choice.options)))
        if choice.name == "broken":
            raise RuntimeError("a bug in the check")
        if choice.name != "local":
            raise keel.DriverNotFoundError("runner", choice.name, ["local"], choice.source)
        return "flows"

    class Owner:
        @staticmethod
        @keel.hookimpl
        def keel_stack_slots() -> list[keel.SlotSpec]:
            return [keel.SlotSpec(name="runner", description="runs flows", check=check)]

    owner = Owner()
    rows = {r["slot"]: r for r in keel.Stack().check(make_host())}
    assert rows["runner"]["status"] == "unchecked" and "no installed plugin declares" in rows["runner"]["note"]

    host = make_host(owner)
    assert host.stack_slots()["runner"].spec.description == "runs flows"
    (tmp_path / "keel.toml").write_text('[runner]\ndriver = "local"\nretention = "30d"\n')
    rows = {r["slot"]: r for r in keel.load_stack(tmp_path / "keel.toml").check(host)}
    assert (rows["runner"]["status"], rows["runner"]["plugin"]) == ("ok", "flows")
    assert seen[-1] == ("local", {"retention": "30d"})

    (tmp_path / "keel.toml").write_text('runner = "temporal"\n')
    with pytest.raises(keel.DriverNotFoundError, match="unknown runner 'temporal'.*Available: 'local'"):
        keel.load_stack(tmp_path / "keel.toml").check(host)
    (tmp_path / "keel.toml").write_text('runner = "broken"\n')
    rows = {r["slot"]: r for r in keel.load_stack(tmp_path / "keel.toml").check(host)}
    assert rows["runner"]["status"] == "failed" and "RuntimeError: a bug in the check" in rows["runner"]["note"]


def test_two_plugins_declaring_one_slot_is_a_conflict_naming_both(monkeypatch: pytest.MonkeyPatch) -> None:
    from keel.testing import make_host

    # the warning is what a normal run shows; tools/test_packages.py sets strict mode, where the
    # conflict is raised without it
    monkeypatch.delenv("KEEL_STRICT_PLUGINS", raising=False)

    def declare() -> list[keel.SlotSpec]:
        return [keel.SlotSpec(name="runner", check=lambda choice, host: "x")]

    class First:
        keel_stack_slots = staticmethod(keel.hookimpl(declare))

    class Second(First):
        pass

    host = make_host(First(), Second())
    with (
        pytest.warns(RuntimeWarning, match="registered twice"),
        pytest.raises(keel.PluginConflictError, match="slot name 'runner' is registered twice"),
    ):
        host.stack_slots()


def test_a_slot_set_on_top_keeps_the_rest_and_says_who_set_it(tmp_path: Path) -> None:
    (tmp_path / "keel.toml").write_text('store = "memory"\n[runner]\ndriver = "temporal"\naddress = "x:1"\n')
    stack = load_stack(cwd=tmp_path).with_slot("runner", "local", "keel replay")
    assert (stack.choice("runner").name, stack.choice("runner").source) == ("local", "keel replay")
    assert stack.choice("store").name == "memory" and stack.name.endswith("< keel replay")
