"""Build the toolbox's actions from its settings: ``http_fetch``, ``read_file``, ``write_file``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import keel
from keel_toolbox.settings import ToolboxSettings

if TYPE_CHECKING:
    from keel_toolbox.files import Folder

__all__ = ["install", "toolbox_actions"]

SOURCE = "keel-toolbox"


def toolbox_actions(settings: ToolboxSettings | None = None, **options: Any) -> list[keel.ActionSpec]:
    """The toolbox's actions, bound to ``settings`` (or to ``ToolboxSettings(**options)``).

    ``http_fetch`` is always offered (it refuses every host until ``allow_hosts`` names some);
    ``read_file`` and ``write_file`` only when ``root`` is set.
    """
    settings = settings or ToolboxSettings.parse(options, "toolbox options")
    specs = [_http_fetch(settings)]
    if settings.root is not None:
        from keel_toolbox.files import Folder

        folder = Folder(settings.root, create=settings.create_root)
        specs += [_read_file(settings, folder), _write_file(settings, folder)]
    return specs


def install(runtime: keel.Runtime, **overrides: Any) -> list[keel.ActionSpec]:
    """Read ``[settings.toolbox]`` from the runtime's stack and add the actions to the runtime.

    runtime = keel.Runtime.from_stack()
    keel_toolbox.install(runtime)
    """
    settings = ToolboxSettings.parse({**runtime.stack.settings("toolbox"), **overrides})
    specs = toolbox_actions(settings)
    for spec in specs:
        runtime.actions.replace(spec, source=SOURCE)
    return specs


def _visible(settings: ToolboxSettings) -> list[str] | None:
    return settings.visible_to


def _http_fetch(settings: ToolboxSettings) -> keel.ActionSpec:
    hosts = ", ".join(settings.allow_hosts) or "none configured"

    async def http_fetch(url: str) -> dict[str, Any]:
        from keel_toolbox.fetch import fetch

        return await fetch(
            url, allow=settings.allow_hosts, timeout=settings.fetch_timeout, max_bytes=settings.fetch_max_bytes,
            max_redirects=settings.max_redirects,
        )  # fmt: skip

    return keel.action(
        name="http_fetch",
        description=(
            "Fetch a web page or API response with HTTP GET. Returns status, a few headers, the body as "
            f"text (cut at {settings.fetch_max_bytes} bytes with a marker) and the redirects followed. "
            f"Only these hosts can be reached: {hosts}."
        ),
        risk="read", tags=["toolbox", "web"], visible_to=_visible(settings), timeout=settings.fetch_timeout + 5,
    )(http_fetch)  # fmt: skip


def _read_file(settings: ToolboxSettings, folder: Folder) -> keel.ActionSpec:
    def read_file(path: str) -> dict[str, Any]:
        return folder.read(path, settings.read_max_bytes)

    return keel.action(
        name="read_file",
        description=(
            "Read a text file of the workspace folder. `path` is relative to that folder (e.g. 'notes/today.md'); "
            f"absolute paths, '..' and symbolic links are refused. At most {settings.read_max_bytes} bytes are returned."
        ),
        risk="read", tags=["toolbox", "files"], visible_to=_visible(settings), timeout=30,
    )(read_file)  # fmt: skip


def _write_file(settings: ToolboxSettings, folder: Folder) -> keel.ActionSpec:
    def write_file(
        path: str, content: str, mode: Literal["overwrite", "append", "create"] = "overwrite"
    ) -> dict[str, Any]:
        return folder.write(path, content, mode, settings.write_max_bytes)

    return keel.action(
        name="write_file",
        description=(
            "Write a text file in the workspace folder (missing folders are created). `path` is relative to that "
            "folder; absolute paths, '..' and symbolic links are refused. mode: 'overwrite' (default, atomic), "
            "'append', or 'create' (fails if the file exists)."
        ),
        risk="write", tags=["toolbox", "files"], visible_to=_visible(settings), timeout=30,
    )(write_file)  # fmt: skip
