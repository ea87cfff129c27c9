"""With keel-scheduler and keel-runner-temporal both installed (their real entry points), both
workers are reachable: `keel worker` is the scheduler's job worker, `keel worker --runner temporal`
the Temporal worker, and `keel plugins` reports no command conflict (issues 14 and 21)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import clean_env

KEEL = str(Path(sys.executable).parent / "keel")


def keel(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [KEEL, *args], cwd=cwd, env=clean_env(**env), capture_output=True, text=True, timeout=120, check=False
    )


def test_both_workers_are_reachable_with_both_plugins_installed(tmp_path: Path) -> None:
    both = {"KEEL_LOAD_PLUGINS": "scheduler,triggerflow,runner-temporal", "KEEL_STRICT_PLUGINS": "1"}
    listed = keel("plugins", cwd=tmp_path, **both)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "registered twice" not in listed.stdout + listed.stderr
    helped = keel("--help", cwd=tmp_path, **both)
    assert "[--runner jobs|temporal]" in helped.stdout
    jobs = keel("worker", "--help", cwd=tmp_path, **both)
    assert jobs.returncode == 0 and "Usage: keel worker --runner jobs" in jobs.stdout
    assert "--concurrency" in jobs.stdout
    temporal = keel("worker", "--runner", "temporal", "--help", cwd=tmp_path, **both)
    assert temporal.returncode == 0 and "Run a Temporal worker" in temporal.stdout
    unknown = keel("worker", "--runner", "local", cwd=tmp_path, **both)
    assert unknown.returncode == 2 and "no kind 'local'" in unknown.stderr
    assert "jobs (plugin 'scheduler'), temporal (plugin 'runner-temporal')" in unknown.stderr
    # the scheduler alone: its job worker; the temporal runner alone: --runner temporal still works
    alone = keel("worker", "--help", cwd=tmp_path, KEEL_LOAD_PLUGINS="scheduler")
    assert alone.returncode == 0 and "Usage: keel worker [OPTIONS]" in alone.stdout
    temporal_alone = keel(
        "worker", "--runner", "temporal", "--help", cwd=tmp_path, KEEL_LOAD_PLUGINS="triggerflow,runner-temporal"
    )
    assert temporal_alone.returncode == 0 and "Run a Temporal worker" in temporal_alone.stdout
