"""One error tree for everything Keel raises on purpose.

Every message says what failed, where (which plugin, slot or file) and how to fix it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, ClassVar

__all__ = [
    "CODE_PATTERN",
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
    "OutputLimitExceeded",
    "OutputValidationError",
    "IncompatiblePluginError",
    "PluginConflictError",
    "PluginLoadError",
    "StackError",
    "StoreError",
    "ToolLoopLimit",
    "UnknownPluginError",
    "error_code",
]


#: what a ``code`` looks like: lower-case snake words joined by dots (``flow.step_failed``)
CODE_PATTERN = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower().strip("_")


class KeelError(Exception):
    """Base of every error Keel raises on purpose.

    ``code`` is the machine-readable kind of the error: a stable, lower-case dotted string
    (``plugin.load_failed``, ``flow.step_failed``) that a program branches on instead of the class
    name or the message, which may change. Every subclass declares its own, unique one (Keel's are
    listed in docs/errors.md; a test checks that every subclass in keel and in each installed
    plugin has one). A subclass that declares none gets ``<top package>.<snake_case class name>``.
    """

    code: ClassVar[str] = "error"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "code" not in cls.__dict__:
            top = re.sub(r"[^a-z0-9_]", "_", cls.__module__.partition(".")[0].removeprefix("keel_").lower())
            top = top.strip("_0123456789") or "app"
            cls.code = f"{top}.{re.sub(r'[^a-z0-9_]', '_', _snake(cls.__name__)).strip('_0123456789') or 'error'}"
        if not isinstance(cls.code, str) or not CODE_PATTERN.match(cls.code):
            raise TypeError(
                f"{cls.__module__}.{cls.__qualname__}.code = {cls.code!r} is not a valid error code: use "
                "lower-case snake words joined by dots, such as 'myplugin.quota_exceeded'"
            )


def error_code(error: BaseException | None) -> str:
    """The ``code`` of a :class:`KeelError`; ``"internal"`` for any other exception (a bug, not a
    kind a caller can act on), ``""`` for ``None``."""
    if error is None:
        return ""
    return error.code if isinstance(error, KeelError) else "internal"


class PluginLoadError(KeelError):
    """A plugin's entry point could not be imported or registered, or a hook of it misbehaved.

    :ivar during: ``"load"`` (import, registration with pluggy) or ``"register"`` (a registration
        hook raised or returned the wrong shape).
    """

    code = "plugin.load_failed"

    def __init__(self, entry_point: str, target: str, distribution: str, cause: BaseException, *, during: str = "load"):
        self.entry_point = entry_point
        self.target = target
        self.distribution = distribution
        self.cause = cause
        self.during = during
        origin = ", ".join(
            part for part in (target, f"from distribution {distribution}" if distribution else "") if part
        )
        where = f" ({origin})" if origin else ""
        fix = f"Fix or reinstall {distribution}, or skip it" if distribution else "Fix it, or skip it"
        super().__init__(
            f"plugin {entry_point!r}{where} failed to {during}: {type(cause).__name__}: {cause}. "
            f"{fix} with KEEL_DISABLE_PLUGINS={entry_point}."
        )


class IncompatiblePluginError(KeelError):
    """An installed plugin declares a keel-kernel range the installed kernel is not in; it is not
    imported. :ivar problem: the declared range and the installed version, with the fix."""

    code = "plugin.incompatible"

    def __init__(self, entry_point: str, target: str, distribution: str, version: str, problem: str):
        self.entry_point = entry_point
        self.target = target
        self.distribution = distribution
        self.problem = problem
        super().__init__(
            f"plugin {entry_point!r} ({target}, from distribution {distribution} {version}) is built for another "
            f"kernel contract, so it is not loaded: {problem}; or skip it with KEEL_DISABLE_PLUGINS={entry_point}."
        )


class PluginConflictError(KeelError):
    """Two plugins registered the same name: in one hook family, as an entry-point name, or as a
    named stack. ``origins`` say where each came from (entry point, distribution)."""

    code = "plugin.conflict"

    def __init__(
        self, family: str, name: str, first: str, second: str, *, origins: tuple[str, str] | None = None, fix: str = ""
    ):
        self.family = family
        self.name = name
        self.plugins = (first, second)
        self.origins = origins or (repr(first), repr(second))
        fix = fix or f"Disable one with KEEL_DISABLE_PLUGINS={second} (or {first}), or uninstall its distribution."
        super().__init__(
            f"{family} name {name!r} is registered twice: by {self.origins[0]} and by {self.origins[1]}. {fix}"
        )


class UnknownPluginError(KeelError):
    """A plugin switch (``KEEL_LOAD_PLUGINS``, ``KEEL_DISABLE_PLUGINS``, a stack's ``plugins``) names
    an entry point that is not installed."""

    code = "plugin.unknown"

    def __init__(self, names: Iterable[str], source: str, known: Iterable[str]):
        import difflib

        self.names = list(names)
        self.source = source
        self.known = sorted(known)
        hints = []
        for name in self.names:
            close = difflib.get_close_matches(name, self.known, n=1)
            if close:
                hints.append(f"{name!r} -> did you mean {close[0]!r}?")
        listed = ", ".join(repr(n) for n in self.names)
        super().__init__(
            f"unknown plugin name{'s' if len(self.names) > 1 else ''} {listed} in {source}. "
            f"Installed plugins (entry points in group 'keel'): {', '.join(self.known) or 'none'}. "
            + (" ".join(hints) + " " if hints else "")
            + "Fix the name, or install the distribution that provides it."
        )


class DriverNotFoundError(KeelError):
    """A stack slot names a driver that no loaded plugin registered."""

    code = "stack.driver_not_found"

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

    code = "stack.invalid"


class NotFoundError(KeelError):
    """A named thing (runnable, execution, key, blob) does not exist."""

    code = "not_found"


class ConflictError(KeelError):
    """An optimistic-concurrency check failed (compare-and-set, expected sequence, request id)."""

    code = "conflict"


class StoreError(KeelError):
    """A store backend failed in a way the caller should see."""

    code = "store.failed"


class OutputValidationError(KeelError):
    """The model's answer never satisfied the output contract; carries every attempt."""

    code = "output.invalid"

    def __init__(self, message: str, attempts: list[dict[str, object]] | None = None):
        self.attempts = attempts or []
        super().__init__(message)


class OutputLimitExceeded(KeelError):
    """A model answer went past one of its declared :class:`keel.OutputLimits` while it streamed.

    ``limit`` names the setting (``max_chars``, ``max_depth``, ``max_number_chars``,
    ``max_string_chars``), ``value`` what the answer reached and ``maximum`` the limit.
    """

    code = "output.limit_exceeded"

    def __init__(self, limit: str, value: int, maximum: int, what: str = "the answer", agent: str = ""):
        self.limit = limit
        self.value = value
        self.maximum = maximum
        self.what = what
        who = f"agent {agent!r}: " if agent else ""
        super().__init__(
            f"{who}{what} of the model's answer reached {value:,}, past the limit {limit}={maximum:,}; "
            f"the answer was stopped. If such answers are legitimate, raise it per agent: "
            f"Agent(..., limits={{{limit!r}: ...}})"
        )


class ToolLoopLimit(KeelError):
    """The tool loop hit a limit: too many rounds (``max_tool_steps``) or too many calls in one
    round (``max_tool_calls``). ``limit`` names which."""

    code = "agent.tool_loop_limit"

    def __init__(self, message: str, limit: str):
        self.limit = limit
        super().__init__(message)


class AgentTimeoutError(KeelError, TimeoutError):
    """An agent execution ran past its ``timeout``."""

    code = "agent.timeout"


class ExecutionCancelled(KeelError):
    """The execution was cancelled before it finished; the message says why."""

    code = "execution.cancelled"


class ActionError(KeelError):
    """An action failed; the message is safe to hand back to a model."""

    code = "action.failed"


class ActionInputError(ActionError):
    """An action was called with arguments that do not match its schema."""

    code = "action.invalid_input"


class ActionDenied(ActionError):
    """Policy refused an action call (fail closed)."""

    code = "action.denied"


class ApprovalRequired(ActionError):
    """Policy requires an approval that has not been granted."""

    code = "action.approval_required"
