"""The commands, in process, over a stack whose [settings.scheduler] points at a SQLite file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from keel import NotFoundError
from keel import hookimpl as keel_hookimpl
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


class Kept:
    """A unit-test engine for keel_scheduler_schedules: schedules kept in a dict (keel-runner-temporal's
    is the real one, tested against Temporal's dev server in tests/test_scheduler_temporal.py)."""

    where = "the test's dict"

    def __init__(self) -> None:
        self.specs: dict[str, dict[str, object]] = {}

    @keel_hookimpl(optionalhook=True)
    def keel_scheduler_schedules(self, runtime: object) -> object:
        return self

    async def add(self, spec: dict[str, object], *, replace: bool = False) -> dict[str, object]:
        self.specs[str(spec["id"])] = spec
        return await self.get(str(spec["id"]))

    async def get(self, schedule_id: str) -> dict[str, object]:
        if schedule_id not in self.specs:
            raise NotFoundError(f"no schedule {schedule_id!r} in the dict")
        return {"schedule": self.specs[schedule_id], "paused": False, "runs": 0, "failures": 0, "skipped": 3,
                "last_fire": None, "next_fire": None, "created_at": 0.0}  # fmt: skip

    async def list(self) -> list[dict[str, object]]:
        return [await self.get(i) for i in sorted(self.specs)]

    async def remove(self, schedule_id: str) -> None:
        await self.get(schedule_id)
        del self.specs[schedule_id]

    async def trigger(self, schedule_id: str) -> dict[str, object]:
        return {"schedule": schedule_id, "on": "the dict"}


def test_a_plugin_that_keeps_the_schedules_gets_the_schedule_commands(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "cli_tasks.py").write_text(TASKS)
    (tmp_path / "keel.toml").write_text('runnables = ["cli_tasks:echo"]\n[settings.scheduler]\ndatabase = "jobs.db"\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    kept = Kept()
    cli = build_cli(make_host(scheduler_plugin, kept), load_stack(tmp_path / "keel.toml"))

    def run(*args: str) -> object:
        result = CliRunner().invoke(cli, list(args))
        return json.loads(result.output) if result.exit_code == 0 and "--json" in args else result

    with pytest.raises(ScheduleSpecError, match="'cron'"):  # keel-scheduler validates before the engine sees it
        raise run("schedule", "add", "bad", "--task", "echo", "--cron", "99 * * * *").exception  # type: ignore[union-attr]
    added = run("schedule", "add", "nightly", "--task", "echo", "--every", "60", "--overlap", "skip", "--json")
    assert added["skipped"] == 3 and kept.specs["nightly"]["overlap"] == "skip"  # type: ignore[index]
    assert [s["id"] for s in run("schedule", "ls", "--json")] == ["nightly"]  # type: ignore[index, union-attr]
    assert run("schedule", "trigger", "nightly", "--json") == {"schedule": "nightly", "on": "the dict"}
    refused = run("scheduler")
    assert refused.exit_code == 2 and "kept and fired by the test's dict" in refused.output  # type: ignore[union-attr]
    run("schedule", "rm", "nightly")
    missing = run("schedule", "show", "nightly")
    assert "no schedule 'nightly' in the dict" in str(missing.exception)  # type: ignore[union-attr]
    assert not (tmp_path / "jobs.db").exists()  # nothing went to keel-scheduler's own tables


async def test_schedules_for_gives_application_code_the_stack_s_schedules(tmp_path: Path) -> None:
    """Application code that adds a schedule reaches the engine that fires it, not tables nobody ticks."""
    import keel
    from keel_scheduler import EngineSchedules, Queue, Schedules, schedules_for

    kept = Kept()
    async with Queue(str(tmp_path / "jobs.db")) as queue:
        on_engine = schedules_for(keel.Runtime(make_host(scheduler_plugin, kept)), queue)
        assert isinstance(on_engine, EngineSchedules)
        await on_engine.add({"id": "hourly", "task": "echo", "every": 3600})
        assert list(kept.specs) == ["hourly"] and await Schedules(queue).list() == []
        own = schedules_for(keel.Runtime(make_host(scheduler_plugin)), queue)
        assert isinstance(own, Schedules)
        await own.add({"id": "daily", "task": "echo", "every": 86400})
        assert [s.schedule.id for s in await own.list()] == ["daily"] and list(kept.specs) == ["hourly"]
