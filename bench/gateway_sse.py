"""Figure 8a, gateway SSE fan-out: many concurrent SSE clients following executions (issue 9).

Workload, per round: a server process on 127.0.0.1 and a client process. The client starts ``E`` = 10
executions, then opens ``C`` = 200 concurrent SSE streams (20 per execution, scaled down from the
issue's 1,000: on 2 cores the client process itself would otherwise be what is measured), each
reading its execution's events from the start to the end of the stream. Checked: every client got
every event of its execution, sequence numbers 1..K with no gap. Number: wall time from the first
connection to the last stream's end divided by the events delivered, in microseconds per delivered
event (lower is better); events/s and the p99 delivery latency (client receive time minus the
event's own ``time`` stamp) are in the extras.

- keel: ``keel_gateway.create_app(runtime)`` served by uvicorn; the runnable is a ``keel.Agent`` on
  the scripted model answering a 3-field contract in 8-character chunks, 10 ms apart; clients
  follow ``GET /v1/executions/{id}/events`` (product events: started, progress, one
  ``task.partial`` per field delta, completed). Rate limits raised for the benchmark.
- fastapi_sse_starlette (the ceiling, its own venv): a bare FastAPI app, ``POST /start`` makes an
  in-memory event list that a task fills with the same number of events of the same size, 10 ms
  apart; ``GET /events/{id}`` is an ``EventSourceResponse`` (sse-starlette README) replaying from the
  start and following. No auth, no product-event mapping, no execution: the floor of what an SSE
  endpoint costs.

Target (issue 9): within 1.5x of the bare endpoint.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Figure, Side, main_for, ratio_at_most

ROUNDS = 3

CLIENT = """
import asyncio, subprocess, statistics, tempfile, pathlib
import httpx
E, C = ARGS["executions"], ARGS["clients"]
folder = pathlib.Path(tempfile.mkdtemp())
(folder / "server.py").write_text(SERVER)
(folder / "keel.toml").write_text('store = "memory"\\n')
proc = subprocess.Popen([_sys.executable, str(folder / "server.py"), str(folder / "keel.toml")],
                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
try:
    line = proc.stdout.readline().strip()
    assert line.startswith("listening "), line
    base = line.split(" ", 1)[1]
    async def follow(client, url, lat):
        seqs = []
        async with client.stream("GET", url) as resp:
            assert resp.status_code == 200, resp.status_code
            async for line in resp.aiter_lines():
                if line.startswith("data:"):
                    now = _time.time()
                    data = _json.loads(line[5:])
                    seqs.append(int(data["seq"]))
                    lat.append(now - float(data["time"]))
        return seqs
    async def main():
        limits = httpx.Limits(max_connections=C + 10, max_keepalive_connections=C + 10)
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120) as client:
            for _ in range(50):
                try:
                    await client.get(HEALTH)
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
            urls = [await START(client) for _ in range(E)]
            lat = []
            t0 = _time.perf_counter()
            results = await asyncio.gather(*(follow(client, urls[i % E], lat) for i in range(C)))
            elapsed = _time.perf_counter() - t0
        counts = set()
        for seqs in results:
            assert seqs == list(range(1, len(seqs) + 1)), seqs[:10]
            counts.add(len(seqs))
        assert len(counts) == 1, counts   # every client got every event
        total = sum(len(s) for s in results)
        lat.sort()
        emit(elapsed * 1e6 / total, events_per_s=total / elapsed, events_per_execution=counts.pop(),
             clients=C, executions=E, p99_latency_ms=lat[int(0.99 * (len(lat) - 1))] * 1000.0,
             median_latency_ms=statistics.median(lat) * 1000.0)
    asyncio.run(main())
finally:
    proc.terminate()
    proc.wait(timeout=10)
"""

KEEL = (
    """
try:
    import keel_gateway  # noqa: F401
    import keel, httpx, uvicorn  # noqa: F401
except ImportError as err:
    not_built(f"{err}")
