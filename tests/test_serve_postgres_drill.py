"""The two-server drill: two real `keel serve` processes over one PostgreSQL store.

Executions with a fan-out, keyed effects and a wait are started on either server, read and answered
through either (an answer sent to the server that does not run an execution goes to its inbox in
the store, for the owner). Then one server is killed (SIGKILL) mid-flow, and the other takes its
executions over once their leases expire; a second round restarts the killed one and stops the
other with SIGTERM. Every execution completes with its own answer, stays readable over HTTP from
every live server, and no keyed effect happens twice.

"Two processes never drive one execution" is checked twice: every chunk run is logged with its
process and its start and end, and no two processes' runs of one execution overlap in time (a
SIGKILLed server's unfinished run ends at its kill); and each execution's history in PostgreSQL
records every step, answer, start and end once (a deposed owner's writes are refused by the lease
fence, so a duplicate would mean two owners wrote)."""

from __future__ import annotations

import json
import os
import random
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import httpx
import pytest
from test_serve_restart_drill import FLOW, Server, applied_effects

HOST, PORT = "127.0.0.1", 5432
ADMIN_DSN = os.environ.get("KEEL_TEST_POSTGRES_ADMIN_DSN", f"postgresql://postgres@{HOST}:{PORT}/postgres")
LEASE_TTL = 6.0  # short, so that a takeover after a kill comes within seconds (heartbeat every 2 s)
SCHEMA = "drill"


