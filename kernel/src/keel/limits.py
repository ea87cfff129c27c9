"""``OutputLimits``: what one model answer may be (size, depth, number and string length), checked
while it streams (:mod:`keel.instant`) and before the final parse (:mod:`keel.output`). Split from
``keel.instant`` (issue 17), which still exports it; import it as ``keel.OutputLimits``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

from keel.errors import KeelError

__all__ = ["DEFAULT_LIMITS", "OutputLimits"]

_INT_DIGITS = 4_300  # sys.get_int_max_str_digits()'s default: longer ints do not parse


@dataclass(frozen=True, slots=True)
class OutputLimits:
    """What one model answer may be, checked while it streams and again before the final parse.

    The defaults are generous for any real structured answer and small enough that one hostile
    answer cannot take the process's time or memory. Raise one per agent when a legitimate answer
    needs it: ``keel.Agent(..., limits={"max_chars": 8_000_000})``.

    :param max_chars: characters in one answer (prose and fences included).
    :param max_depth: nesting depth of objects and arrays (the root is depth 1).
    :param max_number_chars: characters in one number (Python's own int parsing stops at 4,300).
    :param max_string_chars: characters in one string value or key, after unescaping.
    :param repair_max_chars: the largest answer that the general repairer (``json-repair``, whose
        time grows faster than the text) is tried on, after Keel's own linear repair failed.
    """

    max_chars: int = 2_000_000
    max_depth: int = 100
    max_number_chars: int = 1_000
    max_string_chars: int = 1_000_000
    repair_max_chars: int = 32_768

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise KeelError(f"output limits: {f.name} must be a positive integer, got {value!r}")
        if self.max_number_chars > _INT_DIGITS:
            raise KeelError(
                f"output limits: max_number_chars is at most {_INT_DIGITS} (Python's limit for turning text "
                f"into an int), got {self.max_number_chars}; send longer numbers as strings"
            )

    @classmethod
    def of(cls, spec: OutputLimits | Mapping[str, int] | None) -> OutputLimits:
        """Limits from ``None`` (the defaults), a mapping of the fields to change, or limits."""
        if spec is None:
            return DEFAULT_LIMITS
        if isinstance(spec, OutputLimits):
            return spec
        if isinstance(spec, Mapping):
            known = {f.name for f in fields(cls)}
            unknown = set(spec) - known
            if unknown:
                raise KeelError(
                    f"output limits: unknown setting(s) {sorted(unknown)}; known: {', '.join(sorted(known))}"
                )
            return replace(DEFAULT_LIMITS, **dict(spec))
        raise KeelError(f"output limits are OutputLimits or a dict of its fields, got {spec!r}")


DEFAULT_LIMITS = OutputLimits()
