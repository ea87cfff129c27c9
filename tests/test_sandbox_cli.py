"""`keel env` drives the sandbox and toolbox environments of a stack from the command line, and
no sandboxed process is left once the command returns."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from conftest import BIN, clean_env

STACK = """
plugins = ["sandbox", "toolbox"]

[environments.py]
driver = "sandbox"
start = "eager"
memory_mb = 256
languages = ["python", "shell"]

[environments.files]
driver = "toolbox"
root = "workspace"

[environments.broken]
driver = "sandbox"
languages = ["node"]
node = "no-such-node-binary"
restart = { max_restarts = 1, backoff_seconds = 0.05 }
"""


def keel(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "keel"), *args], cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env=clean_env(KEEL_STRICT_PLUGINS="1"),
    )  # fmt: skip


def test_env_status_json_shows_every_environment(tmp_path: Path) -> None:
    (tmp_path / "keel.toml").write_text(STACK)
    listed = keel(tmp_path, "env", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [row["name"] for row in json.loads(listed.stdout)] == ["broken", "files", "py"]

    done = keel(tmp_path, "env", "status", "--start", "--json")
    assert done.returncode == 0, done.stderr
    rows = {row["name"]: row for row in json.loads(done.stdout)}
    assert rows["py"]["status"] == "ready" and rows["py"]["kind"] == "sandbox"
    assert rows["py"]["actions"] == ["run_python", "run_shell"]
    assert rows["py"]["last_health"]["ok"] and "network isolation" in rows["py"]["last_health"]["detail"]
    assert rows["files"]["status"] == "ready" and rows["files"]["actions"] == ["http_fetch", "read_file", "write_file"]
    assert (tmp_path / "workspace").is_dir()
    broken = rows["broken"]
    assert broken["status"] == "failed" and broken["restarts"] == 1
    assert "no-such-node-binary is not on the sandbox PATH" in broken["error"]
