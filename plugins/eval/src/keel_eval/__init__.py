"""keel-eval: eval cases as YAML, evaluators through ``keel_evaluators()``, reports, and regressions.

    dataset = load_dataset("evals/invoices.yaml")
    report = await run_dataset(dataset, "invoice", runtime=runtime, repeat=3, concurrency=8)
    report.save("baseline.json")
    compare(load_report("baseline.json"), report).failing()   # True when a case regressed

Names load on first use: discovery imports this package (for ``keel_eval.plugin``) on every
``keel`` start, and needs none of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from keel import lazy_exports

if TYPE_CHECKING:
    from keel_eval.cases import Case, Dataset, EvaluatorRef, case_schema, load_dataset
    from keel_eval.errors import CaseError, EvalError
    from keel_eval.recorded import case_from_recording, read_recording
    from keel_eval.report import CaseReport, Comparison, Report, RunRecord, compare, load_report
    from keel_eval.runner import EVALUATION_EVENT, rescore, run_dataset

_LAZY = {
    "Case": "cases",
    "Dataset": "cases",
    "EvaluatorRef": "cases",
    "case_schema": "cases",
    "load_dataset": "cases",
    "CaseError": "errors",
    "EvalError": "errors",
    "case_from_recording": "recorded",
    "read_recording": "recorded",
    "CaseReport": "report",
    "Comparison": "report",
    "Report": "report",
    "RunRecord": "report",
    "compare": "report",
    "load_report": "report",
    "EVALUATION_EVENT": "runner",
    "rescore": "runner",
    "run_dataset": "runner",
}


def __getattr__(name: str) -> Any:
    return _lazy(name)


_lazy = lazy_exports(globals(), {name: f".{home}" for name, home in _LAZY.items()})
__all__ = [
    "EVALUATION_EVENT",
    "Case",
    "CaseError",
    "CaseReport",
    "Comparison",
    "Dataset",
    "EvalError",
    "EvaluatorRef",
    "Report",
    "RunRecord",
    "case_from_recording",
    "case_schema",
    "compare",
    "load_dataset",
    "load_report",
    "read_recording",
    "rescore",
    "run_dataset",
]
