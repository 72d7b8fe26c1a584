"""MCP in: the tools of a Model Context Protocol server as querylm Tools (the official ``mcp`` SDK, 2.x).

``ToolRegistry.from_mcp(server)`` / ``registry.add_mcp(server)`` connect to a server (a command started
over stdio, or a streamable HTTP url), list its tools and register each with its name, description and
input schema as the server lists them. The SDK is async and its session is bound to the event loop that
opened it, so each connection lives on an event loop of its own, on a daemon thread the registry owns:
sync ``dispatch`` (which runs its own loop) and async ``adispatch`` (on the caller's loop) reach it
alike, and a caller's timeout cancels the request there. Calls go through the registry like any tool's:
generated under the union grammar, validated with jsonschema before they are sent, bounded by the
tool's timeout; a result the server flags ``isError`` and a connection that fails come back as error
results (``exception``), never as a crash. The connection closes with the registry (``close()``, the
context manager, or at interpreter exit).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import logging
import os
import shlex
import sys
import threading
import weakref
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

from .tool import Tool, ToolError

log = logging.getLogger(__name__)

MCPServerSpec = Any
"""A server to connect to: an ``http(s)://`` url (streamable HTTP), a command line (a string, split as a
shell would, or an argv list) started over stdio, or the SDK's ``StdioServerParameters``."""

CONNECT_TIMEOUT = 30.0
"""Seconds to start a server (or reach it) and list its tools."""
CLOSE_TIMEOUT = 5.0
"""Seconds to wait for a session to shut down (the SDK then ends a stdio server's process)."""


class MCPToolError(Exception):
    """The server ran the tool and reported an error (``isError``): its text is the message."""


class MCPConnectionError(Exception):
    """The request did not get an answer: the server is gone, or the connection broke."""


def _require() -> Any:
    try:
        import mcp
    except ImportError as err:
        raise ToolError(f"MCP tools need the mcp SDK (pip install 'querylm[mcp]'): {err}") from None
    return mcp


def _leaf(err: BaseException) -> BaseException:
    """The first real error inside the SDK's (anyio's) exception groups."""
    inner = getattr(err, "exceptions", None)  # BaseExceptionGroup (Python 3.11+, or the backport)
    while isinstance(inner, tuple) and inner:
        err = inner[0]
        inner = getattr(err, "exceptions", None)
    return err


def _describe(err: BaseException) -> str:
    err = _leaf(err)
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


