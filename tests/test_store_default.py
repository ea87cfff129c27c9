"""The embedded default: with keel-store-sqlite installed, the stack's store is SQLite under ./.keel/."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from conftest import BIN, ROOT, clean_env


def test_keel_stack_shows_sqlite(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(BIN / "keel"), "stack", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(KEEL_LOAD_PLUGINS="sqlite"),
    )
    assert result.returncode == 0, result.stderr
    store = next(row for row in json.loads(result.stdout)["slots"] if row["slot"] == "store")
    assert (store["name"], store["status"], store["plugin"]) == ("sqlite", "ok", "sqlite")


def test_hello_example_writes_to_dot_keel(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "hello.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(),
    )
    assert result.returncode == 0, result.stderr
    assert "store: SqliteStore" in result.stdout
    conn = sqlite3.connect(tmp_path / ".keel" / "keel.db")
    try:
        assert conn.execute("SELECT namespace, key FROM kv").fetchall() == [("invoices", "2024-117")]
    finally:
        conn.close()
