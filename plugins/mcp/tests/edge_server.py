"""A tiny MCP server (on the mcp SDK's MCPServer) with the awkward tools real servers have.

Run: ``python edge_server.py [anything]`` (extra arguments are ignored: tests use one as a marker
to find the process in the process table). ``EDGE_EXIT_AT_START=3`` makes it exit at start.
"""

from __future__ import annotations

import os
import sys

if os.environ.get("EDGE_EXIT_AT_START"):  # before the slow imports
    print("edge server refuses to start", file=sys.stderr)
    sys.exit(int(os.environ["EDGE_EXIT_AT_START"]))

import anyio
from mcp.server.mcpserver import MCPServer

server = MCPServer("edge")


@server.tool(structured_output=False)
def add(a: int, b: int) -> str:
    """Add two integers."""
    return str(a + b)


@server.tool()
def weather(city: str) -> dict[str, object]:
    """Structured weather for a city."""
    return {"city": city, "celsius": 21}


@server.tool()
def fail(message: str) -> str:
    """Always raises, with this message."""
    raise ValueError(message)


@server.tool()
async def slow(seconds: float) -> str:
    """Answer after some seconds."""
    await anyio.sleep(seconds)
    return "done"


@server.tool()
def die(code: int = 1) -> str:
    """Exit the server process in the middle of the call."""
    os._exit(code)


@server.tool()
def wipe(target: str) -> str:
    """Delete everything under a folder (pretend): irreversible."""
    return f"wiped {target}"


if __name__ == "__main__":
    server.run()
