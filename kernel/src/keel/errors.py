"""One error tree for everything Keel raises on purpose.

Every message says what failed, where (which plugin, slot or file) and how to fix it.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "ActionDenied",
    "ActionError",
    "ActionInputError",
    "AgentTimeoutError",
    "ApprovalRequired",
    "ConflictError",
    "DriverNotFoundError",
    "ExecutionCancelled",
    "KeelError",
    "NotFoundError",
    "OutputValidationError",
    "PluginConflictError",
    "PluginLoadError",
    "StackError",
    "StoreError",
]


class KeelError(Exception):
    """Base of every error Keel raises on purpose."""


class PluginLoadError(KeelError):
    """A plugin's entry point could not be imported or registered."""

    def __init__(self, entry_point: str, target: str, distribution: str, cause: BaseException):
        self.entry_point = entry_point
        self.target = target
        self.distribution = distribution
        self.cause = cause
        super().__init__(
            f"plugin {entry_point!r} ({target}, from distribution {distribution}) failed to load: "
            f"{type(cause).__name__}: {cause}. Fix or reinstall {distribution}, or skip it with "
            f"KEEL_DISABLE_PLUGINS={entry_point}."
        )


class PluginConflictError(KeelError):
    """Two plugins registered the same name in one hook family."""

    def __init__(self, family: str, name: str, first: str, second: str):
        self.family = family
        self.name = name
        self.plugins = (first, second)
        super().__init__(
            f"{family} name {name!r} is registered by two plugins: {first!r} and {second!r}. "
            f"Disable one with KEEL_DISABLE_PLUGINS={second} (or {first})."
        )


class DriverNotFoundError(KeelError):
    """A stack slot names a driver that no loaded plugin registered."""

    def __init__(self, slot: str, name: str, available: Iterable[str], source: str = "", hint: str = ""):
        self.slot = slot
        self.name = name
        self.available = sorted(available)
        self.source = source
        names = ", ".join(repr(n) for n in self.available) or "none (no plugin registers one)"
        where = f" (set in {source})" if source else ""
        fix = hint or f"pick one of the available names, or install the plugin that provides {name!r}"
        super().__init__(f"unknown {slot} {name!r}{where}. Available: {names}. Fix: {fix}.")


class StackError(KeelError):
    """A stack file or named stack is malformed."""


class NotFoundError(KeelError):
    """A named thing (runnable, execution, key, blob) does not exist."""


class ConflictError(KeelError):
    """An optimistic-concurrency check failed (compare-and-set, expected sequence, request id)."""


class StoreError(KeelError):
    """A store backend failed in a way the caller should see."""


class OutputValidationError(KeelError):
    """The model's answer never satisfied the output contract; carries every attempt."""

    def __init__(self, message: str, attempts: list[dict[str, object]] | None = None):
        self.attempts = attempts or []
        super().__init__(message)


class AgentTimeoutError(KeelError, TimeoutError):
    """An agent execution ran past its ``timeout``."""


class ExecutionCancelled(KeelError):
    """The execution was cancelled before it finished; the message says why."""


class ActionError(KeelError):
    """An action failed; the message is safe to hand back to a model."""


class ActionInputError(ActionError):
    """An action was called with arguments that do not match its schema."""


class ActionDenied(ActionError):
    """Policy refused an action call (fail closed)."""


class ApprovalRequired(ActionError):
    """Policy requires an approval that has not been granted."""
