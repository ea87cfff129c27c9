"""keel doctor on the real first-party plugins: the same stack fails on the embedded defaults and
passes every row doctor checks once SQLite, the scheduler, DevTools, eval and TriggerFlow load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import clean_env

APP = """
from pydantic import BaseModel
import keel


class Ticket(BaseModel):
    category: str


classifier = keel.Agent("classifier", "classify the ticket", output=Ticket)
"""


def doctor(tmp_path: Path, load: str) -> tuple[int, dict[str, Any]]:
    path = os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    env = clean_env(KEEL_LOAD_PLUGINS=load, PYTHONPATH=path)
    done = subprocess.run(
        [sys.executable, "-m", "keel.cli", "doctor", "--json"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
    )  # fmt: skip
    assert done.stdout, done.stderr
    return done.returncode, {row["row"]: row for row in json.loads(done.stdout)["rows"]}


def test_the_real_plugins_turn_warnings_into_passes(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "keel.toml").write_text('runnables = ["app:classifier"]\n')
    code, rows = doctor(tmp_path, "")
    assert code == 0
    for name in ("proactive", "state", "recovery", "observability", "regression"):
        assert rows[name]["status"] == "warn", rows[name]

    (tmp_path / "keel.toml").write_text(
        'store = "sqlite"\nrunnables = ["app:classifier"]\n'
        "[budgets]\ntokens = 20000\nmodel_requests = 10\n[calls.runnables.classifier]\ntimeout = 60\n"
    )
    (tmp_path / "evals").mkdir()
    (tmp_path / "evals" / "classifier.yaml").write_text("name: classifier\nrunnable: classifier\ncases: []\n")
    code, rows = doctor(tmp_path, "sqlite,scheduler,devtools,eval,triggerflow")
    checked = {name: row for name, row in rows.items() if row["checks"][0]["name"] != "unchecked"}
    assert {name: row["status"] for name, row in checked.items()} == dict.fromkeys(checked, "pass"), checked
    assert code == 0
    assert "devtools" in rows["observability"]["checks"][0]["evidence"][0]
    assert rows["recovery"]["checks"][0]["evidence"][1].startswith("executions adopted after a restart by:")
    assert rows["proactive"]["checks"][0]["evidence"][0].startswith("plugin 'scheduler' is loaded")
    assert rows["governance"]["status"] == "pass" and rows["regression"]["status"] == "pass", rows["regression"]
    assert [c["name"] for c in rows["regression"]["checks"]] == ["keel.regression", "eval.datasets"]
    assert not (tmp_path / ".keel").exists(), "doctor opened the SQLite store: it must start nothing"
