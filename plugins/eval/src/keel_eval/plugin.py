"""The entry-point module (group ``keel``): cheap to import; the evaluators and the CLI load on first use.

Discovery (``keel plugins``, every ``keel`` start) calls ``keel_evaluators()``: the specs are built
from the table below, and each one imports :mod:`keel_eval.evaluators` (its pydantic argument
models) only when it first judges something. A test keeps the table and the evaluators in step.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import keel

#: name, description, needs_model: the built-in evaluators (keel_eval.evaluators.BUILTINS)
BUILTIN_TABLE: tuple[tuple[str, str, bool], ...] = (
    ("schema", "the output satisfies the runnable's output contract (JSON schema)", False),
    ("equals", "the output (or the value at path) equals expected (or value)", False),
    ("contains", "the output contains a substring, element(s) or sub-mapping", False),
    ("regex", "a regular expression matches the output (or the value at path)", False),
    ("json_path", "rules on the value at a JSON path", False),
    ("numeric", "a number within a tolerance of the target", False),
    ("max_duration", "the run took at most max_ms", False),
    ("max_model_requests", "the run made at most max model requests", False),
    ("max_tokens", "the run used at most so many tokens", False),
    ("max_cost", "the run's tokens cost at most max, at the given prices", False),
    ("max_action_calls", "the run made at most max action calls", False),
    ("trajectory", "the action calls made, in order or as a set", False),
    ("judge", "a model judges the output against a rubric: label, score, reason", True),
)


def _lazy(name: str) -> Callable[[keel.EvalSample], keel.EvalResult | Awaitable[keel.EvalResult]]:
    def evaluate(sample: keel.EvalSample) -> keel.EvalResult | Awaitable[keel.EvalResult]:
        from keel_eval.evaluators import evaluate_builtin

        return evaluate_builtin(name, sample)

    evaluate.__name__ = name
    return evaluate


@keel.hookimpl
def keel_evaluators() -> Iterable[keel.EvaluatorSpec]:
    return [
        keel.EvaluatorSpec(name=name, description=description, evaluate=_lazy(name), needs_model=needs_model)
        for name, description, needs_model in BUILTIN_TABLE
    ]


@keel.hookimpl
def keel_commands(cli: Any) -> None:
    # by reference: `keel eval` imports rich and the runner, every other command starts without them
    cli.add_lazy_command(
        "eval", "keel_eval.cli:eval_group", help="Eval cases against a runnable; compare runs; cases from executions."
    )


@keel.hookimpl
def keel_doctor_checks() -> list[keel.DoctorCheck]:
    from keel_eval.doctor_rows import check_datasets

    return [
        keel.DoctorCheck(
            name="eval.datasets", row="regression", title="a dataset per runnable, the last run passed",
            check=check_datasets,
        )
    ]  # fmt: skip
