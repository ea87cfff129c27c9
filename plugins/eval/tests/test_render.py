"""The HTML page and the terminal table show hostile text as text, and the chart counts every score."""

from __future__ import annotations

import re

from rich.console import Console

import keel
from keel_eval.render import report_html, report_table
from keel_eval.report import CaseReport, Report, RunRecord

EVIL = "<script>alert('x')</script>"


def report() -> Report:
    results = [
        keel.EvalResult(evaluator="equals", passed=False, score=0.0, reason=EVIL),
        keel.EvalResult(evaluator="judge", passed=True, score=0.95, label=EVIL, reason="ok"),
    ]
    run = RunRecord(output={"html": EVIL}, error=EVIL, results=results, duration_ms=12.0)
    return Report(dataset=EVIL, runnable="r", cases=[CaseReport(name=EVIL, input=EVIL, expected=EVIL, runs=[run])])


def test_the_page_escapes_everything_it_shows() -> None:
    page = report_html(report())
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert not re.search(r"(src|href)=['\"]https?:", page)  # no external assets


def test_the_histograms_count_every_score() -> None:
    page = report_html(report())
    titles = re.findall(r"<title>([\d.]+) to ([\d.]+): (\d+)</title>", page)
    assert sum(int(n) for *_, n in titles) == 4  # two in "all evaluators", one each in equals and judge
    assert ("0.9", "1.0", "1") in titles and ("0.0", "0.1", "1") in titles


def test_the_table_shows_the_failure() -> None:
    console = Console(record=True, width=200)
    console.print(report_table(report()))
    text = console.export_text()
    assert "0/1 cases passed" in text and "error: <script>" in text
