"""Query IR → a Python generator function.

Every prompt statement becomes a run of ``yield`` expressions, one per segment; the runtime drives the
generator, answers each hole with its value, and the hole's name is bound as a Python variable for the
code that follows (LMQL's semantics). The generator yields plain tuples:

- ``("text", str)``: fixed prompt text;
- ``("interp", (prompt, segment), thunk)``: an ``{expr}`` to evaluate (the thunk) and append;
- ``("role", name)``: a chat role tag;
- ``("hole", index, thunk, decorators)``: a hole; the thunk evaluates its type expression (or is None),
  ``decorators`` its ``[@f X]`` decorators as a list (or is None). The value sent back is bound to the
  hole's name.

The generator's own return value is ``(RETURNED, X)`` for a ``return X``, and None otherwise.

Interpolations and types are thunks so that the runtime can evaluate them under a try and report an
error at the user's line and column.
"""

from __future__ import annotations

import ast
import builtins
import copy
import difflib
import linecache
import threading
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..constraints import functions
from ..errors import QueryCompileError, QueryRuntimeError, UnsupportedError
from .ir import Hole, Interpolation, Query, Role, Text
from .parse import PROMPT_MARKER

FUNCTION_NAME = "__querylm_query__"
SCOPE_NAME = "__querylm_scope__"
CONTEXT = "context"
"""LMQL's name for the running query's state in its code (``context.prompt``)."""
BUILTIN_NAMES = set(dir(builtins))
PREDEFINED: dict[str, Any] = {"Literal": typing.Literal}
"""Names a string or file query can use without importing them (a function-form query has its module's)."""


@dataclass
class CompiledQuery:
    """A query compiled to a generator function, plus what the runtime needs to run it."""

    query: Query
    function: Callable[..., Any]
    inputs: list[str]
    free_names: dict[str, ast.AST] = field(default_factory=dict)
    """Names the query reads but never defines, with their first use (for error positions)."""
    scope: dict[str, Any] = field(default_factory=dict)
    """The enclosing function's names the query closes over (see ``compile_query``)."""
    uses_context: bool = False
    """The query reads LMQL's ``context`` (``context.prompt``): the runtime passes it in."""
    prelude: list[tuple[Any, ast.stmt]] = field(default_factory=list)
    """The code before the decoder keyword, compiled statement by statement: run into ``namespace``
    (the body's globals) once, when the query first runs, never when it is only compiled or checked
    (``querylm check`` must not execute the user's code)."""
    namespace: dict[str, Any] = field(default_factory=dict)
    prelude_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def call(self, /, **kwargs: Any) -> Any:
        """The body's generator for these inputs, the prelude run first if it has not run yet."""
        with self.prelude_lock:  # once, even when the first runs come from several threads
            while self.prelude:
                piece, stmt = self.prelude[0]
                try:
                    exec(piece, self.namespace)  # noqa: S102
                except Exception as err:
                    raise QueryRuntimeError(
                        f"{type(err).__name__}: {err}", self.query.source_map.of(stmt)
                    ) from err
                self.prelude.pop(0)
        return self.function(**kwargs)

    @property
    def code_filename(self) -> str:
        return code_filename(self.query)


def code_filename(query: Query) -> str:
    """The compiled body's filename: unique per query, and registered with ``linecache`` (the query's
    text, line for line), so that ``inspect`` reads the source of a ``@query`` defined in a query body
    (its docstring's escapes as written)."""
    return f"<querylm {query.name} {id(query):x}>"


def _function(name: str, args: ast.arguments, body: list[ast.stmt]) -> ast.FunctionDef:
    fn = ast.FunctionDef(name=name, args=args, body=body, decorator_list=[], returns=None)
    if "type_params" in ast.FunctionDef._fields:  # Python >= 3.12
        fn.type_params = []  # type: ignore[attr-defined]
    return fn


def _lambda(expr: ast.expr) -> ast.Lambda:
    args = ast.arguments(
        posonlyargs=[], args=[], vararg=None, kwonlyargs=[], kw_defaults=[], kwarg=None, defaults=[]
    )
    return ast.Lambda(args=args, body=expr)