SERVER = r'''
import json, socket, sys, keel, uvicorn
from keel.testing import ScriptedModel
from keel.testing.scripted import Reply
from keel_gateway import create_app
ANSWER = json.dumps({"title": "Quarterly report for the northern region",
                     "summary": "Revenue grew in every region while costs stayed flat over the quarter.",
                     "tags": ["revenue", "costs", "regions", "quarter"]})
rt = keel.Runtime.from_stack(sys.argv[1])
rt.use_model(ScriptedModel(lambda request: Reply(text=ANSWER, chunks=8, delay=0.01)))
rt.runnables.add(keel.Agent("bench", "Summarise.", output={"title": (str, "t"), "summary": (str, "s"), "tags": (list[str], "k")}))
app = create_app(rt, {"rate_limit_per_minute": 1e9, "rate_limit_burst": 1000000})
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
print(f"listening http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
uvicorn.Server(uvicorn.Config(app, log_level="error")).run(sockets=[sock])
'''
HEALTH = "/healthz"
async def START(client):
    r = await client.post("/v1/runnables/bench/executions", json="Summarise the report.")
    assert r.status_code in (200, 201, 202), (r.status_code, r.text)
    return r.json()["links"]["events"]
"""
    + CLIENT
)

CEILING = (
    """
SERVER = r'''
import asyncio, json, socket, sys, time, uuid
import uvicorn
from fastapi import FastAPI
from sse_starlette.sse import EventSourceResponse
K = 24   # events per execution, as many as Keel's product events for the same answer
app = FastAPI()
LOGS = {}
async def produce(eid):
    log = LOGS[eid]
    for seq in range(1, K + 1):
        await asyncio.sleep(0.01)
        data = {"type": "task.partial", "task_id": eid, "execution_id": eid, "tenant": "default", "seq": seq,
                "message": "", "percent": None, "data": {"field": "summary", "delta": "n every ", "value": "Revenue grew in every ",
                "complete": False}, "waiting_for": None, "time": time.time()}
        log["frames"].append({"id": str(seq), "event": data["type"], "data": json.dumps(data)})
        async with log["cond"]:
            log["cond"].notify_all()
    log["done"] = True
    async with log["cond"]:
        log["cond"].notify_all()
@app.get("/healthz")
async def health():
    return {"ok": True}
@app.post("/start")
async def start():
    eid = uuid.uuid4().hex
    LOGS[eid] = {"frames": [], "done": False, "cond": asyncio.Condition()}
    asyncio.get_running_loop().create_task(produce(eid))
    return {"id": eid, "links": {"events": f"/events/{eid}"}}
@app.get("/events/{eid}")
async def events(eid: str):
    log = LOGS[eid]
    async def gen():
        i = 0
        while True:
            frames = log["frames"]
            while i < len(frames):
                yield frames[i]
                i += 1
            if log["done"]:
                return
            async with log["cond"]:
                if i == len(log["frames"]) and not log["done"]:
                    await log["cond"].wait()
    return EventSourceResponse(gen())
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
print(f"listening http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
uvicorn.Server(uvicorn.Config(app, log_level="error")).run(sockets=[sock])
'''
HEALTH = "/healthz"
async def START(client):
    r = await client.post("/start")
    return r.json()["links"]["events"]
"""
    + CLIENT
)


def figures() -> list[Figure]:
    return [
        Figure(
            figure="gateway_sse",
            group="8. gateway SSE fan-out",
            title="200 concurrent SSE clients following 10 executions (scaled down from 1,000 clients)",
            unit="us/event",
            target="within 1.5x of a bare FastAPI + sse-starlette endpoint (issue 9)",
            rules=[ratio_at_most("fastapi_sse_starlette", 1.5)],
            rounds=ROUNDS,
            args={"executions": 10, "clients": 200},
            sides=[
                Side(
                    "keel",
                    "keel",
                    code=KEEL,
                    how="keel_gateway.create_app(runtime) + uvicorn, Agent on the scripted model",
                ),
                Side(
                    "fastapi_sse_starlette",
                    "fastapi_sse_starlette",
                    code=CEILING,
                    how="bare FastAPI + sse-starlette EventSourceResponse, same event count and size (the ceiling)",
                ),
            ],
            notes=[
                "clients scaled to 200 (issue: 1,000) for 2 cores; events per execution and p99 latency in the extras",
                "the ceiling sends 24 events per execution; Keel sends its own product events for the same answer",
            ],
        )
    ]


def main() -> None:
    main_for(figures)


if __name__ == "__main__":
    main()
