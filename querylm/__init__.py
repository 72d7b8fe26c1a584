"""querylm: LMQL-style queries compiled to token-constrained decoding.

import querylm
result = querylm.run('"Q: What is the capital of France?\\nA: [CITY]" where STOPS_AT(CITY, ".")')
result.variables["CITY"]
"""

from .errors import (
    BackendError,
    ConstraintError,
    ModelError,
    QueryCompileError,
    QueryError,
    QueryInputError,
    QueryRuntimeError,
    QuerySyntaxError,
    UnsupportedError,
)
from .query import F, QueryFunction, compile_source, query
from .runtime.engine import run_many
from .runtime.result import HoleRecord, QueryResult
from .runtime.run import arun, run
from .runtime.score import Score, score
from .tools import Agent, AgentResult, Tool, ToolRegistry, ToolResult, tool

__version__ = "0.1.0"

__all__ = [
    "run",
    "arun",
    "run_many",
    "score",
    "Score",
    "query",
    "F",
    "QueryFunction",
    "QueryResult",
    "HoleRecord",
    "compile_source",
    "QueryError",
    "QuerySyntaxError",
    "QueryCompileError",
    "QueryInputError",
    "QueryRuntimeError",
    "UnsupportedError",
    "ConstraintError",
    "ModelError",
    "BackendError",
    "tool",
    "Tool",
    "ToolRegistry",
    "ToolResult",
    "Agent",
    "AgentResult",
]
