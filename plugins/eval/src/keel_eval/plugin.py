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
    from keel_eval.cli import eval_group

    cli.add_command(eval_group)
