"""LangChain interop (langchain-core 1.x): LangChain tools in, querylm tools out.

A LangChain tool registered with querylm keeps LangChain's behaviour (it is invoked through
``ainvoke`` with a ToolCall, so callbacks, injected arguments and ``handle_tool_error`` work as there)
but its input is first validated with jsonschema against ``tool.tool_call_schema``: every error with its
path, also for tools whose schema is a plain dict, which LangChain does not validate at all, and without
pydantic's lax coercions ("5" for an int). A querylm tool exported to LangChain is a StructuredTool that
dispatches through querylm (validation, timeout, structured errors, which LangChain's agent sees as an
error ToolMessage through ``handle_tool_error=True``).
"""

from __future__ import annotations

from typing import Any, Protocol

from .calls import new_call_id
from .tool import Tool, ToolError, strip_titles


class Dispatcher(Protocol):
    """What an exported tool calls through: a ToolRegistry (this module sits below the registry, which
    registers LangChain tools with ``from_langchain``)."""

    def dispatch(self, call: Any) -> Any: ...

    async def adispatch(self, call: Any) -> Any: ...


class LangChainToolError(Exception):
    """A LangChain tool answered with an error ToolMessage (its own ``handle_tool_error``)."""


def _require() -> Any:
    try:
        import langchain_core.tools as lc_tools
    except ImportError as err:
        raise ToolError(
            f"LangChain interop needs langchain-core (pip install 'querylm[tools]'): {err}"
        ) from None
    return lc_tools


def langchain_schema(lc_tool: Any) -> dict[str, Any]:
    """The JSON Schema of a LangChain tool's model-facing arguments (``tool_call_schema``)."""
    schema = lc_tool.tool_call_schema
    if isinstance(schema, dict):
        out = dict(schema)
    elif hasattr(schema, "model_json_schema"):
        out = schema.model_json_schema()
    else:  # a pydantic v1 model, which langchain-core 1.x still accepts
        out = schema.schema()
    out = strip_titles(out)
    out.pop("description", None)  # the tool's description, already the Tool's
    out.setdefault("type", "object")
    out.setdefault("properties", {})
    return out


def from_langchain(
    lc_tool: Any,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
    read_only: bool = False,
) -> Tool:
    """A querylm Tool that validates with jsonschema, then runs the LangChain tool via ``ainvoke``."""
    _require()
    schema = langchain_schema(lc_tool)

    async def call(**arguments: Any) -> Any:
        msg = await lc_tool.ainvoke(
            {"name": lc_tool.name, "args": arguments, "id": new_call_id(), "type": "tool_call"}
        )
        if getattr(msg, "status", "success") == "error":
            raise LangChainToolError(str(msg.content))
        return msg.content if hasattr(msg, "content") else msg

    call.__name__ = name or lc_tool.name
    t = Tool(
        call,
        name=name or lc_tool.name,
        description=description if description is not None else (lc_tool.description or ""),
        schema=schema,
        timeout=timeout,
        read_only=read_only,
    )
    t.langchain_tool = lc_tool  # type: ignore[attr-defined]
    return t


def to_langchain(tool: Tool, registry: Dispatcher) -> Any:
    """A LangChain StructuredTool that runs ``tool`` through ``registry``'s dispatch
    (``ToolRegistry.to_langchain``). Its ``args_schema`` is the tool's JSON Schema (a dict): querylm
    validates, LangChain passes the arguments on."""
    lc_tools = _require()

    def unwrap(result: Any) -> Any:
        if not result.ok:
            raise lc_tools.ToolException(result.content)
        return result.value

    async def acall(**kwargs: Any) -> Any:
        return unwrap(await registry.adispatch({"name": tool.name, "arguments": kwargs}))

    def call(**kwargs: Any) -> Any:
        return unwrap(registry.dispatch({"name": tool.name, "arguments": kwargs}))

    return lc_tools.StructuredTool.from_function(
        func=call,
        coroutine=acall,
        name=tool.name,
        description=tool.description or tool.name,
        args_schema=tool.parameters,
        infer_schema=False,
        handle_tool_error=True,
    )
