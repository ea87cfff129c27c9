"""The plugin module the entry point names. Keep it cheap to import: Keel imports it at start-up."""

from __future__ import annotations

from collections.abc import Iterator

import keel


@keel.action(risk="read", tags=["text"])
def word_count(text: str) -> int:
    """Count the words in a text."""
    return len(text.split())


def max_words(sample: keel.EvalSample) -> keel.EvalResult:
    """Pass when the output has at most ``metadata["max_words"]`` words (default 50)."""
    limit = int(sample.metadata.get("max_words", 50))
    words = len(str(sample.output or "").split())
    if words <= limit:
        return keel.EvalResult(evaluator="max_words", passed=True, score=1.0, reason=f"{words} <= {limit} words")
    return keel.EvalResult(
        evaluator="max_words", passed=False, score=limit / words, reason=f"{words} words, over the limit of {limit}"
    )


@keel.hookimpl
def keel_actions() -> Iterator[keel.ActionSpec]:
    yield word_count


@keel.hookimpl
def keel_evaluators() -> Iterator[keel.EvaluatorSpec]:
    yield keel.EvaluatorSpec(name="max_words", description=max_words.__doc__ or "", evaluate=max_words)
