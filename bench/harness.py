"""Shared machinery for Keel's benchmarks: peer venvs, subprocess workloads, rounds, results, report.

A figure script builds a :class:`Figure` (one measured quantity, its unit, the target rule from the
issue) with one :class:`Side` per framework, and calls :func:`run_figure`. The harness:

1. makes sure each peer's pinned venv exists under ``bench/.venvs/<venv>/`` (``uv venv`` +
   ``uv pip install``, re-made when the pins change);
2. runs every side in a fresh subprocess of its own venv (Keel in the workspace venv ``.venv/``),
   alternating sides round after round, so a slow minute of the machine hits everyone alike;
3. takes the median and spread (min, max, IQR) of each side, the ratio Keel/peer, and decides
   ``met`` from those numbers with the figure's declared :class:`Rule` list;
4. writes ``bench/results/<YYYY-MM-DD>-<figure>.json``; :func:`render_report` rebuilds
   ``bench/REPORT.md`` from the newest result of each figure.

A workload snippet is Python source run as a script. The harness prepends :data:`PRELUDE`, which
gives it ``emit(value, **extra)`` (report the measured number), ``not_built(reason)`` (the Keel side
cannot run yet) and ``ARGS`` (the figure's parameters, a dict). A side may also be a plain command
(``argv``) timed from outside, wall clock, as for cold start-up.

Pure logic (statistics, rules, result records, report rendering) has no side effects and is tested
by ``tests/test_bench_harness.py`` without any peer installed.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
VENVS = BENCH / ".venvs"
RESULTS = BENCH / "results"
REPORT = BENCH / "REPORT.md"
KEEL_PYTHON = ROOT / ".venv" / "bin" / "python"

NOT_BUILT_EXIT = 17  # a workload exits with this code (via not_built()) when Keel's side is absent

# ------------------------------------------------------------------------------------------ peers
# Exact pins, verified to install on this machine (Python 3.11, 2026-11-26). One venv per peer.
PEERS: dict[str, list[str]] = {
    "agently": ["agently==4.1.4.10"],
    "langgraph": [
        "langgraph==1.2.24",
        "langgraph-checkpoint==4.3.2",
        "langgraph-checkpoint-sqlite==3.1.2",
        "langgraph-checkpoint-postgres==3.2.0",
        "langchain-core==1.8.3",
        "langchain-openai==1.7.4",  # ChatOpenAI, for the model-overhead figure
        "aiosqlite==0.22.1",
    ],
    "pydantic_ai": ["pydantic-ai-slim[openai]==2.68.0"],
    # the eval figure: pydantic-evals and the pydantic-ai it was released with (its TestModel)
    "pydantic_evals": ["pydantic-evals==2.62.0", "pydantic-ai-slim==2.62.0"],
    # the tracing-cost figure (bench/otel.py): PydanticAI with an OpenTelemetry SDK to export to
    "pydantic_ai_otel": ["pydantic-ai-slim[openai]==2.68.0", "opentelemetry-sdk==1.45.2"],
    "openai": ["openai==3.57.0", "jiter==0.19.0"],
    "openai_agents": ["openai-agents==0.24.0", "openai==3.57.0"],
    # the ceiling of the gateway SSE figure: a bare FastAPI + sse-starlette endpoint
    "fastapi_sse_starlette": ["fastapi==0.165.0", "sse-starlette==3.7.0", "uvicorn==0.54.0", "httpx==0.28.1"],
    # the queue figure (issue 18): PostgreSQL task queues
    "procrastinate": ["procrastinate==3.10.0", "psycopg[binary,pool]==3.3.9"],
    "dbos": ["dbos==3.4.0", "psycopg[binary]==3.3.9"],
}
# Distributions whose versions each result records, per venv ("keel" = the workspace venv).
VERSION_DISTS: dict[str, list[str]] = {
    "keel": ["keel-kernel", "pydantic", "anyio", "jiter"],
    "agently": ["agently", "httpx", "pydantic"],
    "langgraph": [
        "langgraph",
        "langgraph-checkpoint",
        "langgraph-checkpoint-sqlite",
        "langchain-core",
        "langchain-openai",
    ],
    "pydantic_ai": ["pydantic-ai-slim", "openai", "pydantic"],
    "pydantic_evals": ["pydantic-evals", "pydantic-ai-slim", "pydantic"],
    "pydantic_ai_otel": ["pydantic-ai-slim", "opentelemetry-sdk", "pydantic"],
    "openai": ["openai", "jiter", "httpx"],
    "openai_agents": ["openai-agents", "openai"],
    "fastapi_sse_starlette": ["fastapi", "sse-starlette", "uvicorn", "starlette", "httpx"],
    "procrastinate": ["procrastinate", "psycopg"],
    "dbos": ["dbos", "psycopg", "sqlalchemy"],
}

PRELUDE = f"""\
import json as _json, os as _os, sys as _sys, time as _time
ARGS = _json.loads(_os.environ.get("KEEL_BENCH_ARGS", "{{}}"))
def emit(value, **extra):
    print("KEEL_BENCH_RESULT " + _json.dumps({{"value": float(value), **extra}}), flush=True)
