"""Release notes per package, from changelog fragments.

Every package keeps its unreleased changes as one small file per change in its own ``changes/``
folder, named ``<anything>.<kind>.md`` where kind is one of added, changed, fixed, removed, security
(towncrier's convention, without its per-project configuration: one folder per package is all the
workspace needs). A fragment lands in the same commit as the change it describes, so two branches
never conflict over one CHANGELOG.md.

    python tools/release_notes.py                  # what changed in each package since its last version
    python tools/release_notes.py --check          # exit 1 if a fragment is malformed
    python tools/release_notes.py --release PKG    # fold PKG's fragments into its CHANGELOG.md, under
                                                   # the version its pyproject.toml now carries
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("security", "removed", "changed", "added", "fixed")
FRAGMENT = re.compile(r"^[\w.-]+\.(?P<kind>[a-z]+)\.md$")


def packages() -> list[Path]:
    found = [ROOT / "kernel"]
    for group in ("plugins", "contrib"):
        found += sorted(p for p in (ROOT / group).glob("*") if (p / "pyproject.toml").is_file())
    return found


def project(package: Path) -> dict[str, str]:
    data = tomllib.loads((package / "pyproject.toml").read_text())["project"]
    return {"name": data["name"], "version": data["version"]}


def fragments(package: Path) -> tuple[dict[str, list[str]], list[str]]:
    """The package's unreleased entries by kind, and the problems with any malformed fragment."""
    entries: dict[str, list[str]] = {kind: [] for kind in KINDS}
    problems = []
    folder = package / "changes"
    for path in sorted(folder.glob("*")) if folder.is_dir() else []:
        if path.name in {"README.md", ".gitkeep"}:
            continue
        match = FRAGMENT.match(path.name)
        if match is None or match["kind"] not in KINDS:
            problems.append(
                f"{path.relative_to(ROOT)}: a fragment is named <slug>.<kind>.md with kind one of {', '.join(KINDS)}"
            )
            continue
        text = path.read_text().strip()
        if not text:
            problems.append(f"{path.relative_to(ROOT)}: the fragment is empty; say what changed for a user")
            continue
        entries[match["kind"]].append(text)
    return entries, problems


def render(version: str, entries: dict[str, list[str]], date: str | None = None) -> str:
    lines = [f"## {version}" + (f" ({date})" if date else ""), ""]
    for kind in KINDS:
        if entries[kind]:
            lines += [f"### {kind.capitalize()}", ""]
            lines += [f"- {' '.join(text.split())}" for text in entries[kind]]
            lines.append("")
    return "\n".join(lines)


def release(package: Path) -> str:
    meta = project(package)
    entries, problems = fragments(package)
    if problems:
        raise SystemExit("\n".join(problems))
    if not any(entries.values()):
        raise SystemExit(f"{meta['name']}: no fragments in {package.relative_to(ROOT)}/changes to release")
    changelog = package / "CHANGELOG.md"
    old = changelog.read_text() if changelog.exists() else f"# Changelog of {meta['name']}\n\n"
    if f"## {meta['version']}" in old:
        raise SystemExit(
            f"{meta['name']} {meta['version']} is already in {changelog.relative_to(ROOT)}: "
            "raise the version in its pyproject.toml first"
        )
    head, _, rest = old.partition("\n## ")
    section = render(meta["version"], entries, dt.date.today().isoformat())
    changelog.write_text(head.rstrip() + "\n\n" + section + ("\n## " + rest if rest else ""))
    for path in (package / "changes").glob("*.md"):
        if FRAGMENT.match(path.name):
            path.unlink()
    return f"{meta['name']} {meta['version']}: {changelog.relative_to(ROOT)} updated"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check the fragments' names and contents")
    parser.add_argument("--release", metavar="PACKAGE", help="a package folder, e.g. plugins/triggerflow")
    args = parser.parse_args(argv)
    if args.release:
        print(release(ROOT / args.release))
        return 0
    failed = False
    for package in packages():
        meta = project(package)
        entries, problems = fragments(package)
        for problem in problems:
            print(problem, file=sys.stderr)
            failed = True
        if not args.check and any(entries.values()):
            print(f"# {meta['name']} (unreleased, after {meta['version']})\n")
            print(render("Unreleased", entries))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
