"""``keel.load_ref``: the one loader of ``module:attribute`` strings, and its errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import keel


def test_it_loads_a_module_attribute_and_a_dotted_one() -> None:
    assert keel.load_ref("keel:KeelError") is keel.KeelError
    assert keel.load_ref("keel.errors:ConflictError.code") == "conflict"


@pytest.mark.parametrize(
    ("ref", "says"),
    [
        ("keel", "is not a reference: write 'package.module:attribute'"),
        ("keel:", "is not a reference"),
        (":KeelError", "is not a reference"),
        ("no_such_package_xyz:thing", "there is no module 'no_such_package_xyz'. Fix: check the spelling"),
        ("keel.no_such_module:thing", "there is no module 'keel.no_such_module'"),
        ("keel:NoSuchThing", "module 'keel' has no attribute 'NoSuchThing'. Fix: check the name after the colon"),
    ],
)
def test_a_bad_reference_names_the_string_the_cause_and_the_fix(ref: str, says: str) -> None:
    with pytest.raises(keel.StackError, match="runnables entry") as caught:
        keel.load_ref(ref, what="runnables entry", error=keel.StackError)
    assert says in str(caught.value) and repr(ref) in str(caught.value)


def test_a_module_that_fails_to_import_is_named_with_its_cause(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "needs_missing_dep.py").write_text("import no_such_dependency_xyz\nthing = 1\n")
    (tmp_path / "broken_syntax.py").write_text("def (:\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(keel.KeelError, match="needs 'no_such_dependency_xyz', which is not installed"):
        keel.load_ref("needs_missing_dep:thing")
    with pytest.raises(keel.KeelError, match="importing 'broken_syntax' failed with SyntaxError"):
        keel.load_ref("broken_syntax:thing")
    sys.modules.pop("needs_missing_dep", None)


def test_lazy_exports_imports_a_name_on_first_use_and_keeps_it() -> None:
    import types

    package = types.ModuleType("lazy_pkg_xyz")
    load = keel.lazy_exports(vars(package), {"ConflictError": "keel.errors", "dumps": "json"})
    assert load("ConflictError") is keel.ConflictError
    assert vars(package)["ConflictError"] is keel.ConflictError, "kept: the next lookup is a plain attribute"
    with pytest.raises(AttributeError, match="module 'lazy_pkg_xyz' has no attribute 'nothing'"):
        load("nothing")


def test_every_lazy_name_of_keel_resolves() -> None:
    for name in keel.__all__:
        assert getattr(keel, name) is not None, name
