"""TriggerFlow durability on the real SQLite store, across real processes.

Crash drills: a worker process runs a flow of side-effecting steps and is SIGKILLed at a random
moment (several seeds, twice per seed); a new process resumes it by execution id. The result must
equal an uncrashed run's, no step completed in the history ever runs again, and every step's side
effect carries one idempotency key whatever the number of attempts to run it.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import clean_env

pytest.importorskip("keel_store_sqlite")
pytest.importorskip("keel_triggerflow")

from keel_store_sqlite.store import SqliteStore

WORKER = r"""
import json, os, random, sys, time
from pathlib import Path

import anyio
from keel import Runtime
from keel_triggerflow import LeaseError, TriggerFlow

here = Path(sys.argv[1])
mode, execution_id, generation = sys.argv[2], sys.argv[3], sys.argv[4]
STEPS = 24


def log(name, line):
    with open(here / name, "a") as f:  # one write per line: a kill never leaves half a line
        f.write(line + "\n")


def make(i):
    async def step(ctx):
        log("runs.log", f"{generation} {ctx.path}")
        await anyio.sleep(random.uniform(0, 0.02))
        log("effects.log", f"{ctx.path} {ctx.idempotency_key}")  # the side effect, keyed
        ctx.state.set("total", ctx.value)
        return ctx.value + i
    step.__name__ = f"step{i}"
    return step


flow = TriggerFlow("drill", reducers={"total": "last"})
flow.to(make(0)).batch(*[(f"b{i}", make(100 + i)) for i in range(4)]).to(lambda ctx: sum(ctx.value.values()))
for i in range(1, STEPS):
    flow.to(make(i))


async def main():
    async with Runtime.from_stack(here / "keel.toml") as runtime:
        for _ in range(100):  # a killed owner's lease expires after lease_ttl
            try:
                if mode == "resume":
                    execution = await flow.load(execution_id, runtime, lease_ttl=1.0)
                else:
                    execution = flow.create_execution(runtime, execution_id=execution_id, lease_ttl=1.0)
                snapshot = await execution.run(0)
                break
            except LeaseError:
                await anyio.sleep(0.1)
        (here / f"result-{generation}.json").write_text(json.dumps(snapshot.result))

anyio.run(main)
"""


def _setup(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "keel.toml").write_text(f'[store]\ndriver = "sqlite"\npath = "{folder / "keel.db"}"\n')
    worker = folder / "worker.py"
    worker.write_text(WORKER)
    return worker


def _env() -> dict[str, str]:
    return clean_env(KEEL_LOAD_PLUGINS="sqlite,triggerflow")


def _start(worker: Path, mode: str, execution_id: str, generation: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(worker), str(worker.parent), mode, execution_id, str(generation)],
        env=_env(),
        stderr=subprocess.PIPE,
    )


async def _completed_paths(db: Path, execution_id: str) -> set[str]:
    store = SqliteStore(db)
    try:
        records = await store.read("default", f"triggerflow/{execution_id}")
    finally:
        await store.aclose()
    return {r.data["p"] for r in records if r.data["t"] == "c"}


def _history_counts(db: Path, execution_id: str) -> dict[str, int]:
    async def read() -> dict[str, int]:
        store = SqliteStore(db)
        try:
            records = await store.read("default", f"triggerflow/{execution_id}")
        finally:
            await store.aclose()
        counts: dict[str, int] = {}
        for r in records:
            if r.data["t"] == "c":
                counts[r.data["p"]] = counts.get(r.data["p"], 0) + 1
        return counts

    return anyio.run(read)


def _kill_after(proc: subprocess.Popen[bytes], runs: Path, generation: int, steps: int, delay: float) -> None:
    """SIGKILL the worker ``delay`` seconds after it started its ``steps``-th step (a random point
    inside a step, between steps or inside a history append), or let it finish if it gets there first."""
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        lines = runs.read_text().splitlines() if runs.exists() else []
        if sum(1 for line in lines if line.startswith(f"{generation} ")) >= steps:
            break
        time.sleep(0.002)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def expected(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The result of an uncrashed run."""
    worker = _setup(tmp_path_factory.mktemp("clean"))
    proc = _start(worker, "run", "clean-run", 0)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    return json.loads((worker.parent / "result-0.json").read_text())


