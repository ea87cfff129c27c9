"""Figure 9, adversarial answers (issue 15): what one hostile model answer costs the runtime.

**9a, one figure per hostile shape** — whitespace in one chunk, 10,000-deep nesting, a number as
long as the answer, a truncated answer — each at 10 kB, 100 kB and 1 MB, arriving in ONE chunk
(``stream=false``, or a driver that buffers the whole answer). Number: ms at 1 MB. Extras per size:
``ms_*``, ``peak_mb_*`` (tracemalloc peak of Python allocations, measured in a second pass),
``linearity`` = (time at 1 MB / time at 100 kB) / 10 (1 = linear, 10 = quadratic) and
``outcome_1m`` (what the side made of it). Times are the CPU time of the measuring process
(``time.process_time``, best of 3 when a run is short): the machine is shared, and its wall clock
carries the other tenants' load (``wall_ms_*`` extras keep it).

- keel: what an agent does with the answer, minus the event loop: ``InstantParser(limits, root)``
  fed the whole text, ``finish()``, then ``OutputContract.check(text, parsed=parser)`` (strict
  parse, then the linear repair from the same parse, then validation), all under the DEFAULT
  ``keel.OutputLimits`` — so the deep and the long-number shapes end in ``OutputLimitExceeded``
  within the first few hundred characters, which is the point. ``raised_*`` extras: the same shape
  parsed with the limits raised out of the way (``max_depth=10**6``...), to show the parser itself
  stays linear in time when a user does raise them (time only: its memory is then the events it
  returns, one per value; kernel/tests/test_adversarial.py checks the parser's own memory is
  linear in the depth).
- jiter: ``jiter.from_json(text, partial_mode="trailing-strings")`` (jiter README, "partial mode";
  the way the openai SDK and PydanticAI read partial JSON), in its own venv. It parses only; it
  finds no JSON inside prose and repairs nothing else.
- json_repair: ``json_repair.loads(text)`` alone (the README's one call), the version Keel depends
  on, in the workspace venv. Each call is capped at ``REPAIR_CAP_S`` (SIGALRM): a capped size
  reports the cap, and the outcome says ``capped``.

**9b, stall**: in one runtime, execution A gets a hostile 1 MB answer in one chunk (each shape in
turn) while execution B streams a normal answer (8-character chunks, 1 ms apart). Number: the worst
gap, in ms, between two wake-ups of a task that sleeps 1 ms in a loop (the event loop's worst stall)
while A runs. Target < 50 ms. ``baseline_stall_ms``: the same measurement when A's answer is a
normal one (best of 3): the stalls the machine itself causes (other tenants, the OS scheduler).

**9c, soak**: 10,000 executions, each a 5 kB answer in 16-character chunks, 50 at a time, every one
kept by the runtime's registry (default bounds). Number: the process's peak RSS, MB. Target < 500.

Targets (issue 15): every shape linear within 1.5x of the ratio of sizes, under 1 s and 100 MB at
1 MB; worst stall < 50 ms; soak RSS < 500 MB.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Figure, Side, extra_at_most, keel_below, main_for

SIZES = [10_000, 100_000, 1_000_000]
SHAPES = ["whitespace", "deep", "number", "truncated"]
REPAIR_CAP_S = 10
ROUNDS = 3  # keel + jiter take seconds a round; json_repair up to ~2 x REPAIR_CAP_S a shape

# Builds the hostile text of ARGS["shape"] at a size; shared by every side.
TEXTS = """
def hostile(shape, size):
    head = '{"title": "t", "tags": ["a"], '
    if shape == "whitespace":
        return head + '"n": 1' + " " * (size - len(head) - 7) + "}"
    if shape == "deep":
        depth = min(10_000, (size - 60) // 2)
        nest = "[" * depth + "]" * depth
        count = max(1, (size - 60) // (len(nest) + 1))
        return head + '"tree": [' + ",".join([nest] * count) + "]}"
    if shape == "number":
        return head + '"n": ' + "7" * (size - len(head) - 6) + "}"
    if shape == "truncated":
        item = '{"name": "widget %d", "qty": %d, "note": "a line of an order that was cut off"}'
        items, total, i = [], len(head) + 12, 0
        while total < size + 200:
            items.append(item % (i, i))
            total += len(items[-1]) + 2
            i += 1
        return (head + '"items": [' + ", ".join(items))[:size]
    raise ValueError(shape)

LABELS = {10_000: "10k", 100_000: "100k", 1_000_000: "1m"}

def measure(run, sizes, shape, memory=True):
    import gc, tracemalloc
    texts = {size: hostile(shape, size) for size in sizes}
    run(texts[sizes[0]])  # warm-up: imports and caches
    extra = {}
    for size in sizes:
        best, wall = None, None
        for _ in range(3):  # best of 3; one run when a run takes seconds
            gc.collect()
            t0, w0 = _time.process_time(), _time.perf_counter()
            outcome = run(texts[size])
            cpu, took = _time.process_time() - t0, _time.perf_counter() - w0
            best, wall = min(best or cpu, cpu), min(wall or took, took)
            if took > 0.5:
                break
        extra["ms_" + LABELS[size]] = best * 1000.0
        extra["wall_ms_" + LABELS[size]] = wall * 1000.0
        extra["outcome_" + LABELS[size]] = outcome
    for size in sizes if memory else ():
        gc.collect()
        tracemalloc.start()
        run(texts[size])
        extra["peak_mb_" + LABELS[size]] = tracemalloc.get_traced_memory()[1] / 1e6
        tracemalloc.stop()
    big, mid = extra["ms_1m"], extra["ms_100k"]
    extra["linearity"] = (big / mid) / 10 if mid > 0 else None
    if memory:
        extra["peak_mb"] = extra["peak_mb_1m"]
    return big, extra
"""

KEEL = (
    TEXTS
    + """
try:
    import keel
    from keel.instant import InstantParser, OutputLimits
except ImportError as err:
    not_built(f"{err}")
try:
    OutputLimits()
except Exception as err:
    not_built(f"{err}")
CONTRACT = keel.OutputContract.of({
    "title": ("str", ""), "tags": ("list[str]", ""), "n": ("int?", ""), "tree": ("any?", ""),
    "items": ("list[dict]?", ""),
})
RAISED = OutputLimits(max_chars=10**8, max_depth=10**6, max_number_chars=4_300, max_string_chars=10**8)

def run(text, limits=None):
    limits = limits or CONTRACT.limits
    parser = InstantParser(limits=limits, root=CONTRACT.root)
    try:
        parser.feed(text)
        parser.finish()
        check = CONTRACT.check(text, parsed=parser)
    except keel.OutputLimitExceeded as err:
        return f"OutputLimitExceeded({err.limit})"
    except keel.KeelError as err:
        return type(err).__name__
    return ("repaired " if check.repaired else "") + ("valid" if check.ok else "invalid")

def parse_only(text):
    parser = InstantParser(limits=RAISED, root="object")
    try:
        parser.feed(text)
        parser.finish()
    except keel.OutputLimitExceeded as err:
        return f"OutputLimitExceeded({err.limit})"
    return "parsed" if parser.done else ("partial" if not parser.failed else "failed")

value, extra = measure(run, ARGS["sizes"], ARGS["shape"])
raised_value, raised = measure(parse_only, ARGS["sizes"], ARGS["shape"], memory=False)
extra.update({"raised_" + k: v for k, v in raised.items()})
emit(value, **extra)
"""
)

JITER = (
    TEXTS
    + """
import jiter
def run(text):
    try:
        jiter.from_json(text.encode(), partial_mode="trailing-strings")
    except ValueError as err:
        return "ValueError: " + str(err)[:60]
    return "parsed"
value, extra = measure(run, ARGS["sizes"], ARGS["shape"])
emit(value, **extra)
"""
)

JSON_REPAIR = (
    TEXTS
    + """
import signal
import json_repair
CAP = ARGS["cap"]
class Capped(Exception):
    pass
def _alarm(signum, frame):
    raise Capped()
signal.signal(signal.SIGALRM, _alarm)
def run(text):
    signal.setitimer(signal.ITIMER_REAL, CAP)
    try:
        json_repair.loads(text)
        return "repaired"
    except Capped:
        return f"capped at {CAP} s"
    except (ValueError, RecursionError) as err:
        return type(err).__name__
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
value, extra = measure(run, ARGS["sizes"], ARGS["shape"])
emit(value, **extra)
"""
)

STALL = (
    TEXTS
    + """
try:
    import anyio
    import keel
    from keel.testing import Reply, ScriptedModel, make_host
    keel.OutputLimits
except (ImportError, AttributeError) as err:
    not_built(f"{err}")
import json
STEADY = json.dumps({"title": "steady", "tags": ["word"] * 300})
AGENT = keel.Agent("stall", "x", output={
    "title": ("str", ""), "tags": ("list[str]", ""), "n": ("int?", ""), "tree": ("any?", ""),
    "items": ("list[dict]?", ""),
}, max_retries=0)

async def one(shape):
    text = hostile(shape, 1_000_000) if shape != "baseline" else STEADY
    def respond(request):
        if request.messages[-1].content == "hostile":
            return Reply(text, chunks=len(text))
        return Reply(STEADY, chunks=8, delay=0.001)
    async with keel.Runtime(make_host(), keel.Stack()) as runtime:
        runtime.use_model(ScriptedModel(respond))
        worst = 0.0
        done = anyio.Event()
        async def ticker():
            nonlocal worst
            last = _time.perf_counter()
            while not done.is_set():
                await anyio.sleep(0.001)
                now = _time.perf_counter()
                worst = max(worst, now - last)
                last = now
        async with anyio.create_task_group() as group:
            group.start_soon(ticker)
            steady = await AGENT.start("steady", runtime=runtime)
            hostile_run = await AGENT.start("hostile", runtime=runtime)
            try:
                await hostile_run.get_data()
                outcome = "valid"
            except keel.KeelError as err:
                outcome = type(err).__name__
            await steady.get_data()
            done.set()
        return worst * 1000.0, outcome

baseline = min(anyio.run(one, "baseline")[0] for _ in range(3))  # the machine's own stalls: no hostile answer
results = {shape: anyio.run(one, shape) for shape in ARGS["shapes"]}
emit(max(ms for ms, _ in results.values()),
     baseline_stall_ms=baseline,
     **{f"stall_ms_{s}": ms for s, (ms, _) in results.items()},
     **{f"outcome_{s}": o for s, (_, o) in results.items()})
"""
)

SOAK = """
import json, resource
try:
    import anyio
    import keel
    from keel.testing import ScriptedModel, make_host
    keel.OutputLimits
except (ImportError, AttributeError) as err:
    not_built(f"{err}")
ANSWER = json.dumps({"title": "soak", "body": "lorem ipsum dolor sit amet " * 180, "tags": ["a", "b", "c"]})
AGENT = keel.Agent("soak", "x", output={"title": ("str", ""), "body": ("str", ""), "tags": ("list[str]", "")})

async def main():
    async with keel.Runtime(make_host(), keel.Stack()) as runtime:
        runtime.use_model(ScriptedModel(lambda request: ANSWER, chunks=16))
        total, batch = ARGS["executions"], 50
        for start in range(0, total, batch):
            executions = [await AGENT.start("go", runtime=runtime) for _ in range(batch)]
            for execution in executions:
                await execution.get_data()
        registry = runtime.executions
        return len(registry.list()), registry.finished_bytes

kept, kept_bytes = anyio.run(main)
rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
emit(rss_mb, kept=kept, kept_mb=kept_bytes / 2**20, answer_chars=len(ANSWER), executions=ARGS["executions"])
"""


def shape_figure(shape: str) -> Figure:
    return Figure(
        figure=f"adversarial.{shape}",
        group="9. adversarial answers",
        title=f"hostile answer, {shape}, in one chunk: ms at 1 MB (10 kB / 100 kB in extras)",
        unit="ms",
        target="linear within 1.5x of the size ratio; < 1 s and < 100 MB at 1 MB (issue 15)",
        rules=[keel_below(1000.0), extra_at_most("linearity", 1.5), extra_at_most("peak_mb", 100.0)],
        rounds=ROUNDS,
        args={"shape": shape, "sizes": SIZES, "cap": REPAIR_CAP_S},
        sides=[
            Side(
                "keel", "keel", code=KEEL, how="InstantParser.feed + OutputContract.check(parsed=...), default limits"
            ),
            Side("jiter", "openai", code=JITER, how='jiter.from_json(text, partial_mode="trailing-strings")'),
            Side(
                "json_repair",
                "keel",
                code=JSON_REPAIR,
                how=f"json_repair.loads(text) alone, capped at {REPAIR_CAP_S} s a call",
                timeout=600.0,
            ),
        ],
        notes=[
            "keel's number is the agent's path under the default OutputLimits (a limit ends the deep and "
            "number shapes early, by design); raised_* extras parse the same text with the limits raised",
            "jiter parses only (no prose, no repair); json_repair alone repairs, capped per call",
        ],
    )


def figures() -> list[Figure]:
    return [
        *[shape_figure(shape) for shape in SHAPES],
        Figure(
            figure="adversarial.stall",
            group="9. adversarial answers",
            title="worst event-loop stall while one execution takes a hostile 1 MB answer in one chunk",
            unit="ms",
            target="another execution keeps streaming: worst stall < 50 ms (issue 15)",
            rules=[keel_below(50.0)],
            rounds=ROUNDS,
            args={"shapes": SHAPES},
            sides=[Side("keel", "keel", code=STALL, how="two executions in one Runtime, a 1 ms ticker")],
            notes=[
                "the machine is shared (load average 9-15 on 2 cores while this ran): baseline_stall_ms is "
                "the same ticker with no hostile answer",
                "the truncated shape's worst gaps are CPython's full (generation 2) garbage collections over "
                "the ~60k instant events and values a 1 MB answer of small fields creates (100-150 ms each at "
                "this load, seen with gc.callbacks); parsing runs in 4 kB slices and checking and compaction "
                "in worker threads, so no single step of Keel's holds the loop that long",
            ],
        ),
        Figure(
            figure="adversarial.soak",
            group="9. adversarial answers",
            title="10,000 executions with 5 kB answers, all kept by the registry: peak RSS",
            unit="MB",
            target="process RSS < 500 MB (issue 15)",
            rules=[keel_below(500.0)],
            rounds=1,
            args={"executions": 10_000},
            sides=[Side("keel", "keel", code=SOAK, how="Agent.start x 10,000, 50 at a time, ScriptedModel")],
        ),
    ]


def main() -> None:
    main_for(figures)


if __name__ == "__main__":
    main()
