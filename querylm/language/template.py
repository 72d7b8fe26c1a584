"""A prompt string → segments: text, ``{expr}`` interpolations, ``[NAME]`` / ``[NAME: type]`` holes and
``{:role}`` chat tags. ``[[``, ``]]``, ``{{`` and ``}}`` are literal brackets and braces (LMQL's escapes)."""

from __future__ import annotations

import ast
import keyword
import unicodedata

from ..errors import Position, QuerySyntaxError
from ..positions import SourceMap
from .ir import ROLES, Hole, Interpolation, Role, Segment, Text


def _locate(needle: str, raw: str, node: ast.expr, smap: SourceMap, hint: int = 0) -> Position:
    """Where ``needle`` (a piece of the string's value) sits in the user's source, as best we can tell:
    escapes make value offsets differ from source offsets, so search the raw literal for it, from
    ``hint`` (its index in the value: every value character comes from at least one source character,
    so the source index is never smaller)."""
    idx = raw.find(needle, hint) if needle else -1
    if idx < 0:
        idx = raw.find(needle) if needle else -1
    if idx < 0:
        return smap.of(node)
    before = raw[:idx]
    line = node.lineno + before.count("\n")
    start = smap.char_col(node.lineno, node.col_offset)
    col = (start + idx) if "\n" not in before else len(before) - before.rfind("\n") - 1
    return smap.position(line, col)


def _closing(text: str, start: int, open_ch: str, close_ch: str) -> int:
    """Index of the bracket closing the one at ``start``, skipping nested brackets and Python strings."""
    depth = 0
    i = start
    quote: str | None = None
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 2
                continue
            if ch == quote:
                quote = None
        elif ch in "'\"" and depth > 0 and (open_ch == "{" or depth > 1 or ":" in text[start:i]):
            quote = ch
        elif ch == open_ch:
            depth += 1
        elif ch == close_ch:
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def parse_template(value: str, raw: str, node: ast.expr, smap: SourceMap, first_index: int) -> list[Segment]:
    segments: list[Segment] = []
    buf: list[str] = []
    i = 0
    n = len(value)

    def flush() -> None:
        if buf:
            segments.append(Text("".join(buf)))
            buf.clear()

    while i < n:
        ch = value[i]
        two = value[i : i + 2]
        if two in ("[[", "]]", "{{", "}}"):
            buf.append(ch)
            i += 2
            continue
        if ch == "]":
            buf.append(ch)
            i += 1
            continue
        if ch == "}":
            pos = _locate("}", raw, node, smap, i)
            raise QuerySyntaxError("single '}' in a prompt: write '}}' for a literal brace", pos)
        if ch == "[":
            end = _closing(value, i, "[", "]")
            inner = value[i + 1 : end] if end >= 0 else value[i + 1 :]
            needle = value[i : end + 1] if end >= 0 else value[i:]
            pos = _locate(needle, raw, node, smap, i)
            if end < 0:
                raise QuerySyntaxError("unclosed '[' in a prompt: write '[[' for a literal bracket", pos)
            flush()
            segments.append(_hole(inner, pos, first_index + sum(isinstance(s, Hole) for s in segments)))
            i = end + 1
            continue
        if ch == "{":
            end = _closing(value, i, "{", "}")
            needle = value[i : end + 1] if end >= 0 else value[i:]
            pos = _locate(needle, raw, node, smap, i)
            if end < 0:
                raise QuerySyntaxError("unclosed '{' in a prompt: write '{{' for a literal brace", pos)
            inner = value[i + 1 : end]
            flush()
            if inner.startswith(":"):
                role = inner[1:].strip()
                if role not in ROLES:
                    raise QuerySyntaxError(
                        f"unknown role tag '{{:{role}}}' (known: {', '.join('{:' + r + '}' for r in ROLES)})",
                        pos,
                    )
                segments.append(Role(role, pos))
            else:
                segments.append(_interpolation(inner, pos))
            i = end + 1
            continue
        buf.append(ch)
        i += 1
    flush()
    return segments


def _interpolation(inner: str, pos: Position) -> Interpolation:
    if not inner.strip():
        raise QuerySyntaxError("empty {} in a prompt: write '{{}}' for literal braces", pos)
    try:
        expr = ast.parse(inner.strip(), mode="eval")
    except SyntaxError:
        raise QuerySyntaxError(f"invalid Python expression in {{{inner}}}", pos) from None
    return Interpolation(expr, inner.strip(), pos)


def _hole(inner: str, pos: Position, index: int) -> Hole:
    """A hole's name becomes a Python variable, so it must be one: an identifier that is no keyword
    (``[if]``, ``[None]`` could never be referred to) nor ``__debug__``. It is NFKC-normalised as Python
    normalises every identifier it reads (``[ＸＹ]`` is the variable ``XY`` in the where clause and in
    the code), so the hole, its constraints and its result all use the normalised name."""
    decorators, inner = _decorators(inner, pos)
    name, sep, type_src = inner.partition(":")
    name = unicodedata.normalize("NFKC", name.strip())
    if not name.isidentifier():
        raise QuerySyntaxError(
            f"invalid hole '[{inner}]': a hole is [NAME] or [NAME: type]; write '[[' for a literal bracket",
            pos,
        )
    if keyword.iskeyword(name) or name == "__debug__":
        raise QuerySyntaxError(
            f"invalid hole '[{inner}]': '{name}' is reserved in Python and can't name a hole", pos
        )
    type_expr = None
    if sep:
        type_src = type_src.strip()
        if not type_src:
            raise QuerySyntaxError(f"hole '[{inner}]' has ':' but no type", pos)
        try:
            type_expr = ast.parse(type_src, mode="eval")
        except SyntaxError:
            raise QuerySyntaxError(f"invalid type '{type_src}' in hole [{name}: ...]", pos) from None
    return Hole(index, name, type_src if sep else None, type_expr, pos, decorators=decorators)


def _decorators(inner: str, pos: Position) -> tuple[list[ast.Expression], str]:
    """``[@post @chat(a=1) X]``: LMQL's variable decorators, each a Python expression after ``@`` that
    runs to the first space outside brackets; the rest of the hole after them."""
    out: list[ast.Expression] = []
    rest = inner.lstrip()
    while rest.startswith("@"):
        depth, j = 0, 1
        while j < len(rest) and (depth or not rest[j].isspace()):
            depth += {"(": 1, "[": 1, "{": 1, ")": -1, "]": -1, "}": -1}.get(rest[j], 0)
            j += 1
        src = rest[1:j]
        try:
            out.append(ast.parse(src, mode="eval"))
        except SyntaxError:
            raise QuerySyntaxError(f"invalid decorator '@{src}' in hole [{inner.strip()}]", pos) from None
        rest = rest[j:].lstrip()
    return out, rest
