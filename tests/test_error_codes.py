"""Every error Keel and its installed plugins raise on purpose has a stable, unique ``code``, and
docs/errors.md lists each one (programs branch on the code, never on a class name or message)."""

from __future__ import annotations

import importlib
import importlib.metadata
import pkgutil
import re

from conftest import ROOT

import keel
from keel.errors import CODE_PATTERN

#: a module that needs a service or SDK the plain test venv may lack is skipped, and says so
#: and a module that is a program (it runs when imported) is not imported
OPTIONAL = ("keel_runner_temporal.workflow", "keel_runner_temporal.worker", "keel_sandbox._launch")


def _import_all(package: str) -> None:
    module = importlib.import_module(package)
    for info in pkgutil.walk_packages(getattr(module, "__path__", []), prefix=f"{package}."):
        if ".tests" in info.name or info.name.startswith(OPTIONAL) or info.name.endswith("__main__"):
            continue
        importlib.import_module(info.name)


def _subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_subclasses(sub))
    return found


def first_party_errors() -> list[type[keel.KeelError]]:
    packages = {"keel"}
    for ep in importlib.metadata.entry_points(group="keel"):
        packages.add(ep.value.partition(":")[0].partition(".")[0])
    for package in sorted(packages):
        _import_all(package)
    found = dict.fromkeys(_subclasses(keel.KeelError))  # one entry per class, multiple bases or not
    return [cls for cls in found if cls.__module__.partition(".")[0] in packages and "tests" not in cls.__module__]


def test_every_error_declares_a_unique_code_and_the_docs_list_it() -> None:
    errors = first_party_errors()
    assert len(errors) > 40, [e.__name__ for e in errors]  # keel's own and every first-party plugin's
    page = (ROOT / "docs" / "errors.md").read_text()
    seen: dict[str, str] = {}
    for cls in errors:
        where = f"{cls.__module__}.{cls.__qualname__}"
        assert "code" in vars(cls), f'{where} declares no `code`: add `code = "<package>.<what>"` to the class'
        assert CODE_PATTERN.match(cls.code), where
        assert cls.code not in seen, f"{where} and {seen.get(cls.code)} share the code {cls.code!r}"
        seen[cls.code] = where
        assert re.search(rf"^\| `{re.escape(cls.code)}` \| `{cls.__name__}` \|", page, re.M), (
            f"docs/errors.md has no row for {cls.code!r} ({where})"
        )
    listed = set(re.findall(r"^\| `([a-z0-9_.]+)` \|", page, re.M))
    assert listed <= set(seen) | {"error"}, f"docs/errors.md lists codes no class has: {listed - set(seen)}"