def not_built(reason):
    print("KEEL_BENCH_NOT_BUILT " + str(reason), flush=True)
    _sys.exit({NOT_BUILT_EXIT})
"""


def _uv() -> list[str]:
    """``python -m uv`` from this interpreter when it has uv (the workspace venv does), else python3's."""
    try:
        import uv  # noqa: F401

        return [sys.executable, "-m", "uv"]
    except ImportError:
        return ["python3", "-m", "uv"]


def base_python() -> str:
    """The interpreter peer venvs are built from: the same base Python as the workspace venv."""
    base = getattr(sys, "_base_executable", None) or sys.executable
    return str(base)


def venv_python(venv: str) -> Path:
    return KEEL_PYTHON if venv == "keel" else VENVS / venv / "bin" / "python"


def ensure_venv(venv: str, *, log: Callable[[str], None] = print) -> Path:
    """Create (or re-create, when its pins changed) the pinned venv of one peer; return its python."""
    if venv == "keel":
        if not KEEL_PYTHON.exists():
            raise SystemExit("the workspace venv is missing: run `make install` first")
        return KEEL_PYTHON
    pins = PEERS[venv]
    target = VENVS / venv
    stamp = target / ".keel-bench-pins"
    wanted = json.dumps(pins)
    if stamp.exists() and stamp.read_text() == wanted and venv_python(venv).exists():
        return venv_python(venv)
    log(f"[bench] installing {venv}: {' '.join(pins)}")
    t0 = time.perf_counter()
    subprocess.run([*_uv(), "venv", "-q", "--clear", "-p", base_python(), str(target)], check=True)
    subprocess.run([*_uv(), "pip", "install", "-q", "-p", str(venv_python(venv)), *pins], check=True)
    stamp.write_text(wanted)
    log(f"[bench] {venv} ready in {time.perf_counter() - t0:.1f} s")
    return venv_python(venv)


def dist_versions(venv: str, dists: Sequence[str]) -> dict[str, str]:
    """Installed versions of ``dists`` in a venv (``absent`` when not installed)."""
    code = (
        "import json, importlib.metadata as m\n"
        "out = {}\n"
        f"for d in {list(dists)!r}:\n"
        "    try: out[d] = m.version(d)\n"
        "    except m.PackageNotFoundError: out[d] = 'absent'\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run([str(venv_python(venv)), "-c", code], capture_output=True, text=True, check=False)
    try:
        return dict(json.loads(proc.stdout.strip().splitlines()[-1]))
    except (IndexError, ValueError):
        return {d: "unknown" for d in dists}


def keel_distributions() -> dict[str, str]:
    """Every ``keel-*`` distribution in the workspace venv (the first-party plugins installed)."""
    code = (
        "import json, importlib.metadata as m\n"
        "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()"
        " if (d.metadata['Name'] or '').lower().startswith('keel')}))\n"
    )
    proc = subprocess.run([str(KEEL_PYTHON), "-c", code], capture_output=True, text=True, check=False)
    try:
        return dict(sorted(json.loads(proc.stdout.strip().splitlines()[-1]).items()))
    except (IndexError, ValueError):
        return {}


def machine() -> dict[str, Any]:
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = []
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "load_avg_1_5_15": load,  # at the end of the figure: other work on the machine skews absolutes
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
    }


