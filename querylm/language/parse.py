"""Source → Query IR.

A query is LMQL's: an optional decoder clause, a body that is Python in which bare string statements are
prompts, and optional ``from``, ``where`` and ``distribution`` clauses. We split the clauses with Python's
own tokenizer and parse every piece with Python's own ``ast`` (never a hand-written Python parser).
Pieces are re-parsed in place: text is blanked out, never moved, so every ast position is the user's
position, and errors point at the user's line and column.
"""

from __future__ import annotations

import ast
import io
import tokenize
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import Position, QueryCompileError, QuerySyntaxError, UnsupportedError
from ..positions import SourceMap
from . import template
from .ir import DECODER_ARGS, DECODERS, DecoderSpec, Distribution, Hole, Prompt, Query, Role

CLAUSES = ("from", "where", "distribution")
PROMPT_MARKER = "__prompt__"


@dataclass
class _Line:
    """One logical line of the query text: its tokens and indentation level."""

    tokens: list[tokenize.TokenInfo]
    level: int

    @property
    def first(self) -> tokenize.TokenInfo:
        return self.tokens[0]

    @property
    def start(self) -> int:
        return self.tokens[0].start[0]

    @property
    def end(self) -> int:
        return self.tokens[-1].end[0]


def parse(
    text: str,
    *,
    filename: str = "<query>",
    file_lines: list[str] | None = None,
    first_line: int = 1,
    first_col: int = 0,
    name: str = "query",
) -> Query:
    """Parse query text. ``first_line``/``first_col`` place ``text`` inside ``file_lines`` (a docstring
    inside a .py file); by default the text is the whole file."""
    lines = text.split("\n")
    smap = SourceMap(filename, file_lines if file_lines is not None else lines, first_line)
    smap.col_shift[1] = first_col
    _refuse_nul(lines, smap)
    lines = _dedent(lines, smap)
    logical = _logical_lines("\n".join(lines), smap)

    decoder: DecoderSpec | None = None
    body_start = 1
    rest = logical
    at = _one_line_prompt(logical[0]) if logical else None
    if at is not None:
        if len(logical) > 1:
            _refuse_one_line_form(logical[0], at, smap)
        query = _parse_one_line(name, logical[0], at, lines, smap)
        return _with_prompt(query, logical[0], smap)
    prelude: ast.Module | None = None
    if logical and _is_decoder_line(logical, lines):
        decoder = _parse_decoder(logical[0], lines, smap)
        body_start = logical[0].end + 1
        rest = logical[1:]
    elif (j := _decoder_after_code(logical, lines)) is not None:
        prelude = _parse_prelude(lines, logical[j].start, smap)
        decoder = _parse_decoder(logical[j], lines, smap)
        body_start = logical[j].end + 1
        rest = logical[j + 1 :]

    clause_at = [ln for ln in rest if ln.level == 0 and _is_clause(ln)]
    body_end = clause_at[0].start if clause_at else len(lines) + 1
    first_body = next((ln for ln in rest if ln.start < body_end), None)

    query = Query(
        name=name,
        source_map=smap,
        decoder=decoder or DecoderSpec("argmax", {}, None),
        body=ast.Module(body=[], type_ignores=[]),
        prompts=[],
        holes=[],
        prelude=prelude,
    )
    for i, clause in enumerate(clause_at):
        end = clause_at[i + 1].start if i + 1 < len(clause_at) else len(lines) + 1
        last = [ln for ln in rest if clause.start <= ln.start < end][-1].tokens[-1]
        _parse_clause(query, clause, lines, last.end, smap)

    _parse_body(query, lines, body_start, body_end, smap)
    return _with_prompt(query, first_body, smap)


def _with_prompt(query: Query, first_body: _Line | None, smap: SourceMap) -> Query:
    """The query, if it has a prompt statement or returns something (LMQL runs code-only queries that
    return a value); else a positioned error."""
    returns = any(isinstance(n, ast.Return) for n in ast.walk(query.body))
    if not query.prompts and not returns:
        if first_body is not None:
            pos = smap.position(first_body.start, first_body.first.start[1])
        else:
            pos = query.decoder.position or smap.position(1, 0)
        raise QuerySyntaxError("the query has no prompt: write at least one string statement", pos)
    return query


