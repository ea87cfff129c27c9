"""The examples' recorded executions replay against today's code with no divergence.

Each example runs as a user runs it (a subprocess, every installed plugin discovered, DevTools
recording to a file of the test's own); then its agents, imported from the same file, replay every
completed execution from that recording: recorded answers and tool results are served, nothing is
asked of a model and no action runs.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import anyio
import pytest
from conftest import ROOT, clean_env

import keel
from keel.testing import make_host
from keel_devtools import ExecutionFilter, Recording, RecordingDB, replay


def run_example(name: str, cwd: Path, db: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name)], cwd=cwd, capture_output=True, text=True, timeout=600,
        env=clean_env(KEEL_DEVTOOLS_DB=str(db)),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{Path(name).stem}", ROOT / "examples" / name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # the examples run only under __main__
    return module


def replay_completed(db: RecordingDB, module: ModuleType) -> list[str]:
    agents = [v for v in vars(module).values() if isinstance(v, keel.Agent)]
    actions = [v for v in vars(module).values() if isinstance(v, keel.ActionSpec)]
    rows, _ = db.page(ExecutionFilter(status="completed"), limit=1000)
    assert rows, "the example recorded no completed execution"
    replayed = []

    async def main() -> None:
        for row in rows:
            async with keel.Runtime(make_host(), keel.Stack()) as runtime:
                for spec in actions:
                    runtime.actions.add(spec)
                for agent in agents:
                    runtime.add(agent)
                result = await replay(Recording.from_db(db, row["id"]), runtime=runtime)
            assert result.ok, f"{row['runnable']} {row['id']}: {result.divergence}"
            replayed.append(row["runnable"])

    anyio.run(main)
    return replayed


@pytest.mark.parametrize(("example", "recording"), [("hello.py", None), ("devtools_record.py", ".keel/devtools.db")])
def test_an_examples_recorded_executions_replay_with_no_divergence(
    example: str, recording: str | None, tmp_path: Path
) -> None:
    db_path = tmp_path / "recorded.db"
    run_example(example, tmp_path, db_path)
    db = RecordingDB(tmp_path / recording if recording else db_path)
    replayed = replay_completed(db, load(example))
    assert replayed and set(replayed) == {"invoice"}
