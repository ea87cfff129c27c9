"""docs/security.md backs each claim with a named test: every `path::test_name` it names exists."""

from __future__ import annotations

import re

from conftest import ROOT

NAMED = re.compile(r"`([\w./-]+\.py)::(test_\w+)`")


def test_every_test_named_in_the_security_page_exists() -> None:
    page = (ROOT / "docs" / "security.md").read_text()
    named = NAMED.findall(page)
    assert len(named) >= 30, "the security page names the tests behind its claims"
    missing = []
    for path, name in named:
        source = (ROOT / path).read_text() if (ROOT / path).is_file() else ""
        if not re.search(rf"^(async )?def {name}\(", source, re.MULTILINE):
            missing.append(f"{path}::{name}")
    assert not missing, f"docs/security.md names tests that do not exist: {missing}"
