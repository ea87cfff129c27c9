"""Reports for people: a rich table on the terminal, and one static HTML page with no external assets."""

from __future__ import annotations

import html
import json
from typing import Any

from keel_eval.report import Comparison, Report

__all__ = ["comparison_table", "report_html", "report_table"]


def _score(mean: float, spread: float = 0.0) -> str:
    return f"{mean:.2f}" + (f" ±{spread:.2f}" if spread else "")


def report_table(report: Report, *, show_passed: bool = True) -> Any:
    """A rich renderable: one row per case, then the summary."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"eval {report.dataset} → {report.runnable}", title_justify="left", expand=False)
    table.add_column("case", overflow="fold")
    table.add_column("score", justify="right")
    table.add_column("passed", justify="right")
    table.add_column("ms", justify="right")
    table.add_column("why it failed", overflow="fold", max_width=70)
    for case in report.cases:
        if case.passed and not show_passed:
            continue
        mean_ms = sum(r.duration_ms for r in case.runs) / len(case.runs) if case.runs else 0.0
        status = Text(f"{sum(r.passed for r in case.runs)}/{len(case.runs)}", style="green" if case.passed else "red")
        table.add_row(
            case.name, _score(case.score, case.spread), status, f"{mean_ms:.0f}", "\n".join(case.failures()[:3])
        )
    summary = report.summary()
    line = Text(
        f"{summary['passed']}/{summary['cases']} cases passed · mean score {summary['score']:.3f} · "
        + " · ".join(f"{k} {v:.2f}" for k, v in summary["evaluators"].items()),
        style="bold green" if report.passed else "bold red",
    )
    return Group(table, line)


def comparison_table(comparison: Comparison) -> Any:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    styles = {"improved": "green", "regressed": "bold red", "same": "dim", "new": "cyan", "removed": "yellow"}
    table = Table(title="eval compare", title_justify="left")
    table.add_column("case", overflow="fold")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    table.add_column("change", justify="right")
    table.add_column("", overflow="fold", max_width=60)
    for row in comparison.cases:
        before = _score(row.before, row.before_spread) if row.before is not None else "—"
        after = _score(row.after, row.after_spread) if row.after is not None else "—"
        delta = f"{row.delta:+.2f}" if row.delta is not None else ""
        note = row.status + (": " + " | ".join(row.why[:2]) if row.why else "")
        table.add_row(row.name, before, after, delta, Text(note, style=styles[row.status]))
    counts = ", ".join(f"{comparison.count(s)} {s}" for s in ("improved", "regressed", "same", "new", "removed"))
    band = f"{comparison.after:.3f} vs {comparison.before:.3f} ± {comparison.tolerance:.3f}"
    verdict = "mean score fell past the tolerance" if comparison.average_regressed else "mean score within tolerance"
    return Group(table, Text(f"{counts}\naverage: {band} ({verdict})"))


# -------------------------------------------------------------------------------------- HTML

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2rem;color:#1d1d1f;max-width:1100px}
h1{font-size:1.4rem;margin:0 0 .3rem} .meta{color:#666;margin-bottom:1.2rem}
table{border-collapse:collapse;width:100%;margin:1rem 0} th,td{text-align:left;padding:.35rem .6rem;border-bottom:1px solid #e5e5e5;vertical-align:top}
th{background:#f6f6f7} .pass{color:#11772d;font-weight:600} .fail{color:#b3261e;font-weight:600}
details{margin:.2rem 0} pre{background:#f6f6f7;padding:.5rem;overflow:auto;max-height:18rem;margin:.3rem 0}
.charts{display:flex;flex-wrap:wrap;gap:1rem} .chart{border:1px solid #e5e5e5;padding:.5rem;border-radius:6px}
.chart h3{font-size:.9rem;margin:0 0 .3rem} .num{text-align:right;font-variant-numeric:tabular-nums}
"""