def _segment_yields(query: Query, index: int, at: ast.stmt) -> list[ast.stmt]:
    out: list[ast.stmt] = []
    for seg_i, seg in enumerate(query.prompts[index].segments):
        if isinstance(seg, Text):
            value: ast.expr = ast.Tuple([ast.Constant("text"), ast.Constant(seg.text)], ast.Load())
            out.append(ast.Expr(ast.Yield(value)))
        elif isinstance(seg, Interpolation):
            key = ast.Tuple([ast.Constant(index), ast.Constant(seg_i)], ast.Load())
            value = ast.Tuple([ast.Constant("interp"), key, _lambda(seg.expr.body)], ast.Load())
            out.append(ast.Expr(ast.Yield(value)))
        elif isinstance(seg, Role):
            value = ast.Tuple([ast.Constant("role"), ast.Constant(seg.role)], ast.Load())
            out.append(ast.Expr(ast.Yield(value)))
        elif isinstance(seg, Hole):
            thunk: ast.expr = _lambda(seg.type_expr.body) if seg.type_expr else ast.Constant(None)
            decorated = ast.List([d.body for d in seg.decorators], ast.Load())
            decorators: ast.expr = _lambda(decorated) if seg.decorators else ast.Constant(None)
            value = ast.Tuple([ast.Constant("hole"), ast.Constant(seg.index), thunk, decorators], ast.Load())
            target = ast.Name(seg.name, ast.Store())
            out.append(ast.Assign(targets=[target], value=ast.Yield(value)))
    for stmt in out:
        ast.copy_location(stmt, at)
        for node in ast.walk(stmt):
            if not hasattr(node, "lineno") or getattr(node, "lineno", None) is None:
                ast.copy_location(node, at)
    return out


RETURNED = "__querylm_returned__"
"""``return X`` becomes ``return (RETURNED, X)``: the runtime tells an explicit ``return None`` (the
query's result is None) from a bare ``return`` or falling off the end (its result is the run's)."""


class _Expand(ast.NodeTransformer):
    def __init__(self, query: Query):
        self.query = query

    def visit_Return(self, node: ast.Return) -> Any:
        if node.value is None:
            return node
        marked = ast.Tuple([ast.Constant(RETURNED), node.value], ast.Load())
        return ast.copy_location(ast.Return(ast.copy_location(marked, node.value)), node)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> Any:
        return node  # a nested function's return is its own

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]
    visit_Lambda = visit_FunctionDef  # type: ignore[assignment]
    visit_ClassDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_Expr(self, node: ast.Expr) -> Any:
        call = node.value
        if (
            isinstance(call, ast.Call)
            and isinstance(call.func, ast.Name)
            and call.func.id == PROMPT_MARKER
            and isinstance(call.args[0], ast.Constant)
            and isinstance(call.args[0].value, int)
        ):
            return _segment_yields(self.query, call.args[0].value, node)
        return node


