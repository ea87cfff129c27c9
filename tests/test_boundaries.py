"""The boundary guard can fail: it catches a kernel importing a plugin, plugins importing each
other or kernel privates, and a plugin missing from the contracts."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import ROOT

GUARD = ROOT / "tools" / "check_boundaries.py"

CONTRACTS = """
[tool.importlinter]
root_packages = ["keel", "keel_a", "keel_b"]
include_external_packages = false

[[tool.importlinter.contracts]]
id = "kernel-knows-no-plugin"
name = "kernel"
type = "forbidden"
source_modules = ["keel"]
forbidden_modules = ["keel_a", "keel_b"]

[[tool.importlinter.contracts]]
id = "plugins-independent"
name = "independent"
type = "independence"
modules = ["keel_a", "keel_b"]

[[tool.importlinter.contracts]]
id = "kernel-privates"
name = "privates"
type = "private_modules"
packages_with_private_modules = ["keel"]
"""


def make_tree(root: Path, *, kernel: str = "", a: str = "", b: str = "", contracts: str = CONTRACTS) -> Path:
    files = {
        "pyproject.toml": contracts,
        "kernel/src/keel/__init__.py": kernel,
        "kernel/src/keel/_private.py": "",
        "plugins/a/src/keel_a/__init__.py": a,
        "plugins/b/src/keel_b/__init__.py": b,
    }
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(textwrap.dedent(text))
    return root


def guard(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(GUARD), "--root", str(root)], capture_output=True, text=True, timeout=120
    )


def test_clean_tree_passes(tmp_path: Path) -> None:
    result = guard(make_tree(tmp_path, a="import keel\n"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_kernel_importing_a_plugin_fails(tmp_path: Path) -> None:
    result = guard(make_tree(tmp_path, kernel="import keel_a\n"))
    assert result.returncode != 0 and "BROKEN" in result.stdout


def test_plugins_importing_each_other_fails(tmp_path: Path) -> None:
    result = guard(make_tree(tmp_path, a="import keel_b\n"))
    assert result.returncode != 0 and "BROKEN" in result.stdout


def test_plugin_importing_kernel_privates_fails(tmp_path: Path) -> None:
    result = guard(make_tree(tmp_path, a="import keel._private\n"))
    assert result.returncode != 0 and "BROKEN" in result.stdout


def test_plugin_missing_from_contracts_fails(tmp_path: Path) -> None:
    make_tree(tmp_path)
    extra = tmp_path / "plugins/c/src/keel_c/__init__.py"
    extra.parent.mkdir(parents=True)
    extra.write_text("")
    result = guard(tmp_path)
    assert result.returncode == 1 and "'keel_c' is missing" in result.stderr


def test_the_repository_itself_passes() -> None:
    result = guard(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