# -- text helpers -------------------------------------------------------------------------------------


def _dedent(lines: list[str], smap: SourceMap) -> list[str]:
    """Remove the common indentation of non-blank lines, remembering it per line for positions."""
    indents = [len(ln) - len(ln.lstrip()) for ln in lines if ln.strip()]
    common = min(indents, default=0)
    out = []
    for i, ln in enumerate(lines, start=1):
        cut = min(common, len(ln) - len(ln.lstrip()))
        smap.col_shift[i] = smap.col_shift.get(i, 0) + cut
        out.append(ln[cut:])
    return out


def _refuse_nul(lines: list[str], smap: SourceMap) -> None:
    """Python refuses NUL bytes without saying where; say where."""
    for i, ln in enumerate(lines, start=1):
        if "\0" in ln:
            raise QuerySyntaxError("a NUL character in the query", smap.position(i, ln.index("\0")))


MAX_DEPTH = 200
"""How deeply a query's expressions and statements may nest. Python's parser gives up (RecursionError,
MemoryError) somewhere beyond, and the compiler's recursive walkers earlier; no real query comes near."""


def _ast_parse(src: str, mode: str, smap: SourceMap, at: tuple[int, int]) -> ast.AST:
    """``ast.parse``, with nesting too deep for Python (or for us) a positioned error at ``at`` (the
    piece's start) or at the first node nested too deeply. A SyntaxError is the caller's to map."""
    try:
        tree = ast.parse(src, mode=mode)
    except (RecursionError, MemoryError):
        raise QuerySyntaxError(
            f"the query nests too deeply (more than {MAX_DEPTH} levels)", smap.position(*at)
        ) from None
    stack: list[tuple[ast.AST, int]] = [(tree, 0)]
    while stack:  # iteratively: a recursive walk is what must not overflow
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise QuerySyntaxError(
                f"the query nests too deeply (more than {MAX_DEPTH} levels)", smap.of(node)
            )
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return tree


def _blank(lines: list[str], upto: int) -> str:
    """Newlines that keep the text after them on its original line numbers."""
    return "\n" * (upto - 1)


def _syntax_error(
    err: SyntaxError, smap: SourceMap, what: str, end: tuple[int, int] | None = None
) -> QuerySyntaxError:
    """Python's SyntaxError as ours. ``end`` is where the user's text ends when we appended a closing
    parenthesis to it: an error there means the text stopped too early."""
    line = err.lineno or 1
    col = max((err.offset or 1) - 1, 0)
    msg = err.msg
    if end is not None and (line, col) > end:
        return QuerySyntaxError(f"unexpected end of {what}", smap.position(*end))
    if msg.startswith("invalid syntax") or msg == "unexpected EOF while parsing":
        msg = f"invalid syntax in {what}"
    elif msg.startswith(("unterminated string", "unterminated triple-quoted string")):
        msg = "unterminated string"
    elif msg in ("unexpected indent", "unindent does not match any outer indentation level") and err.text:
        # at the statement, not the last blank before it
        col = len(err.text) - len(err.text.lstrip())
    return QuerySyntaxError(msg, smap.position(line, col))


