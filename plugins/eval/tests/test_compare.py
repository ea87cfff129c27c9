"""compare: bands from the tolerance or the runs' spread, counts, averages, and the exit rule."""

from __future__ import annotations

import pytest

import keel
from keel_eval import EvalError, compare
from keel_eval.report import CaseReport, Report, RunRecord


def case(name: str, *scores: float) -> CaseReport:
    runs = [
        RunRecord(repeat=i, results=[keel.EvalResult(evaluator="e", passed=s == 1.0, score=s, reason=f"got {s}")])
        for i, s in enumerate(scores)
    ]
    return CaseReport(name=name, runs=runs)


def report(*cases: CaseReport) -> Report:
    return Report(dataset="d", runnable="r", cases=list(cases))


def test_a_flaky_case_stays_within_its_spread_and_a_broken_one_regresses() -> None:
    before = report(case("flaky", 1, 0, 1), case("steady", 1, 1, 1), case("gone", 1))
    after = report(case("flaky", 0, 1, 0), case("steady", 0, 0, 0), case("added", 1))
    comparison = compare(before, after)
    rows = {row.name: row for row in comparison.cases}
    assert rows["flaky"].status == "same" and rows["flaky"].band == pytest.approx(0.4714, abs=1e-3)
    assert rows["steady"].status == "regressed" and rows["steady"].why == ["e: got 0"]
    assert (rows["gone"].status, rows["added"].status) == ("removed", "new")
    assert [r.name for r in comparison.regressed()] == ["steady"]
    assert comparison.before == pytest.approx(5 / 6) and comparison.after == pytest.approx(1 / 6)
    assert comparison.failing() and comparison.failing(max_regressions=1)  # the mean fell past the band too
    counts = comparison.to_json()["counts"]
    assert counts == {"improved": 0, "regressed": 1, "same": 1, "new": 1, "removed": 1}


def test_the_average_alone_can_fail_a_build() -> None:
    before = report(*[case(f"c{i}", 1.0) for i in range(10)])
    after = report(*[case(f"c{i}", 0.96) for i in range(10)])  # each within 0.05, the mean too
    assert not compare(before, after).failing()
    lower = report(*[case(f"c{i}", 0.94) for i in range(10)])  # each past 0.05: every case regresses
    assert len(compare(before, lower).regressed()) == 10
    assert compare(before, lower, tolerance=0.1).count("same") == 10
    assert not compare(before, lower, tolerance=0.1).failing()
    assert compare(before, lower, tolerance=0.1).average_regressed is False


def test_a_negative_tolerance_is_refused() -> None:
    with pytest.raises(EvalError, match="tolerance must be 0 or more"):
        compare(report(), report(), tolerance=-1)
