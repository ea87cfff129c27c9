"""The eval plugin's errors: each names the file, the case and the field, and how to fix it."""

from __future__ import annotations

from keel import KeelError

__all__ = ["CaseError", "EvalError"]


class EvalError(KeelError):
    """An eval run, report or comparison that cannot go on."""

    code = "eval.failed"


class CaseError(EvalError):
    """A case file that is not a valid case or dataset."""

    code = "eval.case_invalid"
