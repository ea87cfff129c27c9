"""``[settings.toolbox]``: where the file actions live and which hosts ``http_fetch`` may reach."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

import keel

__all__ = ["ToolboxSettings"]


class ToolboxSettings(BaseModel):
    """The toolbox's settings. Nothing is reachable unless named: no ``root`` means no file
    actions, an empty ``allow_hosts`` means every fetch is refused."""

    model_config = ConfigDict(extra="forbid", defer_build=True)  # built on first use: the entry module imports it

    root: str | None = Field(default=None, description="the folder read_file and write_file are confined to")
    allow_hosts: list[str] = Field(
        default_factory=list,
        description="hosts http_fetch may reach: 'example.com', '*.example.com' (subdomains), '127.0.0.1:8080'",
    )
    fetch_timeout: float = Field(default=15.0, gt=0, description="seconds for a whole fetch, redirects included")
    fetch_max_bytes: int = Field(default=512 * 1024, ge=1, description="body bytes kept; the rest is not downloaded")
    max_redirects: int = Field(default=5, ge=0)
    read_max_bytes: int = Field(default=512 * 1024, ge=1, description="read_file returns at most this much")
    write_max_bytes: int = Field(default=5 * 1024 * 1024, ge=1, description="write_file refuses more than this")
    create_root: bool = Field(default=True, description="create the root folder if it does not exist")
    visible_to: list[str] | None = Field(default=None, description="agents (or 'tag:<t>') that may see the actions")

    @classmethod
    def parse(cls, data: dict[str, Any], where: str = "[settings.toolbox]") -> ToolboxSettings:
        return keel.parse_options(cls, data, where=f"keel-toolbox: {where}")
