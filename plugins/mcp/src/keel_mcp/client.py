"""A hosted MCP server as a Keel environment whose tools are Keel actions.

The SDK's ``Client`` is a stack of async context managers (transport task group, session, ...)
whose cancel scopes must be entered and exited by one task. The environment's ``start`` and
``stop`` are called from different tasks (the runtime's, a supervisor's, a caller's), so the
client lives in an *owner task* of its own: it opens the client, reports ready, waits for the stop
signal and closes the client, all in one task. Calls from any task go through the open session.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING, Any

import anyio
import mcp_types
from mcp import Client
from mcp.shared.exceptions import MCPError

import keel
from keel_mcp.options import McpServerOptions
from keel_mcp.transport import StdioServer

if TYPE_CHECKING:
    from keel.types import EnvironmentStatus

__all__ = ["McpServerDown", "McpServerEnvironment", "McpToolError"]


class McpToolError(keel.ActionError):
    """The MCP tool reported an error (``isError``) or the server answered with a protocol error."""

    code = "mcp.tool_failed"


class McpServerDown(keel.ActionError):
    """The MCP server is not running: stopped, crashed or being restarted."""

    code = "mcp.server_down"


class McpServerEnvironment:
    """One MCP server (stdio or streamable HTTP), started, checked and stopped by Keel."""

    def __init__(self, options: McpServerOptions):
        self.options = options
        #: the stack's name for it when given (``name = ...``), else the server's own name once known
        self.name = options.name or _default_name(options)
        self._status: EnvironmentStatus = "stopped"
        self._client: Client | None = None
        self._stdio: StdioServer | None = None
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the environment
        self._task: asyncio.Task[None] | None = None
        self._ready: anyio.Event | None = None
        self._stop: anyio.Event | None = None
        self._done: anyio.Event | None = None
        self._failure: BaseException | None = None
        self._tools: list[mcp_types.Tool] | None = None
        self.server_name = ""

    # ----------------------------------------------------------------------------- lifecycle

    @property
    def status(self) -> EnvironmentStatus:
        if self._status == "ready" and self._down_reason():
            return "unhealthy"
        return self._status

    @property
    def pid(self) -> int | None:
        """The server process id (stdio), while it runs."""
        process = self._stdio.process if self._stdio else None
        return process.pid if process is not None and process.returncode is None else None

    async def start(self) -> None:
        if self._task is not None:
            raise keel.KeelError(f"MCP server {self.name!r} was already started; build a new environment")
        self._status = "starting"
        self._ready, self._stop, self._done = anyio.Event(), anyio.Event(), anyio.Event()
        # not a task group: the owner task must outlive this call (see the module docstring)
        self._task = asyncio.get_running_loop().create_task(self._own(), name=f"keel-mcp:{self.name}")
        try:
            with anyio.move_on_after(self.options.start_timeout) as waited:
                await self._ready.wait()
        except BaseException:  # cancelled while starting (Ctrl-C): leave no server behind
            await self.stop()
            raise
        if waited.cancelled_caught:
            self._failure = TimeoutError(f"no answer to initialize within {self.options.start_timeout}s")
        if self._client is None:
            await anyio.sleep(0.05)  # let an exiting process be reaped, so the message has its exit code
            message = f"MCP server {self.name!r} did not start: {self._explain(self._failure)}"
            await self.stop()
            self._status = "failed"
            raise keel.KeelError(message)
        try:
            # listed now, so that a server that cannot list its tools fails its start (and is retried)
            with anyio.fail_after(self.options.start_timeout):
                self._tools = await self._list_tools()
        except Exception as err:
            await self.stop()
            self._status = "failed"
            raise keel.KeelError(f"MCP server {self.name!r} started but did not list its tools: {_text(err)}") from err
        self._status = "ready"

    async def _own(self) -> None:
        assert self._ready is not None and self._stop is not None and self._done is not None
        try:
            async with self._connect() as client:
                self._client = client
                self.server_name = client.server_info.name if client.server_info else ""
                if not self.options.name and self.server_name:
                    self.name = self.server_name
                self._ready.set()
                await self._stop.wait()
        except BaseException as err:  # the owner records why the session ended; nobody awaits this task
            self._failure = err
            if isinstance(err, asyncio.CancelledError):
                raise
        finally:
            self._client = None
            self._ready.set()
            self._done.set()

    def _connect(self) -> Client:
        opts = self.options
        if opts.url is not None:
            if opts.headers:
                return Client(_http_with_headers(opts.url, opts.resolved_headers(dict(os.environ))), cache=None)
            return Client(opts.url, cache=None)
        assert opts.command is not None
        env = {**_inherited_env(), **opts.env}
        self._stdio = StdioServer(opts.command, env=env, cwd=opts.cwd, stderr=self._stderr)
        return Client(self._stdio, cache=None)

    async def stop(self) -> None:
        with anyio.CancelScope(shield=True):
            if self._stop is not None and self._done is not None and self._task is not None and not self._task.done():
                self._stop.set()
                with anyio.move_on_after(10):
                    await self._done.wait()
                if not self._task.done():
                    self._task.cancel()
                    with anyio.move_on_after(5), suppress(asyncio.CancelledError):
                        await self._done.wait()
            self._stderr.close()
        if self._status != "failed":
            self._status = "stopped"

    async def health(self) -> keel.Health:
        down = self._down_reason()
        if down:
            return keel.Health(ok=False, detail=down)
        assert self._client is not None
        try:
            with anyio.fail_after(10):
                result = await self._client.list_tools(cache_mode="bypass")
        except Exception as err:
            return keel.Health(ok=False, detail=f"MCP server {self.name!r} did not answer tools/list: {_text(err)}")
        return keel.Health(ok=True, detail=f"{len(result.tools)} tools")

    def _unavailable(self, tool: str, why: str) -> McpServerDown:
        return McpServerDown(
            f"{why}; its tool {tool!r} is unavailable until Keel restarts the server (restart policy of the "
            f"environment; see `keel env status`)"
        )

    async def _settle(self) -> None:
        """Give a dying server process a moment to be reaped, so messages carry its exit code."""
        process = self._stdio.process if self._stdio else None
        if process is not None:
            with anyio.move_on_after(1.0):
                while process.returncode is None:
                    await anyio.sleep(0.02)

    def _down_reason(self) -> str:
        process = self._stdio.process if self._stdio else None
        if process is not None and process.returncode is not None:
            return f"MCP server {self.name!r} {_exit(process.returncode)}"
        if self._client is None or self._done is None or self._done.is_set():
            why = self._explain(self._failure) if self._failure else self._status
            return f"MCP server {self.name!r} is not connected ({why})"
        return ""

    def _explain(self, err: BaseException | None) -> str:
        process = self._stdio.process if self._stdio else None
        if process is not None and process.returncode is not None:
            return f"the server process {_exit(process.returncode)}{self._stderr_tail(process.returncode)}"
        return (_text(err) if err is not None else "unknown reason") + self._stderr_tail()

    def _stderr_tail(self, code: int | None = None, limit: int = 400) -> str:
        if code is not None and code < 0:
            return ""  # killed by a signal: its last log lines are not the reason
        with suppress(OSError, ValueError):
            self._stderr.seek(0, 2)
            size = self._stderr.tell()
            self._stderr.seek(max(0, size - limit))
            lines = self._stderr.read().decode(errors="replace").strip().splitlines()
            text = " | ".join(line.strip() for line in lines[-5:] if line.strip())
            if text:
                return f"; its stderr ends with: {text}"
        return ""

    # ------------------------------------------------------------------------------- actions

    async def actions(self) -> list[keel.ActionSpec]:
        """The server's tools as Keel actions (schema, description, risk, scope, timeout)."""
        if self._tools is None:
            if self._client is None:
                raise McpServerDown(f"MCP server {self.name!r} is not running")
            self._tools = await self._list_tools()
        return [self._spec(tool) for tool in self._tools if self.options.wants(tool.name)]

    async def _list_tools(self) -> list[mcp_types.Tool]:
        assert self._client is not None
        tools: list[mcp_types.Tool] = []
        cursor: str | None = None
        for _ in range(100):  # a server whose pagination never ends cannot hang start-up
            page = await self._client.list_tools(cursor=cursor, cache_mode="bypass")
            tools += page.tools
            cursor = page.next_cursor
            if cursor is None:
                break
        return tools

    def _spec(self, tool: mcp_types.Tool) -> keel.ActionSpec:
        opts = self.options
        schema = dict(tool.input_schema) or {"type": "object", "properties": {}}
        name = opts.action_name(tool.name, self.name)
        return keel.ActionSpec(
            name=name,
            description=tool.description or (tool.annotations.title if tool.annotations else None) or tool.name,
            parameters=schema,
            handler=self._handler(name, tool.name, schema),
            risk=opts.tool_risk.get(tool.name, opts.risk),
            tags=frozenset(opts.tags),
            visible_to=frozenset(opts.visible_to) if opts.visible_to is not None else None,
            timeout=opts.tool_timeout.get(tool.name, opts.timeout),
            redact=frozenset(opts.redact),
        )

    def _handler(self, action: str, tool: str, schema: dict[str, Any]) -> Any:
        async def call(**arguments: Any) -> Any:
            _validate(f"action {action!r} (tool {tool!r} of MCP server {self.name!r})", schema, arguments)
            return await self.call_tool(tool, arguments)

        call.__name__ = _slug(tool)
        return call

    async def call_tool(self, tool: str, arguments: dict[str, Any]) -> Any:
        """Call one tool: text content comes back as a string, structured content as a dict (a
        wrapped plain value, ``{"result": v}``, as ``v``); an error result raises :class:`McpToolError`."""
        down = self._down_reason()
        if down or self._client is None:
            raise self._unavailable(tool, down or f"MCP server {self.name!r} is not running")
        try:
            result = await self._client.call_tool(tool, arguments)
        except MCPError as err:
            if err.code == mcp_types.CONNECTION_CLOSED:
                await self._settle()
                why = self._down_reason() or f"MCP server {self.name!r} closed the connection"
                raise self._unavailable(tool, f"{why} during the call") from err
            raise McpToolError(f"MCP server {self.name!r} refused tool {tool!r}: {err.message}") from err
        if result.is_error:
            raise McpToolError(f"tool {tool!r} of MCP server {self.name!r} reported an error: {_content(result)}")
        structured = result.structured_content
        if isinstance(structured, dict):
            # SDK servers wrap a plain return value as {"result": value}: hand back the value itself
            return structured["result"] if set(structured) == {"result"} else structured
        return _content(result)


