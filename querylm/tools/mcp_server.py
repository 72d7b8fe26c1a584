"""MCP out: a registry's tools, and ``@query`` functions, served to any MCP client over stdio.

``serve_mcp(target)`` (and ``querylm mcp serve TARGET``) runs an MCP server (the official ``mcp`` SDK's
low-level ``Server``) whose tools are the target's: each listed with its name, description and JSON
Schema, each call dispatched through a ToolRegistry, so the client gets querylm's validation, timeouts
and structured errors (an error result is ``isError`` with the error's JSON as its text). A ``@query``
function becomes a tool whose input schema comes from its signature; calling it runs the query and
answers with what the query returns (its ``return`` value, else its prompt and variables).

TARGET is a Python file or an importable module, optionally ``:attr``: the attribute (a ToolRegistry, a
Tool, a ``@query`` function, a function, or a list of these), or without one every public ToolRegistry,
Tool and ``@query`` function the module defines.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .registry import ToolRegistry
from .tool import Tool, ToolError

QUERY_TIMEOUT = 300.0
"""Seconds a served call may take by default: a query on a local model on a CPU can take a while."""


def collect(obj: Any, *, model: str | None = None, timeout: float | None = QUERY_TIMEOUT) -> ToolRegistry:
    """A registry of what ``obj`` names: a ToolRegistry (returned as it is), a Tool, a ``@query``
    function, a function, a module (its public registries, Tools and ``@query`` functions), or a list."""
    if isinstance(obj, ToolRegistry):
        return obj
    registry = ToolRegistry(timeout=timeout)
    for item in _items(obj):
        if isinstance(item, ToolRegistry):
            for t in item:
                registry.register(t)
        elif _is_query(item):
            registry.register(item, model=model)
        else:
            registry.register(item)
    if not len(registry):
        raise ToolError(f"{_name(obj)} has no tools to serve (a ToolRegistry, a Tool or a @query function)")
    return registry


def _is_query(obj: Any) -> bool:
    """A ``@query`` function (QueryFunction, a layer above tools: known here by its ``as_tool``)."""
    return not isinstance(obj, (Tool, type)) and callable(getattr(obj, "as_tool", None))


def _items(obj: Any) -> Iterable[Any]:
    if inspect.ismodule(obj):
        return [
            v for k, v in vars(obj).items()
            if not k.startswith("_") and (isinstance(v, (ToolRegistry, Tool)) or _is_query(v))
        ]  # fmt: skip
    if isinstance(obj, (list, tuple)):
        return obj
    return [obj]


def _name(obj: Any) -> str:
    return getattr(obj, "__name__", None) or repr(obj)


def load_target(spec: str) -> Any:
    """The object ``spec`` names: ``path/to/file.py[:attr]`` or ``package.module[:attr]``."""
    where, _, attr = spec.partition(":") if not Path(spec).exists() else (spec, "", "")
    path = Path(where)
    if where.endswith(".py") or path.is_file():
        if not path.is_file():
            raise ToolError(f"mcp serve: no such file: {where}")
        module_name = f"querylm_served_{path.stem}"
        loader = importlib.util.spec_from_file_location(module_name, path)
        if loader is None or loader.loader is None:
            raise ToolError(f"mcp serve: can't load {where} as Python")
        module = importlib.util.module_from_spec(loader)
        sys.modules[module_name] = module
        sys.path.insert(0, str(path.resolve().parent))  # so the file's own imports work
        loader.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as err:
            raise ToolError(f"mcp serve: can't import {where!r}: {err}") from None
    if not attr:
        return module
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ToolError(f"mcp serve: {where} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def mcp_server(registry: ToolRegistry, *, name: str = "querylm") -> Any:
    """The SDK's low-level ``Server`` listing ``registry``'s tools and dispatching calls through it."""
    try:
        import mcp.types as types
        from mcp.server.lowlevel import Server
    except ImportError as err:
        raise ToolError(f"serving MCP needs the mcp SDK (pip install 'querylm[mcp]'): {err}") from None

    listed = [
        types.Tool(
            name=t.name,
            description=t.description,
            input_schema=t.parameters,
            annotations=types.ToolAnnotations(read_only_hint=True) if t.read_only else None,
        )
        for t in registry
    ]

    async def list_tools(ctx: Any, params: Any) -> Any:
        return types.ListToolsResult(tools=listed)

    async def call_tool(ctx: Any, params: Any) -> Any:
        result = await registry.adispatch({"name": params.name, "arguments": params.arguments or {}})
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=result.content)], is_error=not result.ok
        )

    return Server(name, on_list_tools=list_tools, on_call_tool=call_tool)


def serve_mcp(
    target: Any, *, name: str = "querylm", model: str | None = None, timeout: float | None = QUERY_TIMEOUT
) -> None:
    """Serve ``target``'s tools (see ``collect``) over stdio until the client hangs up. While serving,
    stdout belongs to the protocol: what tools print goes to stderr (the SDK moves file descriptor 1;
    ``sys.stdout`` is moved here, or its buffer would reach the client when it is flushed)."""
    server = mcp_server(collect(target, model=model, timeout=timeout), name=name)
    from mcp.server.stdio import stdio_server

    async def main() -> None:
        async with stdio_server() as (read, write):
            with contextlib.redirect_stdout(sys.stderr):
                await server.run(read, write, server.create_initialization_options())

    asyncio.run(main())
