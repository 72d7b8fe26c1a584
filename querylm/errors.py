"""One exception hierarchy, rooted in QueryError.

Errors about a query's text carry a position and render as ``FILE:LINE:COL: message`` followed by the
source line and a caret, like a compiler's. That rendering is the exception's ``str()``, so the CLI and a
Python traceback show the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Position:
    """A place in a user's file: 1-based line and column, plus the line's text for the caret."""

    filename: str
    line: int
    col: int
    source_line: str = ""

    def render(self, message: str) -> str:
        head = f"{self.filename}:{self.line}:{self.col}: {message}"
        if not self.source_line:
            return head
        text = self.source_line.rstrip("\n").expandtabs(1)
        return f"{head}\n    {text}\n    {' ' * (self.col - 1)}^"


class QueryError(Exception):
    """Base class of every error querylm raises on purpose."""

    def __init__(self, message: str, position: Position | None = None):
        self.message = message
        self.position = position
        super().__init__(position.render(message) if position else message)

    def at(self, position: Position | None) -> QueryError:
        """The same error, placed at ``position`` unless it already has a place."""
        if self.position is not None or position is None:
            return self
        return type(self)(self.message, position)


class QuerySyntaxError(QueryError):
    """The query text does not parse: a clause, a prompt string, a hole or the where clause."""


class QueryCompileError(QueryError):
    """The query parses but can't be compiled: an unknown name, constraint, type, grammar or decoder."""


class UnsupportedError(QueryCompileError):
    """The query uses something querylm parses but does not implement yet."""


class QueryRuntimeError(QueryError):
    """The Python code of a query raised an exception (placed at the query's line)."""


class ConstraintError(QueryError):
    """A constraint can't be met: an empty mask, a budget spent before the value is complete, or a
    Python predicate that failed on the finished value. No value that violates a constraint is returned."""


class BudgetError(ConstraintError):
    """A hole's token budget (``len(TOKENS(X)) < n``) ran out before its value was complete: the value
    did not fit, as opposed to a server whose answers could not be made valid (an agent reports such a
    call as truncated, never runs it)."""


class QueryInputError(QueryError, TypeError):
    """A query input is missing, unknown, or of the wrong type: a TypeError too, as Python's own wrong
    arguments to a call are (and LMQL's unresolved inputs)."""


class ModelError(QueryError):
    """The model id can't be resolved or the model can't be loaded."""


class BackendError(QueryError):
    """A backend failed while running (a model call, a server answer)."""
