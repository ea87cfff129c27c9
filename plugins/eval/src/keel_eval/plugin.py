"""The entry-point module (group ``keel``): cheap to import; the evaluators and the CLI load on first use."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import keel


@keel.hookimpl
def keel_evaluators() -> Iterable[keel.EvaluatorSpec]:
    from keel_eval.evaluators import builtin_specs

    return builtin_specs()


@keel.hookimpl
def keel_commands(cli: Any) -> None:
    # by reference: `keel eval` imports rich and the runner, every other command starts without them
    cli.add_lazy_command(
        "eval", "keel_eval.cli:eval_group", help="Eval cases against a runnable; compare runs; cases from executions."
    )
