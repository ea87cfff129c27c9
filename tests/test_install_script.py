"""`make install` says when it will build llama.cpp (minutes, the first time) instead of sitting
silent, and stays quiet once the local model is built (tools/install.sh)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import BIN, ROOT, clean_env

SCRIPT = ROOT / "tools" / "install.sh"


def test_the_first_install_announces_the_llama_cpp_build(tmp_path: Path) -> None:
    # a venv with no llama_cpp (here: none at all); `echo` stands in for uv
    done = subprocess.run(
        ["sh", str(SCRIPT), str(tmp_path / "venv"), "echo", "uv"],
        capture_output=True, text=True, timeout=60, env=clean_env(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "building llama.cpp from source" in done.stdout and "About 7 minutes" in done.stdout
    assert "uv sync --all-packages" in done.stdout and "make install: done in" in done.stdout


def test_a_built_venv_syncs_quietly() -> None:
    done = subprocess.run(
        ["sh", str(SCRIPT), str(BIN.parent), "echo", "uv"], capture_output=True, text=True, timeout=60, env=clean_env()
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "uv sync --quiet --all-packages"
