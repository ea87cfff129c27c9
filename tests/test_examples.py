"""Every example runs, offline, as the README's `make demo` runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, clean_env

EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(example: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(example)], cwd=tmp_path, capture_output=True, text=True, timeout=600, env=clean_env()
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip(), "an example must show its result"


def test_hello_prints_a_validated_invoice(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "hello.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env=clean_env(),
    )
    assert '"vendor": "Nordlys AS"' in result.stdout
    assert "model:" in result.stdout
