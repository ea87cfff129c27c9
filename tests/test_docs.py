"""Docs match the code: the hook reference is generated, and every python block on every page runs."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, clean_env

from keel import hookspecs

PAGES = sorted((ROOT / "docs").glob("*.md"))
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def test_hook_reference_is_current() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "hookdoc.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_every_hook_is_in_the_reference() -> None:
    page = (ROOT / "docs" / "hooks.md").read_text()
    for name, fn in vars(hookspecs).items():
        if hasattr(fn, "keel_spec"):
            assert f"## `{name}(" in page, f"{name} is not documented in docs/hooks.md"


@pytest.mark.parametrize("name", [n for n, f in vars(hookspecs).items() if hasattr(f, "keel_spec")])
def test_hook_examples_are_valid_python(name: str) -> None:
    doc = inspect.getdoc(getattr(hookspecs, name)) or ""
    example = inspect.cleandoc(doc.partition("Example::")[2])
    compile(example, f"<{name} example>", "exec")


@pytest.mark.parametrize("page", [p for p in PAGES if BLOCK.search(p.read_text())], ids=lambda p: p.name)
def test_python_blocks_run(page: Path, tmp_path: Path) -> None:
    """A page's python blocks run in order, as one script, in an empty folder."""
    code = "\n\n".join(BLOCK.findall(page.read_text()))
    script = tmp_path / f"{page.stem}.py"
    script.write_text(code)
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=clean_env()
    )
    assert result.returncode == 0, f"{page.name}: a python block failed\n{result.stdout}\n{result.stderr}"


def test_index_links_resolve() -> None:
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#:]+\.md)\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


def _workspace_distributions() -> set[str]:
    import tomllib

    pyprojects = [
        ROOT / "kernel" / "pyproject.toml",
        *ROOT.glob("plugins/*/pyproject.toml"),
        *ROOT.glob("contrib/*/pyproject.toml"),
    ]
    return {tomllib.loads(p.read_text())["project"]["name"] for p in pyprojects}


INSTALL_LINE = re.compile(r"(?:pip install|uv pip install|uv add)\s+([^`\n]*)")


def test_install_lines_name_real_packages() -> None:
    """Every keel-* distribution an install line names (README, docs, package READMEs) is in the workspace."""
    known = _workspace_distributions()
    pages = [ROOT / "README.md", *PAGES, *ROOT.glob("plugins/*/README.md"), *ROOT.glob("contrib/*/README.md")]
    named = 0
    for page in pages:
        for line in INSTALL_LINE.findall(page.read_text()):
            for name in re.findall(r"(?<![\w/.-])(keel-[a-z0-9-]+)", line):
                named += 1
                assert name in known, (
                    f"{page.relative_to(ROOT)}: `{line.strip()}` names {name}, which no package here is"
                )
    assert named > 5, "the install lines were not found: has the pattern gone stale?"
