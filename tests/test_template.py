"""A third-party plugin's life: build the template's wheel, install it beside the kernel's wheel in a
fresh venv (wheels, as an author's users get them, not the folder), see `keel plugins` find it,
uninstall it, see it gone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, clean_env


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, cwd=cwd, timeout=300, env=clean_env())


def test_template_install_and_uninstall(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    uv = [sys.executable, "-m", "uv"]
    assert run(*uv, "venv", "--quiet", str(venv), "--python", sys.executable, cwd=tmp_path).returncode == 0
    python = str(venv / "bin" / "python")
    dist = tmp_path / "dist"
    for package in (ROOT / "kernel", ROOT / "contrib" / "plugin-template"):
        built = run(*uv, "build", "--quiet", "--wheel", "--out-dir", str(dist), str(package), cwd=tmp_path)
        assert built.returncode == 0, built.stderr
    wheels = sorted(str(w) for w in dist.glob("*.whl"))
    assert len(wheels) == 2, wheels
    installed = run(*uv, "pip", "install", "--quiet", "--python", python, *wheels, cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr
    keel = str(venv / "bin" / "keel")

    listed = run(keel, "plugins", "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    plugins = {p["name"]: p for p in json.loads(listed.stdout)}
    assert plugins["template"]["status"] == "loaded"
    assert plugins["template"]["distribution"] == "keel-plugin-template"
    assert plugins["template"]["registered"] == {"action": ["word_count"], "evaluator": ["max_words"]}
    where = run(python, "-c", "import keel_plugin_template as t; print(t.__file__)", cwd=tmp_path)
    assert "site-packages" in where.stdout, where.stdout  # the wheel, not the folder

    removed = run(*uv, "pip", "uninstall", "--quiet", "--python", python, "keel-plugin-template", cwd=tmp_path)
    assert removed.returncode == 0, removed.stderr
    after = json.loads(run(keel, "plugins", "--json", cwd=tmp_path).stdout)
    assert "template" not in {p["name"] for p in after}