# ------------------------------------------------------------------------------------------ sides
@dataclass
class Side:
    """One framework's way to do the figure's work.

    :param name: ``"keel"`` or the peer's name as it appears in the report (``"langgraph"``).
    :param venv: which venv runs it: ``"keel"`` (the workspace) or a key of :data:`PEERS`.
    :param code: a workload snippet (see :data:`PRELUDE`); it must ``emit()`` one number per run.
    :param argv: instead of ``code``: a command whose wall-clock time is the number (ms). ``{python}``
        and ``{bin}`` in it are replaced by the venv's interpreter and bin folder.
    :param env: extra environment variables.
    :param how: one line on how the peer's docs say to do this (the page), and any deviation.
    """

    name: str
    venv: str
    code: str | None = None
    argv: Sequence[str] | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    how: str = ""
    timeout: float = 300.0
    reference: bool = False  # a floor for reading the numbers (bare interpreter): no ratio, no rule


@dataclass
class Outcome:
    value: float | None
    extra: dict[str, Any]
    not_built: str | None = None
    error: str | None = None


def run_side_once(side: Side, args: Mapping[str, Any]) -> Outcome:
    """Run one side once in a fresh process; return the number it measured (or why there is none)."""
    python = venv_python(side.venv)
    env = {**os.environ, **side.env, "KEEL_BENCH_ARGS": json.dumps(dict(args))}
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    # an installed package runs from its bytecode cache (pip and `uv --compile-bytecode` write it; the
    # first import writes it otherwise): a machine-wide PYTHONDONTWRITEBYTECODE=1 would make every round
    # of every side compile all its sources again, which no user's process does
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if side.argv is not None:
        argv = [a.replace("{python}", str(python)).replace("{bin}", str(python.parent)) for a in side.argv]
        t0 = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=side.timeout, check=False)
        elapsed = (time.perf_counter() - t0) * 1000.0
        if proc.returncode != 0:
            return Outcome(None, {}, error=_tail(proc.stderr or proc.stdout))
        return Outcome(elapsed, {})
    if side.code is None:
        raise ValueError(f"side {side.name!r} has neither code nor argv")
    with tempfile.NamedTemporaryFile("w", suffix=f"_{side.name}.py", delete=False) as fh:
        fh.write(PRELUDE + side.code)
        script = fh.name
    try:
        proc = subprocess.run(
            [str(python), script],
            capture_output=True,
            text=True,
            env=env,
            timeout=side.timeout,
            check=False,
            cwd=tempfile.gettempdir(),
        )
    except subprocess.TimeoutExpired:
        return Outcome(None, {}, error=f"timed out after {side.timeout:.0f} s")
    finally:
        os.unlink(script)
    return parse_output(proc.returncode, proc.stdout, proc.stderr)


def parse_output(returncode: int, stdout: str, stderr: str) -> Outcome:
    """Read a workload's result line (``KEEL_BENCH_RESULT {json}``) or its not-built line."""
    for line in reversed(stdout.splitlines()):
        if line.startswith("KEEL_BENCH_NOT_BUILT "):
            return Outcome(None, {}, not_built=line.split(" ", 1)[1].strip() or "not built")
        if line.startswith("KEEL_BENCH_RESULT ") and returncode == 0:
            data = json.loads(line.split(" ", 1)[1])
            return Outcome(float(data.pop("value")), data)
    if returncode == NOT_BUILT_EXIT:
        return Outcome(None, {}, not_built="not built")
    return Outcome(None, {}, error=_tail(stderr or stdout) or f"exit {returncode}, no result line")


def _tail(text: str, lines: int = 6) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


