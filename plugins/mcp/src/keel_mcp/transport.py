"""A stdio transport for the mcp SDK's ``Client`` that keeps hold of the server process.

The SDK's own ``stdio_client`` hides the process; a managed environment needs it: its pid for
status and for the process-table checks, its exit code for health and for error messages, and its
stderr for "why did it die". The process runs in its own session (process group), so a Ctrl-C in
the terminal reaches Keel, which stops it, and stopping kills the whole group: no orphans.
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import IO, Any

import anyio
from anyio.abc import Process
from mcp.shared.message import SessionMessage
from mcp_types import jsonrpc_message_adapter

__all__ = ["StdioServer", "stop_process"]

#: seconds a server gets to exit on its own once its stdin closes, then after SIGTERM
GRACE = 2.0


class StdioServer:
    """A ``Transport`` (async context manager yielding the SDK's read and write streams)."""

    def __init__(self, command: list[str], *, env: dict[str, str] | None, cwd: str | None, stderr: IO[bytes]):
        self.command = command
        self.env = env
        self.cwd = cwd
        self.stderr = stderr
        self.process: Process | None = None
        self._context: Any = None

    async def __aenter__(self) -> Any:
        self._context = self._run()
        return await self._context.__aenter__()

    async def __aexit__(self, *exc: Any) -> bool | None:
        result: bool | None = await self._context.__aexit__(*exc)
        return result

    @asynccontextmanager
    async def _run(self) -> AsyncIterator[Any]:
        process = await anyio.open_process(
            self.command, env=self.env, cwd=self.cwd, stderr=self.stderr, start_new_session=True
        )
        self.process = process
        to_session, from_server = anyio.create_memory_object_stream[SessionMessage | Exception](0)
        to_server, from_session = anyio.create_memory_object_stream[SessionMessage](0)

        async def read_stdout() -> None:
            assert process.stdout is not None
            pending = b""
            async with to_session:
                with suppress(anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream, OSError):
                    async for chunk in process.stdout:
                        *lines, pending = (pending + chunk).split(b"\n")
                        for line in lines:
                            if line.strip():
                                await to_session.send(_parse(line))

        async def write_stdin() -> None:
            assert process.stdin is not None
            async with from_session:
                try:
                    async for message in from_session:
                        data = message.message.model_dump_json(by_alias=True, exclude_unset=True) + "\n"
                        await process.stdin.send(data.encode())
                except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
                    # the server is gone: end the session's read side so no request waits forever
                    await to_session.aclose()

        async with anyio.create_task_group() as tg:
            tg.start_soon(read_stdout)
            tg.start_soon(write_stdin)
            try:
                yield from_server, to_server
            finally:
                with anyio.CancelScope(shield=True):
                    await stop_process(process)
                tg.cancel_scope.cancel()


def _parse(line: bytes) -> SessionMessage | Exception:
    try:
        return SessionMessage(jsonrpc_message_adapter.validate_json(line, by_name=False))
    except ValueError as err:  # a server printing non-protocol text on stdout: the session logs it
        return err


async def stop_process(process: Process) -> None:
    """Close stdin, give the server a moment, then SIGTERM and SIGKILL its whole process group."""
    if process.stdin is not None:
        with suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
            await process.stdin.aclose()
    for sig in (None, signal.SIGTERM, signal.SIGKILL):
        if sig is not None:
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, sig)  # start_new_session: the pid is the group id
        if await _exited(process, GRACE):
            break
    # the leader is gone; members of its group that outlived it are killed too
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
        if process.stdout is not None:
            await process.stdout.aclose()


async def _exited(process: Process, timeout: float) -> bool:
    # poll returncode, not process.wait(): wait() also waits for pipe EOF, which a grandchild holding
    # the pipe can delay forever
    with anyio.move_on_after(timeout):
        while process.returncode is None:
            await anyio.sleep(0.02)
    return process.returncode is not None
