"""keel-eval's pytest plugin (entry point ``pytest11``): run an eval dataset inside a test.

async def test_invoices(keel_eval, keel_runtime):
    keel_runtime.use_model(ScriptedModel(...))
    report = await keel_eval("evals/invoices.yaml", agent, runtime=keel_runtime)
    report.assert_passed()      # names every failed case and why
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from keel import Runnable, Runtime

__all__ = ["EvalRunner", "keel_eval"]


class EvalRunner:
    """``await keel_eval(dataset, runnable, runtime=...)``: a :class:`keel_eval.Report`."""

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.reports: list[Any] = []

    async def __call__(
        self,
        dataset: Any,
        runnable: Runnable | str | None = None,
        *,
        runtime: Runtime,
        repeat: int = 1,
        concurrency: int = 4,
        html: bool = True,
    ) -> Any:
        from keel_eval.cases import Dataset, load_dataset
        from keel_eval.render import report_html
        from keel_eval.runner import run_dataset

        data = dataset if isinstance(dataset, Dataset) else load_dataset(dataset)
        report = await run_dataset(data, runnable, runtime=runtime, repeat=repeat, concurrency=concurrency)
        report.save(self.tmp_path / f"{report.id}.json")
        if html:  # kept beside the test's tmp_path, for a look after a failure
            (self.tmp_path / f"{report.id}.html").write_text(report_html(report), encoding="utf-8")
        self.reports.append(report)
        return report


@pytest.fixture
def keel_eval(tmp_path: Path) -> EvalRunner:
    """Run an eval dataset (a path, or a :class:`keel_eval.Dataset`) against a runnable in a runtime."""
    return EvalRunner(tmp_path)
