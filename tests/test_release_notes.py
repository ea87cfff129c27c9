"""Release notes per package come from changes/ fragments; a malformed fragment fails the check."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from conftest import ROOT


def tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("release_notes", ROOT / "tools" / "release_notes.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_repository_fragments_are_well_formed() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "release_notes.py")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "# keel-kernel (unreleased, after" in result.stdout


def test_release_folds_fragments_into_the_changelog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    notes = tool()
    package = tmp_path / "plugins" / "thing"
    (package / "changes").mkdir(parents=True)
    (package / "pyproject.toml").write_text('[project]\nname = "keel-thing"\nversion = "0.2.0"\n')
    (package / "changes" / "speed.changed.md").write_text("Appends are\n   twice as fast.\n")
    (package / "changes" / "leak.fixed.md").write_text("A closed store no longer leaks its thread.\n")
    monkeypatch.setattr(notes, "ROOT", tmp_path)
    print(notes.release(package))
    changelog = (package / "CHANGELOG.md").read_text()
    assert "## 0.2.0 (" in changelog
    assert changelog.index("### Changed") < changelog.index("### Fixed")
    assert "- Appends are twice as fast." in changelog
    assert list((package / "changes").glob("*.md")) == []
    with pytest.raises(SystemExit, match="no fragments"):
        notes.release(package)
    (package / "changes" / "again.added.md").write_text("More.\n")
    with pytest.raises(SystemExit, match="already in"):
        notes.release(package)  # the version was not raised


def test_a_malformed_fragment_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    notes = tool()
    package = tmp_path / "kernel"
    (package / "changes").mkdir(parents=True)
    (package / "pyproject.toml").write_text('[project]\nname = "keel-kernel"\nversion = "0.1.0"\n')
    (package / "changes" / "oops.improved.md").write_text("x")
    (package / "changes" / "blank.fixed.md").write_text("  \n")
    monkeypatch.setattr(notes, "ROOT", tmp_path)
    _entries, problems = notes.fragments(package)
    assert len(problems) == 2
    assert "kind one of" in problems[0] or "kind one of" in problems[1]
    assert any("empty" in p for p in problems)
