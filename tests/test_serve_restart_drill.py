"""The restart drill: a real `keel serve` over SQLite, killed at random points (SIGTERM and
SIGKILL mixed) while flows with a fan-out, keyed effects and a wait run; restarted each time.

Every execution completes, no keyed effect happens twice, no answer is lost, and every execution
stays reachable over HTTP across restarts. A SIGTERM ends the server with exit code 0, within its
grace period (a bound with a wide margin that fails only on a hang; the measured times go to the
record, never into an assertion). The number of kill points is bounded (KEEL_DRILL_KILLS, default
8); KEEL_DRILL_RECORD=FILE writes what the drill saw (kills, SIGTERM exit times) as JSON, for
bench/results/."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from conftest import clean_env

GRACE = 5.0  # `keel serve --grace`: how long a SIGTERM lets running steps finish
HANG = 30.0  # past grace + this, a SIGTERM'd server is hung (not slow): the drill fails

FLOW = '''
import json, os, time
from pathlib import Path
from keel_triggerflow import TriggerFlow

EFFECTS = Path(os.environ["DRILL_EFFECTS"])


def effect(key, what):
    """A keyed side effect: the outside system applies a key once (and counts every attempt)."""
    with open(EFFECTS / "attempts.log", "a") as log:
        log.write(key + "\\n")
    try:
        fd = os.open(EFFECTS / key.replace(":", "_").replace("/", "_"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return "already"
    os.write(fd, json.dumps(what).encode())
    os.close(fd)
    return "done"


async def draft(ctx):
    time.sleep(0.05)
    return {"topic": ctx.value["topic"]}


def branch(name):
    def run(ctx):
        time.sleep(0.1)
        effect(ctx.idempotency_key, name)
        return name
    run.__name__ = name
    return run


async def gate(ctx):
    return await ctx.pause_for("approve", {"message": "ship it?"})


async def ship(ctx):
    effect(ctx.idempotency_key, "ship")
    return {"shipped": ctx.value}


flow = TriggerFlow("drill")
flow.to(draft).batch(("a", branch("a")), ("b", branch("b")), ("c", branch("c"))).to(gate).to(ship)
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """A real `keel serve` in ``folder`` (its keel.toml), ready when /healthz answers."""

    def __init__(
        self, folder: Path, *, plugins: str = "sqlite,triggerflow,gateway", log: str = "serve.log", grace: float = GRACE
    ):
        self.grace = grace
        self.exit_seconds: float | None = None  # signal to exit, measured by stop()
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = clean_env(KEEL_LOAD_PLUGINS=plugins, DRILL_EFFECTS=str(folder / "effects"))
        env["PYTHONPATH"] = str(folder) + os.pathsep + env.get("PYTHONPATH", "")
        self.log_path = folder / log
        self.log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                *(str(Path(sys.executable).parent / "keel"), "serve", "--port", str(self.port)),
                *("--log-level", "warning", "--grace", str(grace)),
            ],
            cwd=folder,
            env=env,
            stdout=self.log,
            stderr=self.log,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert self.proc.poll() is None, self.log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "keel serve did not start"
            time.sleep(0.1)

    def stop(self, how: signal.Signals) -> int:
        """Send ``how`` and wait for the exit; its code. A server still alive ``HANG`` seconds past
        its grace period is hung: that fails (how long it took is in ``exit_seconds``)."""
        sent = time.monotonic()
        self.proc.send_signal(how)
        try:
            code = self.proc.wait(timeout=self.grace + HANG)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(
                f"keel serve still running {self.grace + HANG:.0f} s after {how.name} (grace {self.grace} s)\n"
                + self.log_path.read_text()[-3000:]
            ) from None
        self.exit_seconds = time.monotonic() - sent
        self.log.close()
        return code


def applied_effects(effects: Path) -> dict[str, int]:
    """How many times each execution's step applied its keyed effect (the attempt dropped)."""
    by_step: dict[str, int] = {}
    for path in effects.iterdir():
        if path.name.endswith(".log"):
            continue
        execution_id, step = path.name.split("_", 2)[0] + "_" + path.name.split("_", 2)[1], path.name.split("_", 2)[2]
        step = step.rsplit("_", 1)[0]  # drop the attempt
        by_step[f"{execution_id}/{step}"] = by_step.get(f"{execution_id}/{step}", 0) + 1
    return by_step


