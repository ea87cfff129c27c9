"""``package.module:attribute`` references, the one way Keel loads them.

Stacks (``runnables``, an agent's ``output_model``), the CLI (``--approver``, ``keel flow run``) and
plugins name Python objects with such a string. :func:`load_ref` imports it with
:func:`pkgutil.resolve_name` and, when it cannot, raises an error that names the string, the cause
and the fix.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from keel.errors import KeelError

__all__ = ["lazy_exports", "load_ref"]


def load_ref(ref: str, *, what: str = "", error: type[KeelError] = KeelError) -> Any:
    """The object ``ref`` (``"package.module:attribute"``, the attribute may be dotted) names.

    :param what: what the string is, for the message (``"runnables entry"``, ``"--approver"``).
    :param error: the :class:`keel.KeelError` subclass to raise (``StackError`` for a stack's).
    :raises KeelError: (``error``) the string is not ``module:attribute``, the module cannot be
        imported, or it has no such attribute; the message names the string, the cause and the fix.

    >>> load_ref("keel:KeelError") is KeelError
    True
    """
    import pkgutil  # on first use: `import keel` stays cheap

    label = f"{what} {ref!r}" if what else repr(ref)
    module, colon, attr = str(ref).partition(":")
    if not (colon and module.strip() and attr.strip()):
        raise error(
            f"{label} is not a reference: write 'package.module:attribute' (the module, a colon, then the "
            "name it defines)"
        )
    try:
        return pkgutil.resolve_name(ref)
    except ModuleNotFoundError as err:
        missing = err.name or module
        cause = (
            f"there is no module {missing!r}"
            if missing == module or module.startswith(f"{missing}.")
            else f"importing {module!r} needs {missing!r}, which is not installed"
        )
        raise error(
            f"{label} could not be loaded: {cause}. Fix: check the spelling, install the package that provides "
            "it, or run from the folder that holds it"
        ) from err
    except AttributeError as err:
        raise error(
            f"{label} could not be loaded: {err}. Fix: check the name after the colon (module {module!r}, "
            f"attribute {attr!r})"
        ) from err
    except (ImportError, SyntaxError, ValueError) as err:
        raise error(
            f"{label} could not be loaded: importing {module!r} failed with {type(err).__name__}: {err}. Fix: "
            "correct that module"
        ) from err


def lazy_exports(namespace: dict[str, Any], homes: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports each public name from its home module on first use,
    so that importing the package (a plugin's entry module, ``import keel``) stays cheap.

    :param namespace: the package's ``globals()`` (its ``__name__`` anchors relative homes).
    :param homes: public name -> the module that defines it; ``".runner"`` is relative to
        ``package``. A name imported once is kept in the package's namespace.

    Use it as::

        def __getattr__(name: str) -> Any:
            return _lazy(name)

        _lazy = keel.lazy_exports(globals(), {"Recorder": ".record", "replay": ".replayer"})
    """

    package = namespace["__name__"]

    def load(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        import importlib

        value = getattr(importlib.import_module(home, package), name)
        namespace[name] = value  # the package's own globals (sys.modules may hold a proxy: Temporal's sandbox)
        return value

    return load
