"""Where a node of a parsed query stands in the user's file.

The where clause is compiled in ``constraints/`` and the query in ``language/``: both place their errors
through a SourceMap, so it lives below them (constraints must not import the language package)."""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

from .errors import Position


@dataclass
class SourceMap:
    """Maps (line, col) in the query text that was parsed back to the user's file.

    The query text may be a dedented docstring or the body of a decoder clause; every line keeps its
    number relative to ``first_line`` and its removed indentation in ``col_shift``.
    """

    filename: str
    file_lines: list[str]
    first_line: int = 1
    col_shift: dict[int, int] = field(default_factory=dict)

    def position(self, line: int, col: int) -> Position:
        """``line`` 1-based and ``col`` 0-based in the query text (as Python's ast reports them)."""
        file_line = line + self.first_line - 1
        file_col = col + self.col_shift.get(line, 0) + 1
        text = self.file_lines[file_line - 1] if 0 < file_line <= len(self.file_lines) else ""
        return Position(self.filename, file_line, file_col, text)

    def of(self, node: ast.AST) -> Position:
        line: int = node.lineno  # type: ignore[attr-defined]
        return self.position(line, self.char_col(line, node.col_offset))  # type: ignore[attr-defined]

    def char_col(self, line: int, byte_col: int) -> int:
        """ast gives columns in UTF-8 bytes; the caret needs characters (tokenize and SyntaxError
        already count characters)."""
        file_line = line + self.first_line - 1
        if not 0 < file_line <= len(self.file_lines):
            return byte_col
        text = self.file_lines[file_line - 1][self.col_shift.get(line, 0) :]
        return len(text.encode()[:byte_col].decode("utf-8", errors="ignore"))