@pytest.fixture(scope="module")
def pg_dsn() -> Iterator[str]:
    """A database of this module's own on the machine's PostgreSQL (fails, never skips, when down)."""
    name = f"keel_drill_{uuid.uuid4().hex[:10]}"

    async def admin(sql: str) -> None:
        try:
            conn = await asyncpg.connect(ADMIN_DSN, timeout=10)
        except (OSError, asyncpg.PostgresError) as err:
            pytest.fail(f"PostgreSQL is not answering on {HOST}:{PORT} ({err}); this drill needs the machine's server")
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    anyio.run(admin, f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@{HOST}:{PORT}/{name}"
    finally:
        anyio.run(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# the drill's flow, with a short lease and every chunk run logged (process, key, start, end)
RUNS_FLOW = FLOW.replace('flow = TriggerFlow("drill")', f'flow = TriggerFlow("drill", lease_ttl={LEASE_TTL})').replace(
    "def effect(key, what):",
    '''def logged(fn):
    """Log each run of a chunk: which process, which execution and step, when it started and ended."""
    import functools, inspect

    def line(ctx, edge):
        with open(EFFECTS / "runs.log", "a") as log:
            log.write(json.dumps([edge, os.getpid(), ctx.idempotency_key, time.time()]) + "\\n")

    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def run(ctx):
            line(ctx, "start")
            try:
                return await fn(ctx)
            finally:
                line(ctx, "end")
    else:
        @functools.wraps(fn)
        def run(ctx):
            line(ctx, "start")
            try:
                return fn(ctx)
            finally:
                line(ctx, "end")
    return run


def effect(key, what):''',
)
RUNS_FLOW = (
    RUNS_FLOW.replace("async def draft(ctx):", "@logged\nasync def draft(ctx):")
    .replace("async def ship(ctx):", "@logged\nasync def ship(ctx):")
    .replace("    run.__name__ = name\n    return run", "    run.__name__ = name\n    return logged(run)")
)


def _stack(folder: Path, dsn: str) -> None:
    (folder / "effects").mkdir()
    (folder / "drillflow.py").write_text(RUNS_FLOW)
    (folder / "keel.toml").write_text(
        f'runnables = ["drillflow:flow"]\n[store]\ndriver = "postgres"\ndsn = "{dsn}"\nschema = "{SCHEMA}"\n'
    )


def _serve(folder: Path, name: str) -> Server:
    return Server(folder, plugins="postgres,triggerflow,gateway", log=f"serve-{name}.log")


def _logs(folder: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-2500:]}" for p in sorted(folder.glob("serve-*.log")))


def _view(server: Server, execution_id: str) -> dict[str, Any]:
    view = httpx.get(f"{server.url}/v1/executions/{execution_id}", timeout=30)
    assert view.status_code == 200, (server.url, execution_id, view.text)  # reachable from every server
    body: dict[str, Any] = view.json()
    return body


def _answer(via: Server, execution_id: str) -> None:
    answer = {"payload": execution_id, "request_id": f"ok-{execution_id}"}
    sent = httpx.post(f"{via.url}/v1/executions/{execution_id}/signals/approve", json=answer, timeout=30)
    assert sent.status_code == 202, (via.url, sent.text)


def _start(servers: list[Server], count: int, tag: str) -> list[str]:
    ids = []
    for i in range(count):
        via = servers[i % len(servers)]
        started = httpx.post(f"{via.url}/v1/runnables/drill/executions", json={"topic": f"{tag}{i}"}, timeout=30)
        assert started.status_code == 202, started.text
        ids.append(started.json()["id"])
    return ids


def _settle(folder: Path, servers: list[Server], ids: list[str], rng: random.Random) -> None:
    """Until every execution waits, read it through every server; then answer about half of
    them, each through a random server (the one that runs it, or the other: through its inbox)."""
    deadline = time.monotonic() + 60
    for execution_id in ids:
        while not all(_view(server, execution_id)["status"] == "waiting" for server in servers):
            assert time.monotonic() < deadline, f"{execution_id} never waited\n{_logs(folder)}"
            time.sleep(0.1)
    for execution_id in ids:
        if rng.random() < 0.5:
            _answer(servers[rng.randrange(len(servers))], execution_id)


def _finish(folder: Path, servers: list[Server], ids: list[str], rng: random.Random) -> None:
    """Read every execution through every live server and answer its wait through a random one,
    until all completed; then every server shows each one completed with its own answer."""
    pending = set(ids)
    deadline = time.monotonic() + 120
    while pending:
        assert time.monotonic() < deadline, f"not completed in 120 s: {sorted(pending)}\n{_logs(folder)}"
        for execution_id in sorted(pending):
            views = [_view(server, execution_id) for server in servers]
            body = views[rng.randrange(len(views))]
            if body["status"] == "waiting":
                _answer(servers[rng.randrange(len(servers))], execution_id)
            elif body["status"] == "completed":
                assert body["output"] == {"shipped": execution_id}, body  # its own answer, not lost
                pending.discard(execution_id)
            else:
                assert body["status"] == "running", f"{body}\n{_logs(folder)}"
        time.sleep(0.2)
    for execution_id in ids:  # and every live server says so: a server's copy follows the store
        for server in servers:
            body = _view(server, execution_id)
            assert (body["status"], body.get("output")) == ("completed", {"shipped": execution_id}), (server.url, body)


def _round(
    folder: Path, live: Server, victim: Server, how: signal.Signals, rng: random.Random, killed: dict[int, float]
) -> list[str]:
    """Six executions over both servers, settled at their wait and half answered; two more
    started on ``victim``, which is then stopped with ``how`` while they draft or fan out (and the
    answered ones ship). ``live`` takes everything over and finishes it."""
    ids = _start([live, victim], 6, "")
    _settle(folder, [live, victim], ids, rng)
    late = _start([victim], 2, "late-")
    time.sleep(rng.uniform(0.05, 0.4))
    code = victim.stop(how)
    killed[victim.proc.pid] = time.time()  # dead by now: its open runs ended at the latest here
    assert code == (0 if how is signal.SIGTERM else -how), f"exit code {code}\n{_logs(folder)}"
    _finish(folder, [live], ids + late, rng)
    return ids + late


def _runs(folder: Path, killed: dict[int, float]) -> dict[str, list[tuple[int, float, float]]]:
    """Each execution's chunk runs: (process, start, end); a killed process's open run ends at its kill."""
    opened: dict[tuple[int, str], float] = {}
    runs: dict[str, list[tuple[int, float, float]]] = {}
    for line in (folder / "effects" / "runs.log").read_text().splitlines():
        edge, pid, key, at = json.loads(line)
        if edge == "start":
            opened[(pid, key)] = at
        else:
            runs.setdefault(key.split(":")[0], []).append((pid, opened.pop((pid, key)), at))
    for (pid, key), began in opened.items():
        assert pid in killed, f"process {pid} never finished its run of {key}, and it was not killed"
        runs.setdefault(key.split(":")[0], []).append((pid, began, killed[pid]))
    return runs


async def _histories(dsn: str, ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    conn = await asyncpg.connect(dsn)
    try:
        found = {}
        for execution_id in ids:
            rows = await conn.fetch(
                f"SELECT data FROM {SCHEMA}.log WHERE tenant = 'default' AND stream = $1 ORDER BY seq",
                f"triggerflow/{execution_id}",
            )
            found[execution_id] = [json.loads(row["data"]) for row in rows]
        return found
    finally:
        await conn.close()


def test_two_servers_over_one_postgres_store(tmp_path: Path, pg_dsn: str) -> None:
    _stack(tmp_path, pg_dsn)
    rng = random.Random(int(os.environ.get("KEEL_DRILL_SEED", "23")))
    killed: dict[int, float] = {}
    a, b = _serve(tmp_path, "a"), _serve(tmp_path, "b")
    try:
        first = _round(tmp_path, b, a, signal.SIGKILL, rng, killed)  # A is killed, B takes over
        a = _serve(tmp_path, "a2")
        second = _round(tmp_path, a, b, signal.SIGTERM, rng, killed)  # B stops (exit 0), A takes over
    finally:
        for server in (a, b):
            if server.proc.poll() is None:
                assert server.stop(signal.SIGTERM) == 0, _logs(tmp_path)

    ids = first + second
    by_step = applied_effects(tmp_path / "effects")
    assert all(count == 1 for count in by_step.values()), by_step  # no keyed effect twice
    assert len(by_step) == 4 * len(ids), (len(by_step), len(ids))  # three branches and ship, each once

    for execution_id, runs in _runs(tmp_path, killed).items():
        for pid, began, ended in runs:
            for other, began2, ended2 in runs:
                assert pid == other or ended <= began2 or ended2 <= began, (
                    f"processes {pid} and {other} both ran a step of {execution_id} at once: {runs}"
                )

    histories = anyio.run(_histories, pg_dsn, ids)
    (tmp_path / "histories.json").write_text(json.dumps(histories, indent=1))  # for a failure's reader
    for execution_id, records in histories.items():
        kinds = [r["t"] for r in records]
        assert kinds.count("start") == 1 and kinds.count("end") == 1, (execution_id, kinds)
        assert kinds.count("sig") == 1, (execution_id, records)  # the one answer, applied once
        steps = [r["p"] for r in records if r["t"] == "c"]
        assert len(steps) == len(set(steps)), (execution_id, steps)  # no step recorded by two owners
