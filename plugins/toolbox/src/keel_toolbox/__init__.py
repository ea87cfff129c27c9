"""keel-toolbox: the built-in actions users expect.

- ``http_fetch``: HTTP GET on allow-listed hosts, with time and size limits, redirects re-checked;
- ``read_file`` / ``write_file``: confined to one folder (no absolute paths, ``..`` or links).

Configure them with ``[settings.toolbox]`` and :func:`install`, with :func:`toolbox_actions`, or
as an environment: ``[environments.tools] driver = "toolbox"``. Names load on first use, so that
plugin discovery (which imports ``keel_toolbox.plugin``) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keel_toolbox.actions import install, toolbox_actions
    from keel_toolbox.settings import ToolboxSettings

__all__ = ["ToolboxSettings", "install", "toolbox_actions"]

_HOMES = {"ToolboxSettings": "settings", "install": "actions", "toolbox_actions": "actions"}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'keel_toolbox' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"keel_toolbox.{_HOMES[name]}"), name)
    globals()[name] = value
    return value