def _logical_lines(text: str, smap: SourceMap) -> list[_Line]:
    out: list[_Line] = []
    level = start_level = 0
    cur: list[tokenize.TokenInfo] = []
    opened: list[tokenize.TokenInfo] = []  # brackets not closed yet, for "'(' was never closed"
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text + "\n").readline):
            if tok.type == tokenize.OP and tok.string in "([{":
                opened.append(tok)
            elif tok.type == tokenize.OP and tok.string in ")]}":
                if not opened:
                    raise QuerySyntaxError(f"unmatched '{tok.string}'", smap.position(*tok.start))
                opened.pop()
            if tok.type == tokenize.INDENT:
                level += 1
                continue
            if tok.type == tokenize.DEDENT:
                level -= 1
                continue
            if tok.type in (tokenize.NL, tokenize.COMMENT, tokenize.ENDMARKER) and not cur:
                continue
            if tok.type == tokenize.NEWLINE:
                if cur:
                    out.append(_Line(cur, start_level))
                cur = []
                continue
            if tok.type in (tokenize.NL, tokenize.COMMENT):
                continue
            if not cur:
                start_level = level
            cur.append(tok)
    except tokenize.TokenError as err:
        msg, (line, col) = err.args
        if "string" in msg.lower():
            msg = "unterminated string"
        elif "statement" in msg.lower() and opened:
            msg = f"'{opened[-1].string}' was never closed"
            line, col = opened[-1].start
        elif "statement" in msg.lower():
            msg = "unexpected end of query"
        raise QuerySyntaxError(msg, smap.position(line, col)) from None
    except IndentationError as err:
        raise _syntax_error(err, smap, "indentation") from None
    if cur:
        out.append(_Line(cur, start_level))
    return out


def _is_clause(line: _Line) -> bool:
    """A ``from`` / ``where`` / ``distribution`` clause: the keyword at the start of a top-level line,
    in lower or upper case (LMQL reads ``FROM``, ``WHERE``), its value on the line or indented below."""
    first = line.first
    if first.type != tokenize.NAME or first.string.lower() not in CLAUSES or first.start[1] != 0:
        return False
    if first.string not in CLAUSES and first.string != first.string.upper():
        return False  # `From`, `Where`: a Python name
    if first.string.lower() == "from":
        # `from "model"`, `from MODEL`, `from lmql.model(...)`; `from x import y` is Python.
        return not any(t.type == tokenize.NAME and t.string == "import" for t in line.tokens)
    return True


def _one_line_prompt(line: _Line) -> int | None:
    """LMQL's one-line form ``argmax "prompt [X]" from M where C``: the index of the prompt string's
    token when ``line`` is a decoder keyword (with its arguments) followed by a string, else None."""
    toks = line.tokens
    if toks[0].type != tokenize.NAME or _decoder_word(toks[0].string) not in DECODERS or len(toks) < 2:
        return None
    i = 1
    if toks[1].string == "(":  # skip the decoder's arguments
        depth = 0
        for i in range(1, len(toks)):
            depth += {"(": 1, ")": -1}.get(toks[i].string, 0)
            if depth == 0:
                break
        i += 1
    return i if i < len(toks) and toks[i].type == tokenize.STRING else None


def _refuse_one_line_form(line: _Line, at: int, smap: SourceMap) -> None:
    """The one-line form is a whole query; followed by more lines it is ambiguous: say how to write it."""
    tok = line.tokens[at]
    raise QuerySyntaxError(
        f'LMQL\'s one-line form (`{line.first.string} "..." from ... where ...`) is the whole query: write '
        "the decoder on its own line and the prompt indented below it to add more statements",
        smap.position(tok.start[0], tok.start[1]),
    )


def _spaced(lines: list[str], start: tuple[int, int], end: tuple[int, int]) -> list[str]:
    """``lines`` with the text from ``start`` to ``end`` (line, col) blanked by spaces: what stays keeps
    its line and column."""
    out = list(lines)
    for ln in range(start[0], end[0] + 1):
        text = out[ln - 1]
        a = start[1] if ln == start[0] else 0
        b = end[1] if ln == end[0] else len(text)
        out[ln - 1] = text[:a] + " " * (b - a) + text[b:]
    return out


