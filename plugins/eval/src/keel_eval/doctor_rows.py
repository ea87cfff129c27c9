"""keel-eval's check in ``keel doctor`` (row ``regression``): every runnable has an eval dataset, and
the last eval run of each did not fail. It reads dataset files and saved reports; it runs nothing.

Where it looks, from ``[settings.eval]``: ``datasets`` (folders of ``*.yaml`` datasets, default
``["evals", "examples/evals"]``) and ``reports`` (default ``.keel/eval``, where ``keel eval run``
saves them), relative to the current directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import keel

__all__ = ["check_datasets"]


def _folders(value: Any, default: list[str]) -> list[Path]:
    items = [value] if isinstance(value, str) else list(value or default)
    return [Path(str(item)) for item in items]


def _datasets(folders: list[Path]) -> dict[str, list[str]]:
    import yaml

    found: dict[str, list[str]] = {}
    for folder in folders:
        for path in sorted(folder.glob("*.y*ml")) if folder.is_dir() else []:
            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8"))
            except (OSError, yaml.YAMLError):
                continue
            if isinstance(data, dict) and isinstance(data.get("runnable"), str):
                found.setdefault(data["runnable"], []).append(str(path))
    return found


def _last_runs(folder: Path) -> dict[str, dict[str, Any]]:
    last: dict[str, dict[str, Any]] = {}
    for path in folder.glob("*.json") if folder.is_dir() else []:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict) or data.get("format") != "keel-eval-report" or not data.get("runnable"):
            continue
        known = last.get(data["runnable"])
        if known is None or data.get("started_at", 0) > known.get("started_at", 0):
            last[data["runnable"]] = {**data, "path": str(path)}
    return last


def check_datasets(context: keel.DoctorContext) -> keel.DoctorResult:
    """A dataset per runnable, and no last eval run that failed."""
    settings = context.stack.settings("eval")
    datasets = _datasets(_folders(settings.get("datasets"), ["evals", "examples/evals"]))
    runs = _last_runs(Path(str(settings.get("reports", ".keel/eval"))))
    if not context.runnables:
        return keel.DoctorResult(status="warn", evidence=["no runnables registered: nothing to evaluate"])
    failed, warned, good = [], [], []
    for runnable in context.runnables:
        label = f"{runnable.kind} {runnable.name!r}"
        files = datasets.get(runnable.name)
        if not files:
            warned.append(f"{label}: no eval dataset (no *.yaml with runnable: {runnable.name} in the dataset folders)")
            continue
        run = runs.get(runnable.name)
        summary = (run or {}).get("summary", {})
        if run is not None and summary.get("failed", 0):
            failed.append(
                f"{label}: the last eval run ({run['path']}) failed {summary['failed']} of {summary.get('cases')} case(s)"
            )
        else:
            last = f"last run passed ({run['path']})" if run is not None else "not run yet (keel eval run)"
            good.append(f"{label}: dataset {', '.join(files)}; {last}")
    fix = "keep a dataset per runnable (docs/eval.md) and make `keel eval run` pass before launch"
    if failed:
        return keel.DoctorResult(status="fail", evidence=failed + warned + good, fix=fix)
    if warned:
        return keel.DoctorResult(status="warn", evidence=warned + good, fix=fix)
    return keel.DoctorResult(status="pass", evidence=good)