def _histogram(name: str, scores: list[float], bins: int = 10) -> str:
    """An inline SVG histogram of scores in [0, 1]."""
    counts = [0] * bins
    for score in scores:
        counts[min(int(score * bins), bins - 1)] += 1
    top = max(counts) or 1
    width, height, bar = 220, 110, 20
    rects = []
    for i, count in enumerate(counts):
        h = round(count / top * (height - 25))
        x = i * (bar + 2)
        colour = "#b3261e" if i < bins // 2 else "#11772d"
        rects.append(
            f'<rect x="{x}" y="{height - 15 - h}" width="{bar}" height="{h}" fill="{colour}">'
            f"<title>{i / bins:.1f} to {(i + 1) / bins:.1f}: {count}</title></rect>"
        )
        if count:
            rects.append(
                f'<text x="{x + bar / 2}" y="{height - 18 - h}" font-size="9" text-anchor="middle">{count}</text>'
            )
    axis = f'<text x="0" y="{height - 2}" font-size="9">0</text><text x="{width - 8}" y="{height - 2}" font-size="9">1</text>'
    return (
        f'<div class="chart"><h3>{html.escape(name)} <small>({len(scores)} scores)</small></h3>'
        f'<svg width="{width}" height="{height}" role="img" aria-label="score distribution of {html.escape(name)}">'
        f"{''.join(rects)}{axis}</svg></div>"
    )


def _pre(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, indent=1, default=str)
    return f"<pre>{html.escape(text)}</pre>"


def report_html(report: Report) -> str:
    """The whole report as one self-contained HTML page."""
    summary = report.summary()
    e = html.escape
    charts = [_histogram("all evaluators", [s for v in report.evaluator_scores().values() for s in v])]
    charts += [_histogram(name, scores) for name, scores in sorted(report.evaluator_scores().items())]
    rows = []
    for case in report.cases:
        verdict = '<span class="pass">pass</span>' if case.passed else '<span class="fail">fail</span>'
        results = "".join(
            f"<tr><td>{r.repeat}</td><td>{e(x.evaluator)}</td><td class='{'pass' if x.passed else 'fail'}'>"
            f"{'pass' if x.passed else 'fail'}</td><td class='num'>{x.score:.2f}</td><td>{e(x.label or '')}</td>"
            f"<td>{e(x.reason)}</td></tr>"
            for r in case.runs
            for x in r.results
        )
        errors = "".join(f"<p class='fail'>run {r.repeat}: {e(r.error)}</p>" for r in case.runs if r.error)
        last = case.runs[-1] if case.runs else None
        details = (
            f"<details><summary>details</summary>{errors}"
            f"<b>input</b>{_pre(case.input)}<b>expected</b>{_pre(case.expected)}"
            f"<b>output</b>{_pre(last.output if last else None)}"
            f"<table><tr><th>run</th><th>evaluator</th><th></th><th>score</th><th>label</th><th>reason</th></tr>"
            f"{results}</table></details>"
        )
        mean_ms = sum(r.duration_ms for r in case.runs) / len(case.runs) if case.runs else 0.0
        rows.append(
            f"<tr><td>{e(case.name)}{details}</td><td>{verdict}</td>"
            f"<td class='num'>{case.score:.2f}{f' ±{case.spread:.2f}' if case.spread else ''}</td>"
            f"<td class='num'>{sum(r.passed for r in case.runs)}/{len(case.runs)}</td>"
            f"<td class='num'>{mean_ms:.0f}</td><td>{e(' | '.join(case.failures()[:3]))}</td></tr>"
        )
    evaluators = " · ".join(f"{e(k)} {v:.2f}" for k, v in summary["evaluators"].items())
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>eval {e(report.dataset)} — {summary['passed']}/{summary['cases']}</title><style>{_CSS}</style></head><body>"
        f"<h1>eval {e(report.dataset)} → {e(report.runnable)}</h1>"
        f"<div class='meta'>report {e(report.id)} · repeat {report.repeat} · concurrency {report.concurrency}"
        f"{' · re-scored from ' + e(report.rescored_from) if report.rescored_from else ''}</div>"
        f"<p class='{'pass' if report.passed else 'fail'}'>{summary['passed']}/{summary['cases']} cases passed · "
        f"mean score {summary['score']:.3f}</p><p>{evaluators}</p>"
        f"<h2>score distributions</h2><div class='charts'>{''.join(charts)}</div>"
        "<h2>cases</h2><table><tr><th>case</th><th></th><th>score</th><th>runs passed</th><th>ms</th>"
        f"<th>why it failed</th></tr>{''.join(rows)}</table></body></html>\n"
    )