def _parse_one_line(name: str, line: _Line, at: int, lines: list[str], smap: SourceMap) -> Query:
    """``argmax(n=2) "prompt" from M where C distribution X in [...]`` on one line: each piece parsed in
    place, the others blanked (positions stay the user's). The clauses start at the clause keywords
    outside brackets after the prompt string."""
    toks = line.tokens
    depth = 0
    keywords: list[int] = []
    for k in range(at, len(toks)):
        t = toks[k]
        if t.type == tokenize.OP and t.string in "([{":
            depth += 1
        elif t.type == tokenize.OP and t.string in ")]}":
            depth -= 1
        elif depth == 0 and t.type == tokenize.NAME and t.string.lower() in CLAUSES:
            if t.string in CLAUSES or t.string == t.string.upper():
                keywords.append(k)
    end = toks[-1].end
    prompt_end = toks[keywords[0]].start if keywords else end
    decoder = _parse_decoder(_Line(toks[:at], 0), _spaced(lines, toks[at].start, end), smap)
    query = Query(
        name=name,
        source_map=smap,
        decoder=decoder,
        body=ast.Module(body=[], type_ignores=[]),
        prompts=[],
        holes=[],
    )
    for j, k in enumerate(keywords):
        last = toks[keywords[j + 1] - 1].end if j + 1 < len(keywords) else end
        _parse_clause(query, _Line([toks[k]], 0), lines, last, smap)
    body = _spaced(_spaced(lines, (line.start, 0), toks[at].start), prompt_end, end)
    _parse_body(query, body, line.start, line.end + 1, smap)
    return query


def _is_decoder_line(logical: list[_Line], lines: list[str]) -> bool:
    first = logical[0]
    toks = first.tokens
    if toks[0].type != tokenize.NAME:
        return False
    simple = len(toks) == 1 or (toks[1].string == "(" and toks[-1].string == ")")
    if not simple:
        return False
    if _decoder_word(toks[0].string) in DECODERS:
        return True
    # An unknown name followed by an indented body can only be meant as a decoder clause.
    return len(logical) > 1 and logical[1].level > first.level


def _decoder_after_code(logical: list[_Line], lines: list[str]) -> int | None:
    """LMQL lets code stand before the decoder keyword (``a = 12`` then ``argmax`` ...): the index of a
    top-level decoder line (a known decoder word, its body indented below) after the first line."""
    for j in range(1, len(logical)):
        line = logical[j]
        if line.level != 0 or _is_clause(line):
            continue
        if _decoder_word(line.first.string) in DECODERS and _is_decoder_line(logical[j:], lines):
            return j if j + 1 < len(logical) and logical[j + 1].level > 0 else None
    return None


def _parse_prelude(lines: list[str], end: int, smap: SourceMap) -> ast.Module:
    """The code before the decoder keyword, parsed in place; it may hold no prompt."""
    src = "\n".join(lines[: end - 1])
    try:
        module = _ast_parse(src, "exec", smap, (1, 0))
    except SyntaxError as err:
        raise _syntax_error(err, smap, "the code before the decoder") from None
    assert isinstance(module, ast.Module)
    for stmt in module.body:
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, (ast.Constant, ast.JoinedStr)):
            if isinstance(stmt.value, ast.JoinedStr) or isinstance(stmt.value.value, str):
                raise QuerySyntaxError("a prompt before the decoder keyword: move it below it", smap.of(stmt))
    return module


def _decoder_word(word: str) -> str:
    """A decoder keyword as LMQL reads it: lower case, or all upper case (``ARGMAX``)."""
    return word.lower() if word == word.upper() else word


def _parse_decoder(line: _Line, lines: list[str], smap: SourceMap) -> DecoderSpec:
    tok = line.first
    pos = smap.position(tok.start[0], tok.start[1])
    word = _decoder_word(tok.string)
    if word not in DECODERS:
        known = ", ".join(sorted(set(DECODERS)))
        raise QueryCompileError(f"unknown decoder '{tok.string}' (known: {known})", pos)
    src = _blank(lines, line.start) + "\n".join(lines[line.start - 1 : line.end])
    try:
        tree = _ast_parse(src, "eval", smap, tok.start)
    except SyntaxError as err:
        raise _syntax_error(err, smap, "the decoder clause") from None
    assert isinstance(tree, ast.Expression)
    return _decoder_spec(tree.body, word, pos, smap.of)


def parse_decoder(text: str) -> DecoderSpec:
    """A decoder given apart from the query (``run(decoder=...)``, ``--decoder``): ``"argmax"`` or
    ``"sample(n=2, temperature=0.7)"``, read as a decoder clause is. It has no place in a file."""
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        raise QuerySyntaxError(f"invalid decoder {text!r}") from None
    name_node = node.func if isinstance(node, ast.Call) else node
    if not isinstance(name_node, ast.Name) or name_node.id not in DECODERS:
        raise QueryCompileError(f"unknown decoder {text!r} (known: {', '.join(sorted(set(DECODERS)))})")
    return _decoder_spec(node, name_node.id, None, lambda _: None)