class MCPSession:
    """One open connection to an MCP server, held by a task on a private event loop thread."""

    def __init__(
        self,
        server: MCPServerSpec,
        *,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        connect_timeout: float = CONNECT_TIMEOUT,
        errlog: TextIO | None = None,
    ):
        """``env``/``cwd``: the stdio server's environment and folder. ``errlog``: where a stdio
        server's stderr goes (default: this process's stderr)."""
        mcp = _require()
        self.server = server
        self.target = _label(server)
        """The server as messages name it: its url, or its command line (the program's name, shortened)."""
        self._transport = _transport(mcp, server, env=env, cwd=cwd, errlog=errlog)
        self._client: Any = None
        self._closed = False
        self._stop = asyncio.Event()  # bound to the session's loop on first use (Python >= 3.10)
        self._ended = threading.Event()  # set when the holding task has left the SDK's context
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, daemon=True, name=f"querylm-mcp {self.target[:40]}"
        )
        self._thread.start()
        ready: concurrent.futures.Future[list[Any]] = concurrent.futures.Future()
        self._held = asyncio.run_coroutine_threadsafe(self._hold(mcp, ready), self._loop)
        try:
            self.tools: list[Any] = ready.result(connect_timeout)
            """The tools as the server listed them (the SDK's ``Tool`` objects, every page)."""
        except concurrent.futures.TimeoutError:
            self.close(grace=0.0)  # a server that does not answer is not asked to shut down
            raise ToolError(
                f"MCP server {self.target}: no answer within {connect_timeout:g} s of connecting"
            ) from None
        except BaseException as err:
            self.close()
            raise ToolError(f"can't connect to the MCP server {self.target}: {_describe(err)}") from None
        _OPEN.add(self)

    async def _hold(self, mcp: Any, ready: concurrent.futures.Future[list[Any]]) -> None:
        """Open the client, list the tools, then keep the session open until ``close``: the SDK's
        context must be entered and left by one task."""
        try:
            async with mcp.Client(self._transport) as client:
                tools: list[Any] = []
                cursor = None
                while True:
                    page = await client.list_tools(cursor=cursor)
                    tools.extend(page.tools)
                    cursor = page.next_cursor
                    if not cursor:
                        break
                self._client = client
                ready.set_result(tools)
                await self._stop.wait()
        except BaseException as err:
            if not ready.done():
                ready.set_exception(err)
            elif not self._closed:
                log.warning("MCP server %s: the connection ended: %s", self.target, _describe(err))
        finally:
            self._client = None
            self._ended.set()

    @property
    def connected(self) -> bool:
        return self._client is not None and not self._held.done()

    async def acall(self, name: str, arguments: dict[str, Any]) -> Any:
        """The server's ``CallToolResult`` for one call. Cancelling the awaiting task (a timeout)
        cancels the request on the session's loop."""
        if not self.connected:
            raise MCPConnectionError(f"the MCP server {self.target} is not connected")
        fut = asyncio.run_coroutine_threadsafe(self._call(name, arguments), self._loop)
        return await asyncio.wrap_future(fut)

    async def _call(self, name: str, arguments: dict[str, Any]) -> Any:
        client = self._client
        if client is None:
            raise MCPConnectionError(f"the MCP server {self.target} is not connected")
        try:
            return await client.call_tool(name, arguments)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            raise MCPConnectionError(f"the MCP server {self.target}: {_describe(err)}") from None

    def close(self, grace: float = CLOSE_TIMEOUT) -> None:
        """End the session (a stdio server's process with it) and its thread. Idempotent. The server
        gets ``grace`` seconds to shut down; then the session's task is cancelled, which still ends
        the process (the SDK's transport terminates it on the way out)."""
        if self._closed:
            return
        self._closed = True
        _OPEN.discard(self)
        self._loop.call_soon_threadsafe(self._stop.set)
        if not self._ended.wait(grace):
            self._held.cancel()
            self._ended.wait(CLOSE_TIMEOUT)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(CLOSE_TIMEOUT)
        if not self._thread.is_alive():
            self._loop.close()

    def __repr__(self) -> str:
        return f"MCPSession({self.target!r}, {'connected' if self.connected else 'closed'})"


def _label(server: Any) -> str:
    if isinstance(server, str) and server.startswith(("http://", "https://")):
        return server
    argv = _argv(server)
    text = " ".join([Path(argv[0]).name, *argv[1:]]) if argv else "''"
    return text if len(text) <= 120 else text[:119] + "…"


def _argv(server: Any) -> list[str]:
    if isinstance(server, str):
        return shlex.split(server)
    if isinstance(server, Sequence):
        return [str(a) for a in server]
    command = getattr(server, "command", None)
    if command is not None:  # StdioServerParameters
        return [command, *getattr(server, "args", [])]
    raise ToolError(f"can't connect to {server!r}: expected a url, a command line or StdioServerParameters")


def _transport(
    mcp: Any, server: Any, *, env: dict[str, str] | None, cwd: str | None, errlog: TextIO | None
) -> Any:
    """The SDK's transport for ``server``: streamable HTTP for a url, else a stdio subprocess."""
    from mcp.client.streamable_http import streamable_http_client

    if isinstance(server, str) and server.startswith(("http://", "https://")):
        return streamable_http_client(server)
    if isinstance(server, mcp.StdioServerParameters):
        params = server
    else:
        argv = _argv(server)
        if not argv:
            raise ToolError("can't start an MCP server from an empty command")
        params = mcp.StdioServerParameters(command=argv[0], args=argv[1:], env=env, cwd=cwd)
    return mcp.stdio_client(params, errlog=errlog if errlog is not None else _stderr())