# ------------------------------------------------------------------------------------- statistics
def summarize(values: Sequence[float]) -> dict[str, float]:
    """Median and spread of one side's rounds."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    if len(ordered) >= 4:
        q = statistics.quantiles(ordered, n=4)
        q1, q3 = q[0], q[2]
    else:
        q1, q3 = ordered[0], ordered[-1]
    return {
        "median": statistics.median(ordered),
        "min": ordered[0],
        "max": ordered[-1],
        "iqr": q3 - q1,
        "n": float(len(ordered)),
    }


def ratios(keel: float | None, peers: Mapping[str, float | None]) -> dict[str, float | None]:
    """Keel / peer for each peer (below 1 means Keel is faster / smaller)."""
    out: dict[str, float | None] = {}
    for name, value in peers.items():
        out[name] = None if keel is None or value is None or value == 0 else keel / value
    return out


# ------------------------------------------------------------------------------------------ rules
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
}


@dataclass(frozen=True)
class Rule:
    """One clause of a target, checked against the measured numbers.

    ``kind``: ``"keel"`` (Keel's median ``op`` ``bound``, in the figure's unit), ``"ratio"`` (Keel/peer
    ``op`` ``bound`` for ``peer``), or ``"ratio_fastest"`` (Keel / the fastest of ``among`` ``op``
    ``bound``), or ``"extra"`` (a number Keel's workload reported beside its value, named ``key``,
    ``op`` ``bound``: e.g. bytes per step at 1,000 nodes / at 100 nodes).
    """

    kind: str
    op: str
    bound: float
    peer: str | None = None
    among: tuple[str, ...] = ()
    key: str | None = None

    def check(
        self, keel: float | None, peers: Mapping[str, float | None], extra: Mapping[str, Any] | None = None
    ) -> bool:
        if keel is None:
            return False
        compare = _OPS[self.op]
        if self.kind == "extra":
            value = (extra or {}).get(self.key or "")
            return isinstance(value, int | float) and compare(float(value), self.bound)
        if self.kind == "keel":
            return compare(keel, self.bound)
        if self.kind == "ratio":
            value = peers.get(self.peer or "")
            return value is not None and value > 0 and compare(keel / value, self.bound)
        if self.kind == "ratio_fastest":
            present = [peers.get(p) for p in self.among]
            if not present or any(v is None or v <= 0 for v in present):
                return False
            return compare(keel / min(v for v in present if v is not None), self.bound)
        raise ValueError(f"unknown rule kind {self.kind!r}")

    def describe(self) -> str:
        if self.kind == "keel":
            return f"keel {self.op} {self.bound:g}"
        if self.kind == "ratio":
            return f"keel/{self.peer} {self.op} {self.bound:g}"
        if self.kind == "extra":
            return f"keel.{self.key} {self.op} {self.bound:g}"
        return f"keel/min({', '.join(self.among)}) {self.op} {self.bound:g}"


def keel_below(bound: float, op: str = "<") -> Rule:
    return Rule("keel", op, bound)


def ratio_at_most(peer: str, bound: float, op: str = "<=") -> Rule:
    return Rule("ratio", op, bound, peer=peer)


def faster_than(peer: str) -> Rule:
    return Rule("ratio", "<", 1.0, peer=peer)


def ratio_vs_fastest(among: Iterable[str], bound: float, op: str = "<=") -> Rule:
    return Rule("ratio_fastest", op, bound, among=tuple(among))


def extra_at_most(key: str, bound: float, op: str = "<=") -> Rule:
    return Rule("extra", op, bound, key=key)


def evaluate(
    rules: Sequence[Rule],
    keel: float | None,
    peers: Mapping[str, float | None],
    extra: Mapping[str, Any] | None = None,
) -> bool | None:
    """``met``: every rule holds. ``None`` when there is nothing to judge (Keel not built, or no rule)."""
    if keel is None or not rules:
        return None
    return all(rule.check(keel, peers, extra) for rule in rules)


# ---------------------------------------------------------------------------------------- figures
@dataclass
class Figure:
    """One measured quantity and everything needed to judge it.

    :param figure: an id used in the file name (``startup``, ``flow.linear.memory``).
    :param group: the section of the report (``"1. startup"``), several figures may share one.
    :param title: the row's workload in words.
    :param unit: the unit every side's number is in (``ms``, ``us/step``, ``bytes/step``).
    :param target: the issue's target, in its words; ``rules`` are the same target as checks.
    :param lower_is_better: documentation only (all figures here are costs).
    """

    figure: str
    group: str
    title: str
    unit: str
    sides: list[Side]
    target: str
    rules: list[Rule] = field(default_factory=list)
    rounds: int = 5
    args: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    warmup: int = 0


def build_result(
    fig: Figure,
    samples: Mapping[str, Sequence[float]],
    *,
    not_built: str | None = None,
    errors: Mapping[str, str] | None = None,
    extras: Mapping[str, Any] | None = None,
    machine_info: Mapping[str, Any] | None = None,
    versions: Mapping[str, Any] | None = None,
    date: str | None = None,
) -> dict[str, Any]:
    """The result record of one figure, from the raw per-round numbers of each side (pure)."""
    stats = {name: summarize(vals) for name, vals in samples.items() if vals}
    keel = None if not_built else stats.get("keel", {}).get("median")
    peer_names = [s.name for s in fig.sides if s.name != "keel" and not s.reference]
    references = {s.name: stats[s.name]["median"] for s in fig.sides if s.reference and s.name in stats}
    peers = {name: stats[name]["median"] if name in stats else None for name in peer_names}
    return {
        "figure": fig.figure,
        "group": fig.group,
        "title": fig.title,
        "date": date or _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "unit": fig.unit,
        "keel": keel,
        "status": "not built" if not_built else ("ok" if keel is not None else "failed"),
        "not_built": not_built,
        "peers": peers,
        "ratios": ratios(keel, peers),
        "references": references,
        "target": fig.target,
        "rules": [r.describe() for r in fig.rules],
        "met": evaluate(fig.rules, keel, peers, (extras or {}).get("keel")),
        "stats": stats,
        "rounds": fig.rounds,
        "args": fig.args,
        "how": {s.name: s.how for s in fig.sides if s.how},
        "notes": list(fig.notes),
        "errors": dict(errors or {}),
        "extras": dict(extras or {}),
        "machine": dict(machine_info or {}),
        "versions": dict(versions or {}),
    }


def run_figure(fig: Figure, *, rounds: int | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure every side of ``fig``, alternating, and write its result file; return the record."""
    rounds = rounds or int(os.environ.get("KEEL_BENCH_ROUNDS", "0")) or fig.rounds
    fig.rounds = rounds
    for side in fig.sides:
        ensure_venv(side.venv, log=log)
    samples: dict[str, list[float]] = {s.name: [] for s in fig.sides}
    extras: dict[str, Any] = {}
    errors: dict[str, str] = {}
    not_built: str | None = None
    active = list(fig.sides)
    for _ in range(fig.warmup):
        for side in active:
            run_side_once(side, fig.args)
    t0 = time.perf_counter()
    for r in range(rounds):
        for side in list(active):
            out = run_side_once(side, fig.args)
            if out.not_built is not None:
                if side.name == "keel":
                    not_built = out.not_built
                else:
                    errors[side.name] = f"not built: {out.not_built}"
                active.remove(side)
            elif out.error is not None:
                log(f"[bench] {fig.figure}: {side.name} failed:\n{out.error}")
                retry = run_side_once(side, fig.args)  # once: others edit this checkout while we run
                if retry.value is not None:
                    samples[side.name].append(retry.value)
                    if retry.extra:
                        extras[side.name] = retry.extra
                    continue
                errors[side.name] = retry.error or retry.not_built or out.error
                active.remove(side)
            elif out.value is not None:
                samples[side.name].append(out.value)
                if out.extra:
                    extras[side.name] = out.extra
        log(f"[bench] {fig.figure} round {r + 1}/{rounds}: " + _round_line(samples))
    log(f"[bench] {fig.figure}: {time.perf_counter() - t0:.1f} s")
    versions: dict[str, Any] = {}
    for venv in sorted({s.venv for s in fig.sides}):
        versions[venv] = keel_distributions() if venv == "keel" else dist_versions(venv, VERSION_DISTS.get(venv, []))
        if venv == "keel":
            versions[venv].update(dist_versions("keel", VERSION_DISTS["keel"][1:]))
    result = build_result(
        fig, samples, not_built=not_built, errors=errors, extras=extras, machine_info=machine(), versions=versions
    )
    write_result(result)
    return result


