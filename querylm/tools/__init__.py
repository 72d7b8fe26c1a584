"""Tools a model can call: ``@tool`` functions with JSON Schemas, a registry that validates and dispatches
calls, calls generated valid by construction under the tools' union grammar, an agent loop, and
LangChain interop (``querylm.tools.langchain``, needs langchain-core)."""

from .agent import Agent, AgentEvent, AgentResult
from .registry import ToolCall, ToolRegistry, ToolResult
from .tool import Tool, ToolError, tool
from .validate import SchemaIssue, validate

__all__ = [
    "tool",
    "Tool",
    "ToolError",
    "ToolRegistry",
    "ToolCall",
    "ToolResult",
    "SchemaIssue",
    "validate",
    "Agent",
    "AgentEvent",
    "AgentResult",
]
