"""Where a query's text comes from: a string, a ``.lmql`` file, or a ``@query`` function's docstring.

A Source keeps the text together with its place in the user's file (first line, first column, the
file's lines), so that every error of the stages after it points at the user's line and column."""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import QueryInputError, UnsupportedError
from .ir import Query
from .parse import parse


@dataclass(frozen=True)
class Source:
    text: str
    filename: str
    file_lines: tuple[str, ...] | None = None
    first_line: int = 1
    first_col: int = 0
    base_dir: Path | None = None
    name: str = "query"


def source_of(query: str | Path) -> Source:
    """A query string, or the path of a ``.lmql`` file."""
    if isinstance(query, Path) or ("\n" not in query and query.endswith(".lmql")):
        path = Path(query)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise QueryInputError(f"can't read query file {path}: {err.strerror}") from None
        except UnicodeDecodeError as err:
            raise QueryInputError(f"can't read query file {path}: not UTF-8 text ({err.reason})") from None
        return Source(
            text, str(path), tuple(text.split("\n")), base_dir=path.resolve().parent, name=path.stem
        )
    return Source(query, "<query>", base_dir=Path.cwd())


def docstring_source(fn: Callable[..., Any]) -> Source:
    """The query in ``fn``'s docstring, read from the source file so that its escapes (``\\n``) reach
    the query parser as written, with its place in the file for error positions."""
    marker = "lmql"
    filename = inspect.getsourcefile(fn) or "<query>"
    try:
        lines, start = inspect.getsourcelines(fn)
    except (OSError, TypeError):
        doc = inspect.getdoc(fn) or ""
        return Source(doc.removeprefix(marker), filename, name=fn.__name__)
    src = textwrap.dedent("".join(lines))
    indent = len(lines[0]) - len(lines[0].lstrip())
    tree = ast.parse(src)
    fdef = next(n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))
    first = fdef.body[0] if fdef.body else None
    if not (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        raise UnsupportedError(f"@query function {fn.__name__} has no docstring query ('''lmql ...''')")
    node = first.value
    seg_lines = src.split("\n")[node.lineno - 1 : node.end_lineno]
    seg_lines[-1] = seg_lines[-1][: node.end_col_offset]
    seg_lines[0] = seg_lines[0][node.col_offset :]
    raw = "\n".join(seg_lines)
    stripped = raw.lstrip("rRuU")
    quote = stripped[:3] if stripped[:3] in ('"""', "'''") else stripped[:1]
    col = node.col_offset + indent + (len(raw) - len(stripped)) + len(quote)
    raw = stripped[len(quote) : -len(quote)]
    if raw.startswith(marker):
        raw = raw[len(marker) :]
        col += len(marker)
    file_lines = (
        tuple(Path(filename).read_text(encoding="utf-8").split("\n")) if Path(filename).is_file() else None
    )
    return Source(
        raw, filename, file_lines, start + node.lineno - 1, col, Path(filename).resolve().parent, fn.__name__
    )


def parse_source(src: Source) -> Query:
    """Parse ``src`` with its place in the user's file."""
    return parse(
        src.text,
        filename=src.filename,
        file_lines=list(src.file_lines) if src.file_lines else None,
        first_line=src.first_line,
        first_col=src.first_col,
        name=src.name,
    )
