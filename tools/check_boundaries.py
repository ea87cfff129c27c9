"""Keel's import boundaries, checked with import-linter against the contracts in pyproject.toml.

1. Every package under plugins/*/src and contrib/*/src must be named in the contracts (so a new
   plugin cannot slip past them); a stale name is an error too.
2. lint-imports runs with every package's src folder on the path, so the template (which is not
   installed in the workspace venv) is checked like the rest.

    python tools/check_boundaries.py [--root DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tomllib
from pathlib import Path


def plugin_packages(root: Path) -> list[str]:
    names = []
    for group in ("plugins", "contrib"):
        for src in sorted((root / group).glob("*/src")):
            names += sorted(p.name for p in src.iterdir() if (p / "__init__.py").is_file())
    return names


def check(root: Path) -> list[str]:
    config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["importlinter"]
    contracts = {c["id"]: c for c in config["contracts"]}
    found = set(plugin_packages(root))
    problems = []
    lists = {
        "root_packages": set(config["root_packages"]) - {"keel"},
        "kernel-knows-no-plugin.forbidden_modules": set(contracts["kernel-knows-no-plugin"]["forbidden_modules"]),
        "plugins-independent.modules": set(contracts["plugins-independent"]["modules"]),
    }
    for where, listed in lists.items():
        for name in sorted(found - listed):
            problems.append(f"plugin package {name!r} is missing from [tool.importlinter] {where} in pyproject.toml")
        for name in sorted(listed - found):
            problems.append(f"{where} names {name!r}, which no longer exists under plugins/ or contrib/")
    return problems


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    args = parser.parse_args(argv)
    root = args.root.resolve()
    problems = check(root)
    for problem in problems:
        print(f"boundaries: {problem}", file=sys.stderr)
    if problems:
        return 1
    paths = [str(root / "kernel" / "src"), *(str(p) for p in sorted(root.glob("*/*/src")))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    lint = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(lint), "--no-cache"], cwd=root, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
