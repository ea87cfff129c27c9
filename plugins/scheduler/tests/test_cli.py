"""The commands, in process, over a stack whose [settings.scheduler] points at a SQLite file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from keel.cli import build_cli
from keel.stack import load_stack
from keel.testing import make_host
from keel_scheduler import DuplicateJob, ScheduleSpecError
from keel_scheduler import plugin as scheduler_plugin

TASKS = """
from keel_scheduler import task

@task
async def echo(input):
    return {"echo": input}
"""


@pytest.fixture
def keel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    (tmp_path / "cli_tasks.py").write_text(TASKS)
    (tmp_path / "keel.toml").write_text(
        'runnables = ["cli_tasks:echo"]\n[settings.scheduler]\ndatabase = "jobs.db"\npoll_interval = 0.05\n'
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    cli = build_cli(make_host(scheduler_plugin), load_stack(tmp_path / "keel.toml"))

    def run(*args: str) -> object:
        result = CliRunner().invoke(cli, list(args), catch_exceptions=True)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        assert result.exit_code == 0, result.output
        if "--json" not in args:
            return result.output
        lines = result.output.splitlines()
        return [json.loads(line) for line in lines] if args[0] in ("worker", "scheduler") else json.loads(result.output)

    return run


def test_queue_add_worker_ls_show_retry_purge(keel) -> None:  # type: ignore[no-untyped-def]
    added = keel("queue", "add", "echo", "--input", '{"n": 1}', "--dedup-key", "k1", "--json")
    again = keel("queue", "add", "echo", "--input", '{"n": 2}', "--dedup-key", "k1", "--json")
    assert again["id"] == added["id"]
    with pytest.raises(DuplicateJob, match="already exists"):
        keel("queue", "add", "echo", "--dedup-key", "k1", "--reject-duplicate")
    missing = keel("queue", "add", "nobody", "--max-attempts", "1", "--json")
    out = keel("worker", "--drain", "--json")
    events = out  # one JSON object per line
    assert {(e["event"], e.get("job")) for e in events} >= {("completed", added["id"]), ("failed", missing["id"])}
    shown = keel("queue", "show", added["id"], "--json")
    assert shown["status"] == "completed" and shown["result"] == {"echo": {"n": 1}}
    assert [j["status"] for j in keel("queue", "ls", "--status", "failed", "--json")] == ["failed"]
    assert keel("queue", "retry", missing["id"], "--json")["status"] == "queued"
    assert keel("queue", "cancel", missing["id"], "--json")["status"] == "cancelled"
    assert keel("queue", "purge", "--json") == {"purged": 2}
    assert keel("queue", "ls", "--json") == []


def test_schedule_commands(keel) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ScheduleSpecError, match="'cron'"):
        keel("schedule", "add", "bad", "--task", "echo", "--cron", "99 * * * *")
    with pytest.raises(ScheduleSpecError, match="'timezone'"):
        keel("schedule", "add", "bad", "--task", "echo", "--cron", "* * * * *", "--timezone", "Nowhere/City")
    added = keel(
        "schedule", "add", "nightly", "--task", "echo", "--cron", "30 2 * * *", "--timezone", "Europe/Berlin", "--json"
    )
    assert added["id"] == "nightly" and added["next_fire"] and not added["paused"]
    assert keel("schedule", "pause", "nightly", "--json")["paused"]
    assert not keel("schedule", "resume", "nightly", "--json")["paused"]
    assert [s["id"] for s in keel("schedule", "ls", "--json")] == ["nightly"]
    filled = keel(
        "schedule",
        "backfill",
        "nightly",
        "--start",
        "2026-03-27T00:00+01:00",
        "--end",
        "2026-04-01T00:00+02:00",
        "--json",
    )
    assert len(filled) == 5
    job = keel("schedule", "trigger", "nightly", "--json")
    assert job["id"].startswith("nightly@manual-")
    assert keel("schedule", "show", "nightly", "--json")["spec"]["timezone"] == "Europe/Berlin"
    keel("schedule", "rm", "nightly")
    assert keel("schedule", "ls", "--json") == []
