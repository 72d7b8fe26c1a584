"""The face of querylm: what ``import querylm`` gives a user, gathered from the layers that define it.

Nothing inside the package imports this module (``querylm/__init__.py`` re-exports it), so the layers
below stay free to import one another downward only (``.importlinter``)."""

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
from .language.check import compile_source
from .mapping import amap, map
from .query import F, QueryFunction, query
from .runtime.result import HoleRecord, QueryResult
from .runtime.run import arun, arun_n, run, run_many, run_n
from .runtime.score import Score, score
from .tools import Agent, AgentResult, Tool, ToolRegistry, ToolResult, tool

__all__ = [
    "run",
    "arun",
    "run_n",
    "arun_n",
    "run_many",
    "map",
    "amap",
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
