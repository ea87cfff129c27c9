"""A third-party plugin's life: build the template's wheel, install it beside the kernel's wheel in a
fresh venv (wheels, as an author's users get them, not the folder), see `keel plugins` find it,
uninstall it, see it gone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import BIN, ROOT, clean_env


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


def test_plugins_md_section_1_runs_as_written(tmp_path: Path) -> None:
    """docs/plugins.md §1, followed literally: copy the template, rename it, install, list, test."""
    import re
    import shutil

    page = (ROOT / "docs" / "plugins.md").read_text()
    section = page.split("## 1. Copy the template", 1)[1].split("## 2.", 1)[0]
    (script,) = re.findall(r"^```sh\n(.*?)^```", section, re.S | re.M)
    repo = tmp_path / "keel"
    shutil.copytree(
        ROOT / "contrib" / "plugin-template",
        repo / "contrib" / "plugin-template",
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", ".pytest_cache"),
    )
    venv = tmp_path / "venv"
    uv = [sys.executable, "-m", "uv"]
    assert run(*uv, "venv", "--quiet", str(venv), "--python", sys.executable, cwd=tmp_path).returncode == 0
    kernel = run(
        *uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), str(ROOT / "kernel"), cwd=tmp_path
    )
    assert kernel.returncode == 0, kernel.stderr  # the kernel is not on PyPI: a user installs it first too
    env = clean_env(VIRTUAL_ENV=str(venv), PATH=f"{venv / 'bin'}:{BIN}:/usr/bin:/bin")
    done = subprocess.run(["bash", "-e", "-c", script], capture_output=True, text=True, cwd=repo, timeout=600, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"^wordtools\s+loaded\s+keel-wordtools 0\.1\.0\b", done.stdout, re.M), done.stdout
    assert re.search(r"\d+ passed", done.stdout), done.stdout
    assert (tmp_path / "keel-wordtools" / "src" / "keel_wordtools" / "plugin.py").is_file()
