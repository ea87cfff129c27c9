"""Third-party plugins that misbehave, as a user meets them: real distributions built here,
installed together into one venv beside the kernel, then uninstalled. Whatever they do, `keel
plugins` lists every problem by distribution and exits 0 (1 in strict mode), the well-behaved
plugins still load, and a typo in a switch or a stack is an error naming where it was set."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import ROOT, clean_env

BAD = {
    # distribution: (package, {group: {entry point: target}}, plugin module source)
    "keel-bad-raises": ("keel_bad_raises", {"keel": {"raises": "keel_bad_raises.plugin"}}, """
        import keel

        @keel.hookimpl
        def keel_models():
            raise RuntimeError("no credentials file at ~/.acme")
    """),
    "keel-bad-dict": ("keel_bad_dict", {"keel": {"dicty": "keel_bad_dict.plugin"}}, """
        import keel

        @keel.hookimpl
        def keel_models():
            yield {"name": "dicty"}
    """),
    "keel-bad-one": ("keel_bad_one", {"keel": {"one": "keel_bad_one.plugin"}}, """
        import keel

        @keel.hookimpl
        def keel_stores():
            return keel.StoreSpec(name="one", durable=False, factory=lambda options: None)
    """),
    "keel-bad-class": ("keel_bad_class", {"keel": {"classy": "keel_bad_class.plugin:WordTools"}}, """
        import keel

        @keel.action
        def shout(text: str) -> str:
            "Upper-case a text."
            return text.upper()

        class WordTools:
            @keel.hookimpl
            def keel_actions(self):
                yield shout
    """),
    "acme-echo-a": ("acme_echo_a", {"keel": {"echo": "acme_echo_a.plugin"}}, """
        import keel

        @keel.hookimpl
        def keel_models():
            yield keel.ModelSpec(name="echo-a", factory=lambda config: None)
    """),
    "acme-echo-b": ("acme_echo_b", {"keel": {"echo": "acme_echo_b.plugin"}}, """
        import keel

        @keel.hookimpl
        def keel_models():
            yield keel.ModelSpec(name="echo-b", factory=lambda config: None)
    """),
    "acme-tools-a": ("acme_tools_a", {"keel": {"tools-a": "acme_tools_a.plugin"}}, """
        import keel

        @keel.action
        def lookup(key: str) -> str:
            "Look a key up."
            return key

        @keel.hookimpl
        def keel_actions():
            yield lookup
    """),
    "acme-tools-b": ("acme_tools_b", {"keel": {"tools-b": "acme_tools_b.plugin"}}, """
        import keel

        @keel.action
        def lookup(key: str) -> str:
            "Look a key up elsewhere."
            return key

        @keel.hookimpl
        def keel_actions():
            yield lookup
    """),
    "acme-stacks-a": ("acme_stacks_a", {"keel.stacks": {"prod": "acme_stacks_a.plugin:prod",
                                                         "broken": "acme_stacks_a.broken:stack"}}, """
        prod = {"store": "memory"}
    """),
    "acme-stacks-b": ("acme_stacks_b", {"keel.stacks": {"prod": "acme_stacks_b.plugin:prod"}}, """
        prod = {"store": "memory"}
    """),
}  # fmt: skip


def build(root: Path, dist: str, package: str, entry_points: dict[str, dict[str, str]], source: str) -> Path:
    """A source tree of one distribution, shaped as plugins.md says (src layout, hatchling)."""
    folder = root / dist
    (folder / "src" / package).mkdir(parents=True)
    (folder / "src" / package / "__init__.py").write_text("")
    (folder / "src" / package / "plugin.py").write_text(textwrap.dedent(source))
    if package == "acme_stacks_a":
        (folder / "src" / package / "broken.py").write_text('raise RuntimeError("ACME_REGION is not set")\n')
    groups = "\n".join(
        f'[project.entry-points."{group}"]\n' + "\n".join(f'"{name}" = "{target}"' for name, target in eps.items())
        for group, eps in entry_points.items()
    )
    (folder / "pyproject.toml").write_text(
        f'[project]\nname = "{dist}"\nversion = "0.1.0"\ndependencies = ["keel-kernel"]\n\n{groups}\n\n'
        '[build-system]\nrequires = ["hatchling>=1.25"]\nbuild-backend = "hatchling.build"\n\n'
        f'[tool.hatch.build.targets.wheel]\npackages = ["src/{package}"]\n'
    )
    return folder


def run(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, cwd=cwd, timeout=600, env=clean_env(**env))


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("misbehaving")
    venv = root / "venv"
    uv = [sys.executable, "-m", "uv"]
    assert run(*uv, "venv", "--quiet", str(venv), "--python", sys.executable, cwd=root).returncode == 0
    trees = [str(build(root / "src", dist, *spec)) for dist, spec in BAD.items()]
    good = [str(ROOT / "kernel"), str(ROOT / "contrib" / "plugin-template"), str(ROOT / "plugins" / "store-sqlite")]
    installed = run(*uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), *good, *trees, cwd=root)
    assert installed.returncode == 0, installed.stderr
    return venv


def keel(venv: Path, *args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return run(str(venv / "bin" / "keel"), *args, cwd=cwd, **env)


def test_keel_plugins_lists_every_problem_and_still_works(venv: Path, tmp_path: Path) -> None:
    listed = keel(venv, "plugins", "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "Traceback" not in listed.stderr
    rows = json.loads(listed.stdout)
    by = {(r["name"], r["distribution"]): r for r in rows}
    assert by["template", "keel-plugin-template"]["status"] == "loaded", "the well-behaved plugins still load"
    assert by["sqlite", "keel-store-sqlite"]["status"] == "loaded"
    for name, dist, expected in [
        ("raises", "keel-bad-raises", "RuntimeError: no credentials file"),
        ("dicty", "keel-bad-dict", "keel_models() gave a dict ({'name': 'dicty'})"),
        ("one", "keel-bad-one", "keel_stores() returned one StoreSpec, not a list of them"),
        ("classy", "keel-bad-class", "keel_bad_class.plugin.WordTools is a class"),
    ]:
        row = by[name, dist]
        assert row["status"] == "failed", row
        assert f"from distribution {dist}" in row["error"] and expected in row["error"], row["error"]
    assert "must return a list of keel.ModelSpec or yield each one" in by["dicty", "keel-bad-dict"]["error"]
    assert by["echo", "acme-echo-a"]["status"] == by["echo", "acme-echo-b"]["status"] == "conflict"
    assert (
        "acme-echo-a" in by["echo", "acme-echo-b"]["error"] and "Uninstall one of" in by["echo", "acme-echo-b"]["error"]
    )
    [clash] = by["tools-a", "acme-tools-a"]["problems"]
    assert "action name 'lookup' is registered twice" in clash
    assert "distribution acme-tools-a" in clash and "distribution acme-tools-b" in clash
    assert listed.stderr.count("problem: ") == 6  # 4 failed, 1 entry-point clash, 1 action clash

    human = keel(venv, "plugins", cwd=tmp_path)
    assert human.returncode == 0 and "6 problems:" in human.stdout
    strict = keel(venv, "plugins", cwd=tmp_path, KEEL_STRICT_PLUGINS="1")
    assert strict.returncode == 1 and "6 problems:" in strict.stdout, "strict: listed first, then an error"
    other = keel(venv, "stack", cwd=tmp_path)
    assert other.returncode == 0 and "sqlite" in other.stdout, "a misbehaving plugin never breaks other commands"
    assert keel(venv, "stack", cwd=tmp_path, KEEL_STRICT_PLUGINS="1").returncode == 1

    traced = keel(venv, "plugins", cwd=tmp_path, KEEL_TRACE_PLUGINS="1", KEEL_LOAD_PLUGINS="template,sqlite")
    assert "keel_actions [hook]" in traced.stderr and "keel_stores [hook]" in traced.stderr


def test_named_stacks_from_two_distributions_and_a_broken_one(venv: Path, tmp_path: Path) -> None:
    stacks = keel(venv, "stacks", "--json", cwd=tmp_path)
    assert stacks.returncode == 0, stacks.stderr
    by = {(r["name"], r["distribution"]): r for r in json.loads(stacks.stdout)}
    assert by["prod", "acme-stacks-a"]["status"] == by["prod", "acme-stacks-b"]["status"] == "conflict"
    assert by["broken", "acme-stacks-a"]["status"] == "failed"
    assert "RuntimeError: ACME_REGION is not set" in by["broken", "acme-stacks-a"]["error"]
    chosen = keel(venv, "stack", cwd=tmp_path, KEEL_STACK="prod")
    assert chosen.returncode == 1 and "acme-stacks-a" in chosen.stderr and "acme-stacks-b" in chosen.stderr
    broken = keel(venv, "stack", cwd=tmp_path, KEEL_STACK="broken")
    assert broken.returncode == 1 and "from distribution acme-stacks-a) could not be loaded" in broken.stderr
    typo = keel(venv, "stack", cwd=tmp_path, KEEL_STACK="prd")
    assert typo.returncode == 1 and "'prd' (set in KEEL_STACK)" in typo.stderr
    (tmp_path / "keel.toml").write_text('extends = "brokn"\n')
    extends = keel(venv, "stack", cwd=tmp_path)
    assert extends.returncode == 1 and f"(set in extends = ... in {tmp_path / 'keel.toml'})" in extends.stderr
    assert "Did you mean 'broken'?" in extends.stderr


def test_typos_are_errors_naming_where_they_were_set(venv: Path, tmp_path: Path) -> None:
    (tmp_path / "keel.toml").write_text('plugins = ["sqlit"]\n')
    typo = keel(venv, "stack", cwd=tmp_path)
    assert typo.returncode == 1 and "Traceback" not in typo.stderr
    assert f"'sqlit' in plugins = [...] in {tmp_path / 'keel.toml'}" in typo.stderr
    assert "did you mean 'sqlite'?" in typo.stderr
    (tmp_path / "keel.toml").write_text('[store]\ndriver = "sqlite"\npaht = "data.db"\n')
    option = keel(venv, "stack", cwd=tmp_path)
    assert option.returncode == 1 and "[store] of store 'sqlite': invalid options (paht:" in option.stderr
    assert not (tmp_path / ".keel").exists() and not (tmp_path / "data.db").exists(), "nothing was opened"
    (tmp_path / "keel.toml").unlink()
    disabled = keel(venv, "stack", cwd=tmp_path, KEEL_DISABLE_PLUGINS="templat")
    assert disabled.returncode == 1 and "'templat' in KEEL_DISABLE_PLUGINS" in disabled.stderr
    fallback = keel(venv, "stack", cwd=tmp_path, KEEL_LOAD_PLUGINS="template")
    assert fallback.returncode == 0, fallback.stderr
    assert "keel-store-sqlite is installed, but its plugin 'sqlite' is not in the plugins list" in fallback.stdout


def test_uninstalling_the_bad_plugins_leaves_a_clean_listing(venv: Path, tmp_path: Path) -> None:
    uv = [sys.executable, "-m", "uv"]
    removed = run(*uv, "pip", "uninstall", "--quiet", "--python", str(venv / "bin" / "python"), *BAD, cwd=tmp_path)
    assert removed.returncode == 0, removed.stderr
    clean = keel(venv, "plugins", "--json", cwd=tmp_path, KEEL_STRICT_PLUGINS="1")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert {r["name"] for r in json.loads(clean.stdout)} == {"keel.builtins", "template", "sqlite"}
