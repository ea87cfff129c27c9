"""The options of one ``[environments.<name>]`` table whose ``driver = "mcp"``. Cheap to import."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from keel import Risk

__all__ = ["McpServerOptions", "action_name"]

_INVALID = re.compile(r"[^A-Za-z0-9_.-]")
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class McpServerOptions(BaseModel):
    """How to reach one MCP server and how its tools become Keel actions."""

    model_config = ConfigDict(extra="forbid", defer_build=True)  # built on first use: the entry module names it

    name: str | None = Field(
        default=None, description="the environment's name; default prefix of its actions (see ``prefix``)"
    )
    command: list[str] | None = Field(default=None, description="stdio: the server's command line")
    env: dict[str, str] = Field(default_factory=dict, description="stdio: extra environment variables")
    cwd: str | None = Field(default=None, description="stdio: working folder of the server process")
    url: str | None = Field(default=None, description="streamable HTTP: the endpoint, e.g. http://127.0.0.1:3001/mcp")
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="streamable HTTP: request headers; ${NAME} is replaced by the environment variable NAME",
    )
    risk: Risk = Field(
        default="write", description="the risk of every tool of this server, unless tool_risk says otherwise"
    )
    tool_risk: dict[str, Risk] = Field(default_factory=dict, description="per-tool risk overrides, by MCP tool name")
    tags: list[str] = Field(default_factory=list, description="tags of every action of this server")
    visible_to: list[str] | None = Field(default=None, description="agent names or 'tag:<t>' that may see its tools")
    prefix: str | None = Field(
        default=None, description="action name prefix; default '<name>_', or '<server's own name>_' when unnamed"
    )
    include: list[str] | None = Field(default=None, description="only these MCP tools become actions")
    exclude: list[str] = Field(default_factory=list, description="these MCP tools never become actions")
    timeout: float | None = Field(default=30.0, description="seconds one tool call may take")
    tool_timeout: dict[str, float] = Field(default_factory=dict, description="per-tool timeouts, by MCP tool name")
    redact: list[str] = Field(default_factory=list, description="argument names hidden in audit records")
    start_timeout: float = Field(default=30.0, description="seconds to spawn, connect and initialize")

    @model_validator(mode="after")
    def _one_transport(self) -> McpServerOptions:
        table = f"[environments.{self.name}]" if self.name else "an mcp environment"
        if (self.command is None) == (self.url is None):
            raise ValueError(
                f'{table} needs exactly one of command = [...] (stdio) or url = "http://..." (streamable HTTP)'
            )
        if self.command is not None and not self.command:
            raise ValueError(f"{table}: command must not be empty")
        return self

    def resolved_headers(self, environ: dict[str, str]) -> dict[str, str]:
        """``headers`` with ``${NAME}`` replaced from ``environ``; a missing variable is an error."""

        def value(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in environ:
                raise ValueError(f"header value needs the environment variable {name}: set it, or change headers")
            return environ[name]

        return {k: _VARIABLE.sub(value, v) for k, v in self.headers.items()}

    @property
    def transport(self) -> str:
        return "stdio" if self.command is not None else "http"

    def action_name(self, tool: str, server_name: str = "mcp") -> str:
        prefix = self.prefix if self.prefix is not None else f"{self.name or server_name}_"
        return action_name(prefix, tool)

    def wants(self, tool: str) -> bool:
        return (self.include is None or tool in self.include) and tool not in self.exclude


def action_name(prefix: str, tool: str) -> str:
    """A valid Keel action name (``^[A-Za-z_][A-Za-z0-9_.-]{0,63}$``) for an MCP tool."""
    name = _INVALID.sub("_", prefix + tool)
    if not name or not (name[0].isalpha() or name[0] == "_"):
        name = "_" + name
    return name[:64]


def parse(options: dict[str, Any]) -> McpServerOptions:
    return McpServerOptions.model_validate(options)
