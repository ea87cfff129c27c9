"""`keel plugins` with every first-party plugin installed imports their entry modules and nothing else
of theirs: commands are added by reference (``KeelGroup.add_lazy_command``) and each package's
``__init__`` loads its heavy modules on first use, so every `keel` start stays cheap (bench/startup.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

# imported when their command runs (or their name is first used), never by discovery
NOT_AT_STARTUP = [
    "keel_triggerflow._engine",
    "keel_triggerflow._interpreter",
    "keel_triggerflow._journal",
    "keel_triggerflow._context",
    "keel_triggerflow.cli",
    "keel_devtools.cli",
    "keel_devtools.db",
    "keel_devtools.record",
    "keel_devtools.replayer",
    "keel_devtools.exchange",
    "keel_scheduler.cli",
    "keel_scheduler.schedules_cli",
    "keel_scheduler.intake_cli",
    "keel_eval.cli",
    "keel_workspace.cli",
    "keel_gateway.product",
    "keel_gateway.settings",
    "keel_gateway.app",
    "keel_source_nats.source",
    "keel_otel.observer",
]

PROBE = """
import json, sys
from keel.cli import main
try:
    main(["plugins"])
except SystemExit as exit:
    assert not exit.code, exit.code
print(json.dumps(sorted(m for m in sys.modules if m.startswith("keel_"))))
"""


def test_keel_plugins_imports_no_plugin_command_module(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "KEEL_STRICT_PLUGINS": "1"}  # every installed plugin, a broken one fails
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    imported = set(json.loads(done.stdout.strip().splitlines()[-1]))
    for entry in ("keel_triggerflow.plugin", "keel_devtools.plugin", "keel_scheduler.plugin", "keel_eval.plugin"):
        assert entry in imported, f"{entry} was not loaded: is the plugin installed? ({sorted(imported)})"
    assert not imported & set(NOT_AT_STARTUP), f"imported at start-up: {sorted(imported & set(NOT_AT_STARTUP))}"


def test_the_lazy_commands_still_run(tmp_path: Path) -> None:
    # by reference is not by accident missing: each command imports and answers --help
    for command in (["devtools"], ["replay"], ["queue"], ["schedule"], ["eval"], ["flow"], ["workspace"]):
        done = subprocess.run(
            [sys.executable, "-m", "keel.cli", *command, "--help"],
            capture_output=True, text=True, cwd=tmp_path, env={"PATH": "/usr/bin:/bin"}, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0 and "Usage:" in done.stdout, (command, done.stderr)