@pytest.mark.parametrize("seed", range(6))
def test_crash_drill(tmp_path: Path, seed: int, expected: Any) -> None:
    rng = random.Random(seed)
    worker = _setup(tmp_path / "drill")
    execution_id = f"drill-{seed}"
    completed_before: dict[int, set[str]] = {}
    generation = 0
    for generation in range(2):  # two kills at random moments
        proc = _start(worker, "run" if generation == 0 else "resume", execution_id, generation)
        _kill_after(proc, worker.parent / "runs.log", generation, rng.randint(1, 12), rng.uniform(0, 0.02))
        if (worker.parent / "keel.db").exists():
            completed_before[generation + 1] = anyio.run(_completed_paths, worker.parent / "keel.db", execution_id)
    generation += 1
    final = _start(worker, "resume" if completed_before.get(generation) else "run", execution_id, generation)
    _, err = final.communicate(timeout=120)
    assert final.returncode == 0, err.decode()
    assert json.loads((worker.parent / f"result-{generation}.json").read_text()) == expected

    counts = _history_counts(worker.parent / "keel.db", execution_id)
    assert counts and set(counts.values()) == {1}, "a step completed twice in the history"
    runs = [line.split() for line in (worker.parent / "runs.log").read_text().splitlines()]
    for gen, done in completed_before.items():
        rerun = {path for g, path in runs if int(g) >= gen} & done
        assert not rerun, f"completed steps ran again after resume: {sorted(rerun)}"
    keys: dict[str, set[str]] = {}
    for line in (worker.parent / "effects.log").read_text().splitlines():
        path, key = line.split()
        keys.setdefault(path, set()).add(key)
    assert set(keys) == set(counts) - {"@2"}  # @2 is the join sum, with no side effect
    assert all(len(k) == 1 for k in keys.values()), "a step's side effect was keyed differently on a retry"


APPROVAL_FLOW = """
from keel_triggerflow import TriggerFlow

async def draft(ctx):
    return "draft: " + ctx.value["topic"]

async def gate(ctx):
    return await ctx.pause_for("approval", {"draft": ctx.value}, timeout=TIMEOUT)

async def publish(ctx):
    if not ctx.value.get("approved"):
        return {"published": False}
    return {"published": True}

flow = TriggerFlow("approve")
flow.to(draft).to(gate).to(publish)
"""


SKEWED_CLOCK = """
import time
from pathlib import Path

def now():
    skew = Path(__file__).with_name("skew")  # seconds the test moved this clock on
    return time.time() + (float(skew.read_text()) if skew.exists() else 0.0)
"""


def _keel(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "keel"), "flow", *args, "--json"],
        cwd=folder,
        env={**_env(), "PYTHONPATH": str(folder)},  # the stack's own modules (its clock), as a user installs them
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("answer", "timeout", "status", "result"),
    [
        ('{"approved": true}', "None", "completed", {"published": True}),
        ('{"approved": false}', "None", "completed", {"published": False}),
        (None, "3600", "failed", None),
    ],
    ids=["approve", "reject", "timeout"],
)
def test_approval_across_processes(tmp_path: Path, answer: str | None, timeout: str, status: str, result: Any) -> None:
    (tmp_path / "keel.toml").write_text('store = "sqlite"\n[runner]\ndriver = "local"\nclock = "skewed:now"\n')
    (tmp_path / "skewed.py").write_text(SKEWED_CLOCK)
    (tmp_path / "approve.py").write_text(APPROVAL_FLOW.replace("TIMEOUT", timeout))
    started = _keel(tmp_path, "run", "approve.py", "--input", '{"topic": "tides"}')
    assert started.returncode == 0, started.stderr
    waiting = json.loads(started.stdout)
    assert waiting["status"] == "waiting"
    assert waiting["pending_interrupts"][0]["payload"] == {"draft": "draft: tides"}
    execution_id = waiting["execution_id"]

    listed = json.loads(_keel(tmp_path, "ls").stdout)
    assert [row["status"] for row in listed if row["id"] == execution_id] == ["waiting"]
    if answer is None:
        # the hour passes while no process runs the flow: on the clock the stack names, not by sleeping
        (tmp_path / "skew").write_text("7200")
        done = _keel(tmp_path, "resume", execution_id)
    else:
        done = _keel(tmp_path, "signal", execution_id, "approval", answer, "--request-id", "r1")
    snapshot = json.loads(done.stdout)
    assert snapshot["status"] == status, done.stderr
    assert snapshot["result"] == result
    if answer is not None:
        again = _keel(tmp_path, "signal", execution_id, "approval", answer, "--request-id", "r1")
        assert again.returncode == 0, again.stderr  # the same request again: a no-op
        assert json.loads(again.stdout)["result"] == result
        other = _keel(tmp_path, "signal", execution_id, "approval", answer, "--request-id", "r2")
        assert other.returncode != 0 and "waits for no signal" in other.stderr  # nothing is waiting now
    shown = json.loads(_keel(tmp_path, "show", execution_id).stdout)
    assert shown["status"] == status


def test_cancel_from_the_command_line(tmp_path: Path) -> None:
    (tmp_path / "keel.toml").write_text('store = "sqlite"\n')
    (tmp_path / "approve.py").write_text(APPROVAL_FLOW.replace("TIMEOUT", "None"))
    execution_id = json.loads(_keel(tmp_path, "run", "approve.py", "--input", '{"topic": "x"}').stdout)["execution_id"]
    cancelled = json.loads(_keel(tmp_path, "cancel", execution_id).stdout)
    assert cancelled["status"] == "cancelled" and cancelled["pending_interrupts"] == []
    assert os.path.exists(tmp_path / ".keel")
