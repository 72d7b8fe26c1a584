"""A small MCP server for the tests, written with the mcp SDK: run over stdio (the default) or over
streamable HTTP (``--http PORT``, loopback). Its tools cover what a client must survive: a normal
answer, an error the tool reports, a call that hangs, a server that dies mid-call."""

from __future__ import annotations

import asyncio
import os
import sys

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations

server = MCPServer("querylm-test", log_level="WARNING")
CALLS: list[str] = []


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    CALLS.append("add")
    return a + b


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def lookup(city: str) -> str:
    """The country a city is in."""
    CALLS.append("lookup")
    countries = {"paris": "France", "rome": "Italy", "lima": "Peru"}
    return countries.get(city.strip().lower(), "unknown")


@server.tool()
def fail(reason: str) -> str:
    """Always fails, with the reason given."""
    CALLS.append("fail")
    raise ToolError(f"refused: {reason}")


@server.tool()
async def hang(seconds: float = 600.0) -> str:
    """Sleeps (without blocking the server) before answering."""
    CALLS.append("hang")
    await asyncio.sleep(seconds)
    return "awake"


@server.tool()
def die() -> str:
    """Ends the server process in the middle of the call."""
    os._exit(3)


@server.tool()
def calls() -> str:
    """The tools called so far, one a line (to see what reached the server)."""
    return "\n".join(CALLS)


@server.tool()
def pid() -> int:
    """This server's process id (to see that closing the client ends it)."""
    return os.getpid()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--http":
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run()