def _decoder_spec(
    node: ast.expr, name: str, pos: Position | None, position_of: Callable[[ast.AST], Position | None]
) -> DecoderSpec:
    """The decoder ``name`` with the arguments of ``node`` (a Name or a Call): given by name, known to
    that decoder, literal values or expressions of the inputs (``argmax(n=n)``, evaluated when the query
    runs). Their values are checked with the rest of the query (check.py)."""
    args: dict[str, object] = {}
    where: dict[str, Position] = {}
    exprs: dict[str, ast.Expression] = {}
    if isinstance(node, ast.Call):
        if node.args:
            raise QuerySyntaxError(
                "decoder arguments must be given by name, e.g. sample(temperature=0.8)",
                position_of(node.args[0]),
            )
        for kw in node.keywords:
            if kw.arg is None:
                raise QuerySyntaxError("decoder arguments must be given by name", position_of(kw.value))
            takes = DECODER_ARGS[DECODERS[name]]
            if kw.arg not in takes:
                raise QueryCompileError(
                    f"{name} has no argument '{kw.arg}' (it takes: {', '.join(sorted(takes))})",
                    position_of(kw),
                )
            at = position_of(kw)
            if at is not None:
                where[kw.arg] = at
            try:
                args[kw.arg] = ast.literal_eval(kw.value)
            except ValueError:  # `argmax(n=n)`: evaluated with the query's inputs when it runs
                exprs[kw.arg] = ast.Expression(body=kw.value)
    return DecoderSpec(DECODERS[name], args, pos, where, exprs)


def _parse_in_place(
    lines: list[str], kw: tokenize.TokenInfo, last: tuple[int, int], smap: SourceMap, what: str
) -> ast.Expression:
    """Parse the expression after keyword ``kw`` up to ``last`` (line, col), in place: the line up to
    the keyword becomes '(' + blanks and a ')' closes the text, so every node keeps the user's position."""
    (ln, c), (end_ln, end_c) = kw.start, last
    body = list(lines[ln - 1 : end_ln])
    body[-1] = body[-1][:end_c]
    # '(' then blanks up to the end of the keyword: what precedes it (an inline where's prompt) is
    # blanked byte for byte, as ast counts columns in bytes.
    width = len(body[0][:c].encode()) + len(kw.string)
    body[0] = "(" + " " * (width - 1) + body[0][c + len(kw.string) :]
    src = _blank(lines, ln) + "\n".join(body) + "\n)"
    try:
        expr = _ast_parse(src, "eval", smap, kw.start)
    except SyntaxError as err:
        if err.msg.startswith("invalid syntax. Perhaps you forgot a comma"):
            err.msg = "invalid syntax"
        if err.lineno == ln and err.offset and err.offset - 1 >= width:  # back to the user's characters
            err.offset += c + len(kw.string) - width
        raise _syntax_error(err, smap, what, end=last) from None
    assert isinstance(expr, ast.Expression)
    if isinstance(expr.body, ast.Tuple) and not expr.body.elts:
        raise QuerySyntaxError(f"empty {what.removeprefix('the ')}", smap.position(ln, c))
    return expr