def _stderr() -> TextIO:
    """This process's stderr as a file the subprocess can inherit: a captured ``sys.stderr`` (pytest's
    capsys, a notebook) has no file descriptor, so the original one is used."""
    for stream in (sys.stderr, sys.__stderr__):
        try:
            if stream is not None:
                stream.fileno()
                return stream
        except (AttributeError, OSError, ValueError):
            continue
    return open(os.devnull, "w")  # noqa: SIM115 - lives as long as the server


def result_value(result: Any) -> Any:
    """What a call returned, as the model reads it: the text of its content blocks (other blocks
    described in a line), or the structured content when the server sent no blocks."""
    blocks = list(result.content or [])
    if not blocks and result.structured_content is not None:
        return result.structured_content
    return "\n".join(_block_text(b) for b in blocks)


def _block_text(block: Any) -> str:
    kind = getattr(block, "type", "")
    if kind == "text":
        return str(block.text)
    if kind in ("image", "audio"):
        return f"[{kind} {block.mime_type}, {len(block.data)} base64 characters]"
    if kind == "resource_link":
        return f"[resource {block.uri}]"
    if kind == "resource":
        text = getattr(block.resource, "text", None)
        return str(text) if text is not None else f"[resource {block.resource.uri}]"
    return f"[{kind or type(block).__name__} content]"


def mcp_tools(
    session: MCPSession,
    *,
    include: Iterable[str] | None = None,
    prefix: str = "",
    timeout: float | None = None,
) -> list[Tool]:
    """The session's tools as querylm Tools (``include``: only these server names; ``prefix``: put
    before each name, to keep two servers' tools apart). ``read_only`` is the server's
    ``readOnlyHint``."""
    wanted = None if include is None else set(include)
    if wanted is not None:
        missing = wanted - {t.name for t in session.tools}
        if missing:
            listed = ", ".join(t.name for t in session.tools) or "none"
            raise ToolError(
                f"MCP server {session.target} has no tool {sorted(missing)[0]!r} (it lists: {listed})"
            )
    out = []
    for listed in session.tools:
        if wanted is not None and listed.name not in wanted:
            continue
        annotations = listed.annotations
        try:
            out.append(
                Tool(
                    _caller(session, listed.name),
                    name=prefix + listed.name,
                    description=listed.description or listed.title or "",
                    schema=dict(listed.input_schema),
                    timeout=timeout,
                    read_only=bool(annotations is not None and annotations.read_only_hint),
                )
            )
        except ToolError as err:
            raise ToolError(f"MCP server {session.target}: {err} (leave it out with include=[...])") from None
    return out


def connect(
    server: MCPServerSpec,
    *,
    taken: Iterable[str] = (),
    include: Iterable[str] | None = None,
    prefix: str = "",
    timeout: float | None = None,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    connect_timeout: float = CONNECT_TIMEOUT,
    errlog: TextIO | None = None,
) -> tuple[MCPSession, list[Tool]]:
    """Open a session and make its tools (``mcp_tools``), none named like one in ``taken``; on any
    failure the session is closed again (a server process never outlives a refused registration)."""
    taken = set(taken)
    session = MCPSession(server, env=env, cwd=cwd, connect_timeout=connect_timeout, errlog=errlog)
    try:
        tools = mcp_tools(session, include=include, prefix=prefix, timeout=timeout)
        clash = next((t.name for t in tools if t.name in taken), None)
        if clash is not None:
            raise ToolError(f"a tool named {clash!r} is already registered (add_mcp(prefix=...) renames)")
    except BaseException:
        session.close()
        raise
    return session, tools


def _caller(session: MCPSession, name: str) -> Any:
    async def call(**arguments: Any) -> Any:
        result = await session.acall(name, arguments)
        if result.is_error:
            raise MCPToolError(result_value(result) or "the tool reported an error")
        return result_value(result)

    call.__name__ = name
    call.__qualname__ = f"mcp:{name}"
    return call


_OPEN: weakref.WeakSet[MCPSession] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """Sessions a program left open are closed at exit, so stdio servers don't outlive it."""
    for session in list(_OPEN):
        session.close()