def defined_names(tree: ast.AST) -> set[str]:
    """Names a piece of code binds: assignment targets, loop variables, imports, defs, handlers."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            out.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                out.add((alias.asname or alias.name).split(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            out.add(node.name)
        elif isinstance(node, ast.arg):
            out.add(node.arg)
    return out


def used_names(trees: Iterable[ast.AST]) -> dict[str, ast.AST]:
    out: dict[str, ast.AST] = {}
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
                out.setdefault(node.id, node)
    return out


def _check_inline_wheres(query: Query) -> None:
    """``"..." where C`` constrains its own prompt's holes: a conjunct of C that mentions none of them
    would constrain nothing, so it is an error rather than silently dropped."""
    own: dict[int, tuple[ast.Expression, set[str]]] = {}
    for hole in query.holes:
        if hole.inline_where is not None:
            own.setdefault(id(hole.inline_where), (hole.inline_where, set()))[1].add(hole.name)
    for where, names in own.values():
        for c in _conjuncts(where.body):
            mentioned = {n.id for n in ast.walk(c) if isinstance(n, ast.Name)}
            if not names & mentioned:
                others = sorted(mentioned - set(functions.NAMES) - BUILTIN_NAMES)
                only = f", only {', '.join(others)}" if others else ""
                raise QueryCompileError(
                    f"this constraint mentions no hole of its prompt ({', '.join(sorted(names))}){only}: "
                    "constrain other holes in their own prompt or in the query's where clause",
                    query.source_map.of(c),
                )


def _conjuncts(node: ast.expr) -> list[ast.expr]:
    if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.And):
        return [c for v in node.values for c in _conjuncts(v)]
    return [node]


def compile_query(
    query: Query,
    *,
    params: list[str] | None = None,
    globals_: dict[str, Any] | None = None,
    scope: dict[str, Any] | None = None,
) -> CompiledQuery:
    """Compile ``query``. ``params`` are the inputs of a function-form query; for a string or file
    query they are None and every name the query reads without defining it becomes an input.
    ``scope``: the local names of the function a ``@query`` is defined in (a dataclass defined there),
    which the query reads as a closure reads them."""
    if query.first_await is not None:
        raise UnsupportedError(
            "'await' inside a query body is not supported yet: call async code from outside the query",
            query.source_map.of(query.first_await),
        )
    expanded = _Expand(query).visit(copy.deepcopy(query.body))
    body = expanded.body or [ast.Pass()]

    prompt_exprs: list[ast.AST] = []
    for prompt in query.prompts:
        for seg in prompt.segments:
            if isinstance(seg, Interpolation):
                prompt_exprs.append(seg.expr)
            elif isinstance(seg, Hole):
                prompt_exprs += [seg.type_expr] if seg.type_expr is not None else []
                prompt_exprs += seg.decorators

    holes = {h.name for h in query.holes}
    defined = defined_names(expanded) | holes
    defined |= defined_names(query.prelude) if query.prelude is not None else set()
    wheres = [query.where] if query.where is not None else []
    wheres += [h.inline_where for h in query.holes if h.inline_where is not None]
    dist = [query.distribution.values] if query.distribution is not None else []
    dist += [query.model_expr] if query.model_expr is not None else []
    dist += list(query.decoder.arg_exprs.values())
    used = used_names([expanded, *prompt_exprs, *wheres, *dist])
    known = (
        defined
        | BUILTIN_NAMES
        | set(PREDEFINED)
        | set(params or [])
        | set((globals_ or {}).keys())
        | set(scope or {})
        | set(functions.NAMES)
    )
    uses_context = CONTEXT in used and CONTEXT not in known
    free = {name: node for name, node in used.items() if name not in known and name != CONTEXT}
    for name, node in free.items():
        near = difflib.get_close_matches(name, sorted(holes), n=1)
        in_where = any(n is node for w in wheres for n in ast.walk(w))
        if in_where and (near or params is not None):
            hint = f" (did you mean {near[0]}?)" if near else ""
            raise QueryCompileError(
                f"unknown variable '{name}' in the where clause{hint}", query.source_map.of(node)
            )
    _check_inline_wheres(query)
    inputs = list(params) if params is not None else sorted(free)
    if params is not None:
        free = {}

    kwonly = [ast.arg(arg=name) for name in [*inputs, *[CONTEXT] * uses_context]]
    args = ast.arguments(
        posonlyargs=[],
        args=[],
        vararg=None,
        kwonlyargs=kwonly,
        kw_defaults=[None] * len(kwonly),
        kwarg=None,
        defaults=[],
    )
    fn = _function(FUNCTION_NAME, args, body)
    if not any(isinstance(n, (ast.Yield, ast.YieldFrom)) for n in ast.walk(fn)):
        # a query of code alone (LMQL runs them): still a generator, which never yields
        fn.body.append(ast.If(ast.Constant(False), [ast.Expr(ast.Yield(ast.Constant(None)))], []))
    scope = scope or {}
    # With enclosing names, the query function inside one that takes them: a closure over them, as if
    # it had been written where the @query function was.
    outer = _function(
        SCOPE_NAME,
        ast.arguments(
            posonlyargs=[], args=[ast.arg(arg=n) for n in scope], vararg=None, kwonlyargs=[],
            kw_defaults=[], kwarg=None, defaults=[],
        ),
        [fn, ast.Return(ast.Name(FUNCTION_NAME, ast.Load()))],
    )  # fmt: skip
    module = ast.Module(body=[outer if scope else fn], type_ignores=[])
    ast.fix_missing_locations(module)
    filename = code_filename(query)
    smap = query.source_map
    text = smap.file_lines[smap.first_line - 1 :]
    linecache.cache[filename] = (sum(map(len, text)), None, [ln + "\n" for ln in text], filename)
    try:
        # dont_inherit: not under this module's own `from __future__ import annotations`, which would
        # leave a dataclass defined in the query body with string annotations nothing can resolve.
        code = compile(module, filename, "exec", dont_inherit=True)
    except SyntaxError as err:
        raise QueryCompileError(
            err.msg, query.source_map.position(err.lineno or 1, (err.offset or 1) - 1)
        ) from None
    namespace: dict[str, Any] = globals_ if globals_ is not None else {"__builtins__": builtins, **PREDEFINED}
    prelude: list[tuple[Any, ast.stmt]] = []
    if query.prelude is not None:  # its names are the query's globals: a copy, so the module stays as it was
        namespace = dict(namespace)
        for stmt in query.prelude.body:  # one by one, so that an error points at its statement
            piece = compile(ast.Module([stmt], type_ignores=[]), filename, "exec", dont_inherit=True)
            prelude.append((piece, stmt))
    local_ns: dict[str, Any] = {}
    exec(code, namespace, local_ns)
    function = local_ns[SCOPE_NAME](**scope) if scope else local_ns[FUNCTION_NAME]
    return CompiledQuery(query, function, inputs, free, scope, uses_context, prelude, namespace)
