"""The pytest fixture: a dataset runs inside a test."""

from __future__ import annotations

from conftest import DATA

import keel


async def test_the_keel_eval_fixture_runs_a_dataset(keel_eval: object, runtime: keel.Runtime) -> None:
    report = await keel_eval(DATA / "invoices.yaml", runtime=runtime)  # type: ignore[operator]
    report.assert_passed()
    assert len(report.cases) == 3 and keel_eval.reports == [report]  # type: ignore[attr-defined]