def _show(folder: Path, execution_id: str) -> str:
    """What `keel flow show` says (the error in full, for a failure message)."""
    env = clean_env(KEEL_LOAD_PLUGINS="sqlite,triggerflow", DRILL_EFFECTS=str(folder / "effects"))
    env["PYTHONPATH"] = str(folder) + os.pathsep + env.get("PYTHONPATH", "")
    keel = str(Path(sys.executable).parent / "keel")
    shown = subprocess.run([keel, "flow", "show", execution_id], cwd=folder, env=env, capture_output=True, text=True)
    return shown.stdout + shown.stderr


def test_restart_drill(tmp_path: Path) -> None:
    (tmp_path / "effects").mkdir()
    (tmp_path / "drillflow.py").write_text(FLOW)
    (tmp_path / "keel.toml").write_text(
        f'runnables = ["drillflow:flow"]\n[store]\ndriver = "sqlite"\npath = "{tmp_path / "s.db"}"\n'
    )
    rng = random.Random(int(os.environ.get("KEEL_DRILL_SEED", "23")))
    kills = int(os.environ.get("KEEL_DRILL_KILLS", "8"))
    ids: list[str] = []
    answered: set[str] = set()
    record: dict[str, Any] = {"kills": kills, "grace": GRACE, "sigterm_exit_seconds": [], "sigkill": 0}
    server = Server(tmp_path)
    for point in range(kills):
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for execution_id in ids:  # every execution stays reachable across restarts
                view = http.get(f"/v1/executions/{execution_id}")
                assert view.status_code == 200, (point, execution_id, view.text)
                if view.json()["status"] == "waiting" and rng.random() < 0.5:
                    answer = {"payload": execution_id, "request_id": f"ok-{execution_id}"}
                    sent = http.post(f"/v1/executions/{execution_id}/signals/approve", json=answer)
                    assert sent.status_code == 202, (point, sent.text)
                    answered.add(execution_id)
            started = http.post("/v1/runnables/drill/executions", json={"topic": f"t{point}"})
            assert started.status_code == 202, started.text
            ids.append(started.json()["id"])
        time.sleep(rng.uniform(0.0, 0.6))  # somewhere in the draft, the fan-out, the wait or the ship
        how = signal.SIGTERM if rng.random() < 0.5 else signal.SIGKILL
        code = server.stop(how)
        if how is signal.SIGTERM:
            assert code == 0, (tmp_path / "serve.log").read_text()[-3000:]
            record["sigterm_exit_seconds"].append(round(server.exit_seconds or 0.0, 3))
        else:
            record["sigkill"] += 1
        server = Server(tmp_path)

    # the last process answers every remaining wait; everything completes
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            deadline = time.monotonic() + 90
            pending = set(ids)
            while pending:
                assert time.monotonic() < deadline, (
                    f"not completed: {[http.get(f'/v1/executions/{e}').json() for e in pending]}\n"
                    + (tmp_path / "serve.log").read_text()[-3000:]
                )
                for execution_id in sorted(pending):
                    view = http.get(f"/v1/executions/{execution_id}")
                    assert view.status_code == 200, view.text
                    body: dict[str, Any] = view.json()
                    if body["status"] == "waiting":
                        answer = {"payload": execution_id, "request_id": f"ok-{execution_id}"}
                        sent = http.post(f"/v1/executions/{execution_id}/signals/approve", json=answer)
                        assert sent.status_code == 202, sent.text
                    elif body["status"] == "completed":
                        assert body["output"] == {"shipped": execution_id}, body  # the answer was not lost
                        pending.discard(execution_id)
                    else:
                        assert body["status"] == "running", (
                            f"{body}\n{_show(tmp_path, execution_id)}\n" + (tmp_path / "serve.log").read_text()[-4000:]
                        )
                time.sleep(0.1)
    finally:
        assert server.stop(signal.SIGTERM) == 0, (tmp_path / "serve.log").read_text()[-3000:]
        record["sigterm_exit_seconds"].append(round(server.exit_seconds or 0.0, 3))

    by_step = applied_effects(tmp_path / "effects")
    assert all(count == 1 for count in by_step.values()), by_step  # one key per step: never applied twice
    assert len(by_step) == 4 * len(ids), (len(by_step), len(ids))  # three branches and ship, each once
    if os.environ.get("KEEL_DRILL_RECORD"):
        attempts = (tmp_path / "effects" / "attempts.log").read_text().split()
        record.update(
            executions=len(ids),
            answered_before_the_end=len(answered),
            keyed_effects_applied=sum(by_step.values()),
            keyed_effect_attempts=len(attempts),  # a step re-run after a kill tries its key again
            steps_with_a_repeated_attempt=len(attempts) - len(set(attempts)),
        )
        Path(os.environ["KEEL_DRILL_RECORD"]).write_text(json.dumps(record, indent=2) + "\n")