def _round_line(samples: Mapping[str, Sequence[float]]) -> str:
    return ", ".join(f"{k}={v[-1]:.4g}" for k, v in samples.items() if v)


def result_path(figure: str, date: str | None = None) -> Path:
    day = (date or _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d"))[:10]
    return RESULTS / f"{day}-{figure}.json"


def write_result(result: Mapping[str, Any], folder: Path | None = None) -> Path:
    folder = folder or RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{str(result['date'])[:10]}-{result['figure']}.json"
    path.write_text(json.dumps(result, indent=2, sort_keys=False) + "\n")
    return path


def record_not_built(fig: Figure, reason: str) -> dict[str, Any]:
    """Write a "not built" record without running anything (Keel's side is known to be absent)."""
    result = build_result(fig, {}, not_built=reason, machine_info=machine())
    write_result(result)
    return result


# ----------------------------------------------------------------------------------------- report
def latest_results(folder: Path | None = None) -> list[dict[str, Any]]:
    """The newest result of each figure (by the date in the record, then by file name)."""
    folder = folder or RESULTS
    newest: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except ValueError:
            continue
        key = data.get("figure")
        if not key:
            continue
        if key not in newest or str(data.get("date", "")) >= str(newest[key].get("date", "")):
            newest[key] = data
    return sorted(newest.values(), key=lambda d: (str(d.get("group", "")), str(d.get("figure", ""))))


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 0.01:
        return f"{value:.3g}"
    return f"{value:.2e}"


def _spread(stats: Mapping[str, Any] | None) -> str:
    if not stats:
        return ""
    return f" ({_fmt(stats.get('min'))}-{_fmt(stats.get('max'))}, n={int(stats.get('n', 0))})"


def _met(result: Mapping[str, Any]) -> str:
    if result.get("status") == "not built":
        return "not built"
    if result.get("status") == "failed":
        return "failed (see errors)"
    met = result.get("met")
    return "—" if met is None else ("**met**" if met else "**not met**")


def render_report(results: Sequence[Mapping[str, Any]], *, expected: Sequence[Sequence[str]] = ()) -> str:
    """``bench/REPORT.md`` from the newest result of each figure (pure).

    ``expected`` lists ``(group, figure[, target])`` that must appear: a figure with no result file
    yet is shown as "not built" rather than left out.
    """
    present = {str(r.get("figure")) for r in results}
    rows: list[Mapping[str, Any]] = list(results)
    for group, figure, *rest in expected:
        if figure not in present:
            target = rest[0] if rest else ""
            rows.append(
                {
                    "figure": figure,
                    "group": group,
                    "target": target,
                    "status": "not built",
                    "not_built": "no result yet",
                }
            )
    rows.sort(key=lambda d: (str(d.get("group", "")), str(d.get("figure", ""))))
    out = [
        "# Keel benchmarks against its peers",
        "",
        "Generated by `make bench` (`bench/run.py`) from the newest file of each figure in `bench/results/`;",
        "do not edit by hand. Every number is the median of alternating rounds, each round a fresh process;",
        "(min-max, n) is the spread. Ratio = Keel / peer: below 1 means Keel costs less. `met` is computed",
        "from the numbers by the rules listed (see `bench/README.md`).",
        "",
    ]
    machines = {
        json.dumps({k: v for k, v in (r.get("machine") or {}).items() if k != "load_avg_1_5_15"}, sort_keys=True)
        for r in rows
        if r.get("machine")
    }
    for m in sorted(machines):
        info = json.loads(m)
        out.append(
            f"Machine: {info.get('cores')} cores, {info.get('cpu')}, Python {info.get('python')}, {info.get('os')}."
        )
    loads = [r["machine"]["load_avg_1_5_15"][0] for r in rows if (r.get("machine") or {}).get("load_avg_1_5_15")]
    if loads:
        out.append(
            f"Load average (1 min) when figures finished: {min(loads):.1f} to {max(loads):.1f} on "
            "this shared machine; absolute times are inflated by it, ratios less so."
        )
    out.append("")
    summary = ["| figure | Keel | Keel / peer | target | met |", "|---|---|---|---|---|"]
    for r in rows:
        keel = "not built" if r.get("status") == "not built" else f"{_fmt(r.get('keel'))} {r.get('unit', '')}"
        ratio_text = ", ".join(f"{p} {_fmt(v)}" for p, v in (r.get("ratios") or {}).items() if v is not None)
        summary.append(f"| {r.get('figure')} | {keel} | {ratio_text or '-'} | {r.get('target', '')} | {_met(r)} |")
    out += ["## Summary", "", *summary, ""]
    group = None
    for r in rows:
        if r.get("group") != group:
            group = r.get("group")
            out += [f"## {group}", ""]
        out += [f"### {r.get('figure')}: {r.get('title', '')}".rstrip(": "), ""]
        if r.get("status") == "not built":
            out += [f"Keel: **not built** ({r.get('not_built') or 'Keel side absent'}).", ""]
        unit = r.get("unit", "")
        stats = r.get("stats") or {}
        table = [f"| side | median ({unit}) | Keel / side |", "|---|---|---|"]
        if r.get("status") == "ok":
            table.append(f"| keel | {_fmt(r.get('keel'))}{_spread(stats.get('keel'))} | 1 |")
        for peer, value in (r.get("peers") or {}).items():
            ratio = (r.get("ratios") or {}).get(peer)
            table.append(f"| {peer} | {_fmt(value)}{_spread(stats.get(peer))} | {_fmt(ratio)} |")
        for ref, value in (r.get("references") or {}).items():
            table.append(f"| {ref} (floor, not a peer) | {_fmt(value)}{_spread(stats.get(ref))} | — |")
        if len(table) > 2:
            out += [*table, ""]
        for ref, value in (r.get("references") or {}).items():
            bounds = [f"{p} {_fmt(value / v)}" for p, v in (r.get("peers") or {}).items() if value and v]
            if bounds:
                out += [f"Floor / peer ({ref}): {', '.join(bounds)}: the best ratio possible on this machine.", ""]
        if r.get("target"):
            rules = "; ".join(r.get("rules") or [])
            out.append(f"Target (issue): {r['target']}" + (f" — rule: `{rules}`" if rules else "") + f" → {_met(r)}.")
            out.append("")
        for name, text in (r.get("how") or {}).items():
            out.append(f"- {name}: {text}")
        for note in r.get("notes") or []:
            out.append(f"- note: {note}")
        for name, err in (r.get("errors") or {}).items():
            first = str(err).strip().splitlines()[-1] if str(err).strip() else ""
            out.append(f"- {name} failed: `{first}`")
        if r.get("rounds"):
            args = {
                k: v
                for k, v in (r.get("args") or {}).items()
                if len(json.dumps(v)) <= 60 and "url" not in k and k != "bench"
            }
            out.append(f"- rounds: {r.get('rounds')}; args: `{json.dumps(args)}`; date {r.get('date')}")
        versions = r.get("versions") or {}
        if versions:
            parts = []
            for venv, dists in versions.items():
                parts.append(f"{venv}: " + ", ".join(f"{d} {v}" for d, v in (dists or {}).items()))
            out.append("- versions: " + "; ".join(parts))
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def write_report(expected: Sequence[Sequence[str]] = (), folder: Path | None = None) -> Path:
    text = render_report(latest_results(folder), expected=expected)
    REPORT.write_text(text)
    return REPORT


def main_for(figures: Callable[[], Sequence[Figure]], context: Callable[[], Any] | None = None) -> None:
    """Entry point shared by figure scripts: ``python bench/<figure>.py [--rounds N] [--only ID]``.

    ``context``: a context-manager factory around all the figures (a fake server); the dict it
    yields is merged into every figure's ``args``.
    """
    import argparse
    import contextlib

    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=None, help="override every figure's round count")
    parser.add_argument("--only", default=None, help="run only figures whose id contains this")
    opts = parser.parse_args()
    chosen = [fig for fig in figures() if not opts.only or opts.only in fig.figure]
    with context() if context else contextlib.nullcontext({}) as shared:
        for fig in chosen:
            fig.args = {**fig.args, **(shared or {})}
            _run_and_print(fig, opts.rounds)


def _run_and_print(fig: Figure, rounds: int | None) -> None:
    result = run_figure(fig, rounds=rounds)
    peers = {k: _fmt(v) for k, v in result["peers"].items()}
    print(
        f"[bench] {fig.figure}: keel={_fmt(result['keel'])} {fig.unit} peers={peers} met={result['met']} ({result['status']})"
    )
