"""keel-toolbox: the built-in actions users expect.

- ``http_fetch``: HTTP GET on allow-listed hosts, with time and size limits, redirects re-checked;
- ``read_file`` / ``write_file``: confined to one folder (no absolute paths, ``..`` or links).

Configure them with ``[settings.toolbox]`` and :func:`install`, with :func:`toolbox_actions`, or
as an environment: ``[environments.tools] driver = "toolbox"``. Names load on first use, so that
plugin discovery (which imports ``keel_toolbox.plugin``) stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from keel import lazy_exports

if TYPE_CHECKING:
    from keel_toolbox.actions import install, toolbox_actions
    from keel_toolbox.settings import ToolboxSettings

__all__ = ["ToolboxSettings", "install", "toolbox_actions"]

_HOMES = {"ToolboxSettings": "settings", "install": "actions", "toolbox_actions": "actions"}


def __getattr__(name: str) -> Any:
    return _lazy(name)


_lazy = lazy_exports(globals(), {name: f".{home}" for name, home in _HOMES.items()})
