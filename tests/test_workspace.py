"""The workspace venv: `keel plugins` lists every first-party plugin under plugins/ and contrib/."""

from __future__ import annotations

import json
import subprocess
import tomllib

from conftest import BIN, ROOT, clean_env


def first_party_entry_points() -> set[str]:
    names = set()
    for pyproject in [*ROOT.glob("plugins/*/pyproject.toml"), *ROOT.glob("contrib/*/pyproject.toml")]:
        if pyproject.parent.name == "plugin-template":
            continue  # a third-party example, deliberately not installed in the workspace
        project = tomllib.loads(pyproject.read_text())["project"]
        names |= set(project.get("entry-points", {}).get("keel", {}))
    return names


def test_every_first_party_plugin_is_loaded() -> None:
    result = subprocess.run(
        [str(BIN / "keel"), "plugins", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(KEEL_STRICT_PLUGINS="1"),
    )
    assert result.returncode == 0, result.stderr
    loaded = {p["name"] for p in json.loads(result.stdout) if p["status"] == "loaded"}
    assert first_party_entry_points() <= loaded
    assert "template" not in loaded