def _validate(where: str, schema: dict[str, Any], arguments: dict[str, Any]) -> None:
    """Check arguments against the tool's schema before the call, as Keel does for its own actions:
    an argument the schema does not name is refused unless the schema allows extra properties."""
    import jsonschema  # comes with the mcp SDK

    if "properties" in schema and "additionalProperties" not in schema:
        schema = {**schema, "additionalProperties": False}
    try:
        validator = jsonschema.validators.validator_for(schema)(schema)
        problems = sorted(validator.iter_errors(arguments), key=lambda e: list(e.absolute_path))
    except jsonschema.SchemaError:
        return  # the server's schema is broken: let the server judge the arguments
    if problems:
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e.absolute_path) or '(arguments)'}: {e.message}" for e in problems
        )
        raise keel.ActionInputError(f"{where} got invalid arguments: {detail}. Expected schema: {json.dumps(schema)}")


def _content(result: mcp_types.CallToolResult) -> str:
    parts: list[str] = []
    for block in result.content:
        if isinstance(block, mcp_types.TextContent):
            parts.append(block.text)
        elif isinstance(block, mcp_types.ImageContent | mcp_types.AudioContent):
            parts.append(f"[{block.type} {block.mime_type}, {len(block.data) * 3 // 4} bytes]")
        elif isinstance(block, mcp_types.EmbeddedResource):
            resource = block.resource
            text = getattr(resource, "text", None)
            parts.append(text if isinstance(text, str) else f"[resource {resource.uri}]")
        elif isinstance(block, mcp_types.ResourceLink):
            parts.append(f"[resource link {block.uri}: {block.name}]")
        else:
            parts.append(f"[{getattr(block, 'type', 'content')}]")
    if not parts and result.structured_content is not None:
        return json.dumps(result.structured_content, default=str)
    return "\n".join(parts)


@asynccontextmanager
async def _http_with_headers(url: str, headers: dict[str, str]) -> AsyncIterator[Any]:
    """The SDK's streamable HTTP transport on an HTTP client that sends ``headers`` (auth)."""
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    # the SDK's own defaults: 30 s to connect and write, 300 s to read (a stream may stay open)
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=300.0)) as http,
        streamable_http_client(url, http_client=http) as streams,
    ):
        yield streams


def _default_name(options: McpServerOptions) -> str:
    if options.command:
        return os.path.basename(options.command[-1] if len(options.command) > 1 else options.command[0])
    return str(options.url)


def _exit(code: int) -> str:
    if code < 0:
        with suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


def _text(err: BaseException) -> str:
    if isinstance(err, BaseExceptionGroup):
        return "; ".join(_text(e) for e in err.exceptions)
    if isinstance(err, MCPError):
        return err.message
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", text) or "tool"


def _inherited_env() -> dict[str, str]:
    """What a server process inherits: enough to find its interpreter and home, no secrets."""
    keep = ("HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV")
    return {k: os.environ[k] for k in keep if k in os.environ}
