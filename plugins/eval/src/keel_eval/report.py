"""A finished eval run as data: per case, per repeat, the output, the events and every evaluator's result.

A report is a JSON file (``format: keel-eval-report``): ``keel eval rescore`` re-judges its recorded
outputs and events without running anything, and ``keel eval compare`` sets two side by side.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from keel import EvalResult, new_id
from keel_eval.cases import Case, EvaluatorRef, Fixtures
from keel_eval.errors import EvalError

__all__ = ["CaseReport", "Comparison", "Report", "RunRecord", "compare", "load_report"]

FORMAT: Literal["keel-eval-report"] = "keel-eval-report"
#: the result a case's ``expected_error`` gives each run
EXPECTED_ERROR = "expected_error"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunRecord(_Model):
    """One run of one case."""

    repeat: int = 0
    execution_id: str | None = None
    output: Any = None
    error: str | None = None
    duration_ms: float = 0.0
    events: list[dict[str, Any]] = Field(
        default_factory=list, description="the run's RuntimeEvents, model.delta left out"
    )
    results: list[EvalResult] = Field(default_factory=list)

    @property
    def score(self) -> float:
        if self.error is not None and not self.results:
            return 0.0
        return statistics.fmean(r.score for r in self.results) if self.results else 0.0

    @property
    def passed(self) -> bool:
        """Every result passed, and the run finished (or failed as its case's ``expected_error`` said)."""
        expected = any(r.evaluator == EXPECTED_ERROR and r.passed for r in self.results)
        return (self.error is None or expected) and all(r.passed for r in self.results)


class CaseReport(_Model):
    name: str
    description: str = ""
    source: str = ""
    input: Any = None
    expected: Any = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    evaluators: list[EvaluatorRef] = Field(default_factory=list)
    fixtures: Fixtures = Field(default_factory=Fixtures)
    expected_error: str | None = None
    runs: list[RunRecord] = Field(default_factory=list)

    @property
    def scores(self) -> list[float]:
        return [run.score for run in self.runs]

    @property
    def score(self) -> float:
        return statistics.fmean(self.scores) if self.runs else 0.0

    @property
    def spread(self) -> float:
        """Population standard deviation of the runs' scores (0 for a single run)."""
        return statistics.pstdev(self.scores) if len(self.runs) > 1 else 0.0

    @property
    def pass_rate(self) -> float:
        return sum(run.passed for run in self.runs) / len(self.runs) if self.runs else 0.0

    @property
    def passed(self) -> bool:
        return bool(self.runs) and all(run.passed for run in self.runs)

    def as_case(self) -> Case:
        return Case(
            name=self.name, description=self.description, input=self.input, expected=self.expected,
            metadata=self.metadata, evaluators=self.evaluators, fixtures=self.fixtures, source=self.source,
            expected_error=self.expected_error,
        )  # fmt: skip

    def failures(self) -> list[str]:
        """Why the case failed: run errors and failing evaluators, once each."""
        seen: list[str] = []
        for run in self.runs:
            expected = any(r.evaluator == EXPECTED_ERROR and r.passed for r in run.results)
            found = [f"error: {run.error}"] if run.error and not expected else []
            found += [f"{r.evaluator}: {r.reason}" for r in run.results if not r.passed]
            for item in found:
                if item not in seen:
                    seen.append(item)
        return seen


class Report(_Model):
    format: Literal["keel-eval-report"] = FORMAT
    version: int = 1
    id: str = Field(default_factory=lambda: new_id("eval"))
    dataset: str = ""
    dataset_path: str = ""
    runnable: str = ""
    repeat: int = 1
    concurrency: int = 1
    started_at: float = Field(default_factory=time.time)
    ended_at: float | None = None
    rescored_from: str | None = None
    output_schema: dict[str, Any] | None = Field(default=None, description="the runnable's output contract")
    cases: list[CaseReport] = Field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(case.passed for case in self.cases)

    @property
    def score(self) -> float:
        return statistics.fmean(case.score for case in self.cases) if self.cases else 0.0

    def failed(self) -> list[CaseReport]:
        return [case for case in self.cases if not case.passed]

    def case(self, name: str) -> CaseReport:
        for case in self.cases:
            if case.name == name:
                return case
        raise EvalError(f"report {self.id} has no case {name!r}")

    def evaluator_scores(self) -> dict[str, list[float]]:
        """Every score each evaluator gave, over every case and repeat (for the distribution chart)."""
        scores: dict[str, list[float]] = {}
        for case in self.cases:
            for run in case.runs:
                for result in run.results:
                    scores.setdefault(result.evaluator, []).append(result.score)
        return scores

    def summary(self) -> dict[str, Any]:
        durations = [run.duration_ms for case in self.cases for run in case.runs]
        return {
            "cases": len(self.cases),
            "passed": sum(case.passed for case in self.cases),
            "failed": len(self.failed()),
            "errors": sum(1 for case in self.cases for run in case.runs if run.error),
            "score": round(self.score, 4),
            "evaluators": {k: round(statistics.fmean(v), 4) for k, v in sorted(self.evaluator_scores().items())},
            "duration_ms": {
                "mean": round(statistics.fmean(durations), 3) if durations else 0.0,
                "max": round(max(durations), 3) if durations else 0.0,
            },
        }

    def assert_passed(self) -> None:
        """For tests: raise ``AssertionError`` naming every failed case and why."""
        failed = self.failed()
        if failed:
            lines = [f"{len(failed)} of {len(self.cases)} eval case(s) failed:"]
            for case in failed:
                lines.append(f"  {case.name}: " + " | ".join(case.failures()))
            raise AssertionError("\n".join(lines))

    def to_json(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        data["summary"] = self.summary()
        return data

    def save(self, path: str | Path) -> Path:
        file = Path(path)
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(json.dumps(self.to_json(), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        return file


def load_report(path: str | Path) -> Report:
    file = Path(path)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except OSError as err:
        raise EvalError(f"{file}: cannot read the report: {err}") from err
    except ValueError as err:
        raise EvalError(f"{file}: not a JSON report ({err}); reports are written by 'keel eval run --json'") from err
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise EvalError(
            f"{file}: not a keel eval report (format {data.get('format') if isinstance(data, dict) else None!r})"
        )
    data.pop("summary", None)
    try:
        return Report.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()[:5])
        raise EvalError(f"{file}: the report is damaged: {problems}") from None


# -------------------------------------------------------------------------------- comparison


class CaseDelta(_Model):
    name: str
    status: Literal["improved", "regressed", "same", "new", "removed"]
    before: float | None = None
    before_spread: float = 0.0
    after: float | None = None
    after_spread: float = 0.0
    band: float = 0.0
    passed_before: bool | None = None
    passed_after: bool | None = None
    why: list[str] = Field(default_factory=list, description="the new run's failures, for a regressed case")

    @property
    def delta(self) -> float | None:
        return None if self.before is None or self.after is None else self.after - self.before


class Comparison(_Model):
    baseline: str
    new: str
    tolerance: float
    cases: list[CaseDelta]
    before: float
    after: float

    def count(self, status: str) -> int:
        return sum(1 for case in self.cases if case.status == status)

    def regressed(self) -> list[CaseDelta]:
        return [case for case in self.cases if case.status == "regressed"]

    @property
    def average_regressed(self) -> bool:
        """The mean score fell by more than the tolerance."""
        return self.after < self.before - self.tolerance

    def failing(self, max_regressions: int = 0) -> bool:
        return len(self.regressed()) > max_regressions or self.average_regressed

    def to_json(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        data["counts"] = {s: self.count(s) for s in ("improved", "regressed", "same", "new", "removed")}
        data["average_regressed"] = self.average_regressed
        return data


def compare(baseline: Report, new: Report, *, tolerance: float = 0.05) -> Comparison:
    """Case by case, ``new`` against ``baseline``.

    A case moved when its mean score changed by more than its band: the ``tolerance``, or the
    larger of the two runs' spreads when ``--repeat`` showed the case to be noisier than that, so a
    flaky case does not fail a build on noise alone.
    """
    if tolerance < 0:
        raise EvalError(f"the tolerance must be 0 or more, got {tolerance}")
    before = {case.name: case for case in baseline.cases}
    after = {case.name: case for case in new.cases}
    rows: list[CaseDelta] = []
    for name in [*before, *(n for n in after if n not in before)]:
        old, now = before.get(name), after.get(name)
        if old is None and now is not None:
            rows.append(
                CaseDelta(name=name, status="new", after=now.score, after_spread=now.spread, passed_after=now.passed)
            )
            continue
        if now is None and old is not None:
            rows.append(
                CaseDelta(
                    name=name, status="removed", before=old.score, before_spread=old.spread, passed_before=old.passed
                )
            )
            continue
        assert old is not None and now is not None
        band = max(tolerance, old.spread, now.spread)
        diff = now.score - old.score
        status: Literal["improved", "regressed", "same"] = (
            "regressed" if diff < -band - 1e-12 else "improved" if diff > band + 1e-12 else "same"
        )
        rows.append(
            CaseDelta(
                name=name, status=status, before=old.score, before_spread=old.spread, after=now.score,
                after_spread=now.spread, band=band, passed_before=old.passed, passed_after=now.passed,
                why=now.failures() if status == "regressed" else [],
            )
        )  # fmt: skip
    common = [r for r in rows if r.before is not None and r.after is not None]
    mean_before = statistics.fmean(r.before for r in common if r.before is not None) if common else 0.0
    mean_after = statistics.fmean(r.after for r in common if r.after is not None) if common else 0.0
    return Comparison(
        baseline=baseline.id, new=new.id, tolerance=tolerance, cases=rows, before=mean_before, after=mean_after
    )