def _parse_clause(
    query: Query, clause: _Line, lines: list[str], last: tuple[int, int], smap: SourceMap
) -> None:
    kw = clause.first
    word = kw.string.lower()
    kw_pos = smap.position(kw.start[0], kw.start[1])
    expr = _parse_in_place(lines, kw, last, smap, f"the {word} clause")
    if word == "from":
        node = expr.body
        if query.model is not None or query.model_expr is not None:
            raise QuerySyntaxError("a second from clause", kw_pos)
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            query.model = node.value
        elif isinstance(node, ast.Constant):
            raise QuerySyntaxError(
                'the from clause takes a model: a name in quotes (from "local:smollm2") or an expression',
                smap.of(node),
            )
        else:  # `from MODEL`, `from lmql.model("random", seed=1)`: evaluated when the query runs
            query.model_expr = expr
        query.model_position = smap.of(node)
    elif word == "where":
        if query.where is not None:
            raise QuerySyntaxError("a second where clause: join the constraints with 'and'", kw_pos)
        query.where = expr
    else:
        node = expr.body
        ok = (
            isinstance(node, ast.Compare)
            and isinstance(node.left, ast.Name)
            and len(node.ops) == 1
            and isinstance(node.ops[0], ast.In)
        )
        if not ok:
            raise QuerySyntaxError(
                "the distribution clause reads: distribution VAR in [values]", smap.of(node)
            )
        assert isinstance(node, ast.Compare) and isinstance(node.left, ast.Name)
        values = ast.Expression(body=node.comparators[0])
        query.distribution = Distribution(node.left.id, values, smap.of(node))


# -- the body -----------------------------------------------------------------------------------------


def _rewrite_inline_where(src: str, smap: SourceMap) -> tuple[str, set[tuple[int, int]]]:
    """Turn ``"prompt" where C`` into ``"prompt" if    C else None`` (same columns), a valid Python
    expression; return the new text and the positions of the rewritten ``where`` keywords, as (line,
    UTF-8 byte column) like ast's ``col_offset``, so that ``_prompt_of`` compares like with like."""
    lines = src.split("\n")
    marks: set[tuple[int, int]] = set()
    edits: list[tuple[int, int, str, str]] = []  # (line, col, old, new)
    for line in _logical_lines(src, smap):
        if line.first.type != tokenize.STRING:
            continue
        depth = 0
        for tok in line.tokens:
            if tok.string in "([{" and tok.type == tokenize.OP:
                depth += 1
            elif tok.string in ")]}" and tok.type == tokenize.OP:
                depth -= 1
            elif depth == 0 and tok.type == tokenize.NAME and tok.string == "where":
                # Parse the constraint alone first: an error in it must not speak of our rewrite.
                _parse_in_place(lines, tok, line.tokens[-1].end, smap, "the where constraint")
                # ast reports columns in UTF-8 bytes (the one place they meet tokenize's characters)
                marks.add((tok.start[0], len(lines[tok.start[0] - 1][: tok.start[1]].encode())))
                edits.append((tok.start[0], tok.start[1], "where", "if   "))
                last = line.tokens[-1]
                edits.append((last.end[0], last.end[1], "", " else None"))
                break
    for ln, col, old, new in sorted(edits, key=lambda e: (e[0], e[1]), reverse=True):
        s = lines[ln - 1]
        lines[ln - 1] = s[:col] + new + s[col + len(old) :]
    return "\n".join(lines), marks


def _prompt_of(stmt: ast.stmt, marks: set[tuple[int, int]]) -> tuple[ast.expr, ast.expr | None] | None:
    """(string node, inline constraint) if ``stmt`` is a prompt statement."""
    if not isinstance(stmt, ast.Expr):
        return None
    value = stmt.value
    if isinstance(value, ast.IfExp) and isinstance(value.orelse, ast.Constant) and value.orelse.value is None:
        after_body = (value.body.end_lineno, value.body.end_col_offset)
        before_test = (value.test.lineno, value.test.col_offset)
        if any(after_body <= mark < before_test for mark in marks):
            return value.body, value.test
    if isinstance(value, (ast.Constant, ast.JoinedStr)) and (
        isinstance(value, ast.JoinedStr) or isinstance(value.value, str)
    ):
        return value, None
    return None


def _first_await(tree: ast.AST) -> ast.AST | None:
    """The first await / async for / async with of the query's own code (not of a nested async def)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.Await, ast.AsyncFor, ast.AsyncWith)):
            return node
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue
        found = _first_await(node)
        if found is not None:
            return found
    return None


def _refuse_yield(tree: ast.AST, smap: SourceMap) -> None:
    """The body becomes a generator whose yields are the prompt's events: the query's own ``yield``
    (not one in a nested function) would be taken for one."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.Yield, ast.YieldFrom)):
            word = "yield from" if isinstance(node, ast.YieldFrom) else "yield"
            raise UnsupportedError(f"'{word}' inside a query body: a query is not a generator", smap.of(node))
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            _refuse_yield(node, smap)


