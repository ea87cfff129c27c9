"""Run each package's own tests in a virtual environment holding only that package, its declared
dependencies and the kernel. A hidden import of a sibling plugin fails here.

Both are installed from wheels built from the tree (not editable installs): a wheel that lacks its
package data (web assets, schemas, ``py.typed``) or declares its dependencies wrong fails here, as it
would for a user installing from ``make dist``.

    python tools/test_packages.py [PACKAGE_DIR ...]     # default: kernel, plugins/*, contrib/*
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENVS = ROOT / ".venvs"
WHEELS = VENVS / "_wheels"


def packages() -> list[Path]:
    found = [ROOT / "kernel"]
    for group in ("plugins", "contrib"):
        found += sorted(p for p in (ROOT / group).glob("*") if (p / "pyproject.toml").is_file())
    return found


def uv(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "uv", *args], check=True, cwd=ROOT)


#: dependencies that only come as source and take minutes to compile (llama.cpp)
SLOW_TO_BUILD = ("llama-cpp-python",)


def prebuilt(requirement: str) -> Path | None:
    """The wheel uv already built here for a slow-to-build dependency, at the workspace venv's version.

    uv fetches a fresh sdist revision, and so compiles again, for every new venv; installing the
    same build (same version, same build settings from pyproject.toml) into the isolated venv first
    saves minutes and changes nothing the test is about: isolation is about sibling plugins.
    """
    version = subprocess.run(
        [sys.executable, "-c", f"import importlib.metadata as m; print(m.version({requirement!r}))"],
        capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    cache = subprocess.run([sys.executable, "-m", "uv", "cache", "dir"], capture_output=True, text=True).stdout.strip()
    if not version or not cache:
        return None
    name = requirement.replace("-", "_")
    wheels = sorted(Path(cache).glob(f"sdists-*/*/{requirement}/{version}/*/*/{name}-{version}-*.whl"), key=_mtime)
    return wheels[-1] if wheels else None


def _mtime(path: Path) -> float:
    return path.stat().st_mtime


def build_wheel(package: Path) -> Path:
    """Build ``package``'s wheel from the tree (fresh each run) and return its path."""
    out = WHEELS / (package.name if package.parent != ROOT else "kernel")
    subprocess.run(["rm", "-rf", str(out)], check=True)
    uv("build", "--quiet", "--wheel", "--out-dir", str(out), str(package))
    (built,) = out.glob("*.whl")
    return built


def test_package(package: Path, kernel: Path) -> bool:
    name = package.name if package.parent != ROOT else "kernel"
    venv = VENVS / name
    python = venv / "bin" / "python"
    started = time.monotonic()
    # a fresh venv each run: nothing a previous run installed can hide a missing dependency
    subprocess.run(["rm", "-rf", str(venv)], check=True)
    uv("venv", "--quiet", "--python", sys.executable, str(venv))
    targets = [f"{kernel}[test]"]
    if package != ROOT / "kernel":
        targets.append(f"{build_wheel(package)}[test]")
    declared = (package / "pyproject.toml").read_text()
    for requirement in SLOW_TO_BUILD:
        wheel = prebuilt(requirement) if requirement in declared else None
        if wheel is not None:
            uv("pip", "install", "--quiet", "--python", str(python), str(wheel))
    uv("pip", "install", "--quiet", "--python", str(python), *targets)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    env["KEEL_STRICT_PLUGINS"] = "1"
    print(f"== {package.relative_to(ROOT)} (isolated venv {venv.relative_to(ROOT)})", flush=True)
    listed = listed_alone(package, venv, env)
    result = subprocess.run([str(python), "-m", "pytest", "-q"], cwd=package, env=env)
    ok = result.returncode == 0 and listed
    print(
        f"== {package.relative_to(ROOT)}: {'ok' if ok else 'FAILED'} in {time.monotonic() - started:.1f}s",
        flush=True,
    )
    return ok


def listed_alone(package: Path, venv: Path, env: dict[str, str]) -> bool:
    """`keel plugins` in the package's venv (its wheel and the kernel's alone) lists each of its entry
    points as loaded: installing it is enough for Keel to find it."""
    import json
    import tomllib

    declared = tomllib.loads((package / "pyproject.toml").read_text())["project"].get("entry-points", {})
    names = set(declared.get("keel", {}))
    if not names:
        return True
    shown = subprocess.run(
        [str(venv / "bin" / "keel"), "plugins", "--json"], capture_output=True, text=True, env=env, cwd=venv
    )
    rows = {row["name"]: row for row in json.loads(shown.stdout or "[]")} if shown.returncode == 0 else {}
    missing = sorted(n for n in names if rows.get(n, {}).get("status") != "loaded")
    if missing:
        print(f"== {package.relative_to(ROOT)}: keel plugins does not list {missing} as loaded\n{shown.stderr}")
    return not missing


def main(argv: list[str]) -> int:
    chosen = [ROOT / a for a in argv] if argv else packages()
    kernel = build_wheel(ROOT / "kernel")
    failed = [p.relative_to(ROOT) for p in chosen if not test_package(p, kernel)]
    if failed:
        print(f"packages failing in isolation: {', '.join(map(str, failed))}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
