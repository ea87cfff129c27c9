"""Run every figure script, then regenerate ``bench/REPORT.md``: ``make bench``.

Each script is importable (``figures()`` lists its figures) and runnable alone
(``python bench/<script>.py [--rounds N] [--only ID]``). This runner starts each one in its own
process, so a figure that breaks does not stop the others, then rebuilds the report from the newest
result of each figure; a figure with no result at all is listed as "not built".

``python bench/run.py [--rounds N] [--only SCRIPT[,SCRIPT]] [--report-only]``
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import harness  # noqa: E402

SCRIPTS = [
    "startup",
    "agent_overhead",
    "model_overhead",
    "flow",
    "crash_resume",
    "checkpoint_size",
    "instant_stream",
    "store",
    "gateway_sse",
    "adversarial",
    "eval",
    "devtools",
    "queue",
    "otel",
    "temporal",
    "durable",
]


def expected() -> list[tuple[str, str, str]]:
    pairs: list[tuple[str, str, str]] = []
    for name in SCRIPTS:
        if not (BENCH / f"{name}.py").exists():
            continue
        module = importlib.import_module(name)
        pairs += [(fig.group, fig.figure, fig.target) for fig in module.figures()]
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--only", default=None, help="comma-separated script names")
    parser.add_argument("--report-only", action="store_true")
    opts = parser.parse_args()
    chosen = opts.only.split(",") if opts.only else SCRIPTS
    failed: list[str] = []
    if not opts.report_only:
        for venv in harness.PEERS:  # install every peer up front, so timings never include an install
            harness.ensure_venv(venv)
        for name in chosen:
            script = BENCH / f"{name}.py"
            if not script.exists():
                print(f"[bench] {name}: no script yet")
                continue
            argv = [sys.executable, str(script)]
            if opts.rounds:
                argv += ["--rounds", str(opts.rounds)]
            t0 = time.perf_counter()
            print(f"[bench] === {name}", flush=True)
            proc = subprocess.run(argv, check=False)
            print(f"[bench] === {name} done in {time.perf_counter() - t0:.0f} s (exit {proc.returncode})", flush=True)
            if proc.returncode != 0:
                failed.append(name)
    path = harness.write_report(expected())
    print(f"[bench] wrote {path.relative_to(harness.ROOT)}")
    if failed:
        print(f"[bench] scripts that exited non-zero: {', '.join(failed)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