class _PromptExtractor(ast.NodeTransformer):
    """Replace each prompt statement by ``__prompt__(i)`` and collect its segments and holes."""

    def __init__(self, query: Query, marks: set[tuple[int, int]], src: str):
        self.query = query
        self.marks = marks
        self.src = src

    def _visit_block(self, stmts: list[ast.stmt]) -> list[ast.stmt]:
        out = []
        for stmt in stmts:
            found = _prompt_of(stmt, self.marks)
            if found is None:
                out.append(self.visit(stmt))
                continue
            node, inline = found
            out.append(self._replace(stmt, node, inline))
        return out

    def _replace(self, stmt: ast.stmt, node: ast.expr, inline: ast.expr | None) -> ast.stmt:
        smap = self.query.source_map
        if isinstance(node, ast.JoinedStr):
            raise QuerySyntaxError(
                "a prompt is a plain string, not an f-string: {expr} is interpolated in every prompt",
                smap.of(node),
            )
        if isinstance(node, ast.Constant) and not isinstance(node.value, str):
            raise QuerySyntaxError("a prompt statement must be a string", smap.of(node))
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
            raise QueryCompileError(
                "a prompt with holes or a where constraint must be one string literal: interpolate "
                'values with {expr} inside it (e.g. "Q: {x} [X]"), not with +',
                smap.of(node),
            )
        raw = ast.get_source_segment(self.src, node) or ""
        first_index = len(self.query.holes)
        segments = template.parse_template(node.value, raw, node, smap, first_index)
        where = ast.Expression(body=inline) if inline is not None else None
        for seg in segments:
            if isinstance(seg, Hole):
                seg.inline_where = where
                self.query.holes.append(seg)
            elif isinstance(seg, Role):
                self.query.uses_roles = True
        if inline is not None and len(self.query.holes) == first_index:
            raise QueryCompileError(
                "this prompt has 'where' but no [HOLE] for it to constrain", smap.of(inline)
            )
        index = len(self.query.prompts)
        self.query.prompts.append(Prompt(segments, smap.of(node)))
        call = ast.Call(func=ast.Name(PROMPT_MARKER, ast.Load()), args=[ast.Constant(index)], keywords=[])
        new = ast.Expr(call)
        return ast.copy_location(new, stmt)

    def generic_visit(self, node: ast.AST) -> ast.AST:
        for fieldname in ("body", "orelse", "finalbody"):
            block = getattr(node, fieldname, None)
            if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
                setattr(node, fieldname, self._visit_block(block))
        for handler in getattr(node, "handlers", []) or []:
            handler.body = self._visit_block(handler.body)
        for case in getattr(node, "cases", []) or []:
            case.body = self._visit_block(case.body)
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        return node  # strings inside nested functions are ordinary Python

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]
    visit_ClassDef = visit_FunctionDef  # type: ignore[assignment]


def _parse_body(query: Query, lines: list[str], start: int, end: int, smap: SourceMap) -> None:
    body_lines = lines[start - 1 : end - 1]
    indents = [
        len(ln) - len(ln.lstrip()) for ln in body_lines if ln.strip() and not ln.lstrip().startswith("#")
    ]
    common = min(indents, default=0)
    if common:
        for i in range(len(body_lines)):
            ln = body_lines[i]
            cut = min(common, len(ln) - len(ln.lstrip()))
            smap.col_shift[start + i] = smap.col_shift.get(start + i, 0) + cut
            body_lines[i] = ln[cut:]
    src = _blank(lines, start) + "\n".join(body_lines)
    src, marks = _rewrite_inline_where(src, smap)
    try:
        module = _ast_parse(src, "exec", smap, (start, 0))
    except SyntaxError as err:
        raise _syntax_error(err, smap, "the query body") from None
    assert isinstance(module, ast.Module)
    _refuse_yield(module, smap)
    module.body = _PromptExtractor(query, marks, src)._visit_block(module.body)
    query.body = module
    query.first_await = _first_await(module)
    query.is_async = query.first_await is not None
