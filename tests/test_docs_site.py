"""The docs build as a site (mkdocs-material) with --strict, as CI checks: a broken link, a missing
anchor or a page left out of the nav in mkdocs.yml fails here."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import BIN, ROOT, clean_env


def test_the_docs_site_builds_strictly(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(BIN / "mkdocs"), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=clean_env(NO_MKDOCS_2_WARNING="1"),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    pages = {p.stem for p in (ROOT / "docs").glob("*.md")}
    built = {p.parent.name for p in (tmp_path / "site").glob("*/index.html")}
    assert pages - {"index"} <= built, f"pages not built: {sorted(pages - {'index'} - built)}"
    assert "Keel" in (tmp_path / "site" / "index.html").read_text(encoding="utf-8")


def test_a_broken_link_fails_the_build(tmp_path: Path) -> None:
    # the check can fail: the same config over a copy of the docs with one broken link
    docs = tmp_path / "docs"
    docs.mkdir()
    for page in (ROOT / "docs").glob("*.md"):
        (docs / page.name).write_text(page.read_text(encoding="utf-8"), encoding="utf-8")
    (docs / "index.md").write_text("# Keel\n\n[gone](no-such-page.md)\n", encoding="utf-8")
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    (tmp_path / "mkdocs.yml").write_text(config, encoding="utf-8")
    done = subprocess.run(
        [str(BIN / "mkdocs"), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=clean_env(NO_MKDOCS_2_WARNING="1"),
    )  # fmt: skip
    assert done.returncode != 0 and "no-such-page.md" in done.stdout + done.stderr
