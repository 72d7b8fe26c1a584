"""The ways a user writes a query: a string or ``.lmql`` file, a ``@query`` function whose docstring is
the query, and ``F`` (a one-line query as a function). All compile through the same pipeline."""

from __future__ import annotations

import ast
import asyncio
import contextvars
import copy
import functools
import inspect
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import Position, QueryInputError, UnsupportedError
from .language.compile import CompiledQuery, compile_query
from .language.parse import parse
from .runtime.plan import Plan, plan
from .runtime.result import QueryResult
from .tools.tool import Tool, schema_from_signature

_nested_mode: contextvars.ContextVar[bool] = contextvars.ContextVar("querylm_nested", default=False)
_in_query_code: contextvars.ContextVar[bool] = contextvars.ContextVar("querylm_in_query", default=False)
"""Set while a query's own code runs: an async query function called there runs to its value (LMQL),
for the code can't await it."""


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


@functools.lru_cache(maxsize=256)
def _compile_cached(src: Source) -> Plan:
    q = parse(
        src.text,
        filename=src.filename,
        file_lines=list(src.file_lines) if src.file_lines else None,
        first_line=src.first_line,
        first_col=src.first_col,
        name=src.name,
    )
    return plan(compile_query(q), base_dir=src.base_dir)


def compile_source(query: str | Path) -> Plan:
    """Parse, compile and check a query string or file (no model needed)."""
    return _compile_cached(source_of(query))


def bind_inputs(compiled: CompiledQuery, inputs: dict[str, Any]) -> dict[str, Any]:
    """Check a string/file query's inputs: every name it reads must be given, nothing else may be."""
    unknown = sorted(set(inputs) - set(compiled.inputs))
    if unknown:
        reads = ", ".join(compiled.inputs) or "no inputs"
        raise QueryInputError(f"unknown input '{unknown[0]}' (the query reads: {reads})")
    for name in compiled.inputs:
        if name not in inputs:
            node = compiled.free_names.get(name)
            pos = _position_of(compiled, node)
            raise QueryInputError(
                f"missing input '{name}': pass it as {name}=... (CLI: --input {name}=VALUE)", pos
            )
    return inputs


def _position_of(compiled: CompiledQuery, node: Any) -> Position | None:
    """A free name's position: names inside {expr} were parsed on their own, so find their prompt."""
    if node is None:
        return None
    for prompt in compiled.query.prompts:
        for seg in prompt.segments:
            expr = getattr(seg, "expr", None) or getattr(seg, "type_expr", None)
            if expr is not None and any(n is node for n in ast.walk(expr)):
                return seg.position  # type: ignore[union-attr]
    return compiled.query.source_map.of(node)


# -- function form ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class NestedCall:
    """``[X: f(a, b)]``: a query function called as a nested query of the running one."""

    function: QueryFunction
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


def _docstring_source(fn: Callable[..., Any]) -> Source:
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


class QueryFunction:
    """A ``@query`` function: calling it runs the query with its arguments as inputs and returns what
    the query returns (its ``return`` value, else the QueryResult; a list of them when n > 1)."""

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        model: str | None = None,
        decoder: str | None = None,
        scope: dict[str, Any] | None = None,
        **options: Any,
    ):
        self.fn = fn
        self.scope = {k: v for k, v in (scope or {}).items() if k.isidentifier()}
        """The locals of the function the query was defined in (LMQL's queries see them)."""
        self.name = fn.__name__
        self.signature = inspect.signature(fn)
        self.is_async = inspect.iscoroutinefunction(fn)
        self.model = model
        self.decoder = decoder
        self.options = options
        self.bound: tuple[Any, ...] = ()
        """``(self,)`` for a query method reached through an instance."""
        self._plans: dict[str, Plan] = {}  # shared by the bound copies of a method
        functools.update_wrapper(self, fn)

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        """A ``@query`` method: ``obj.method(...)`` passes ``obj`` as ``self``, as for any method."""
        if obj is None:
            return self
        bound = copy.copy(self)
        bound.bound = (obj,)
        return bound

    def plan(self) -> Plan:
        if "plan" not in self._plans:
            src = _docstring_source(self.fn)
            q = parse(
                src.text,
                filename=src.filename,
                file_lines=list(src.file_lines) if src.file_lines else None,
                first_line=src.first_line,
                first_col=src.first_col,
                name=src.name,
            )
            params = list(self.signature.parameters)
            compiled = compile_query(q, params=params, globals_=self.fn.__globals__, scope=self.scope)
            names = {**self.fn.__globals__, **self.scope}
            self._plans["plan"] = plan(compiled, globals_=names, base_dir=src.base_dir)
        return self._plans["plan"]

    def inputs(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], position: Position | None = None
    ) -> dict[str, Any]:
        try:
            bound = self.signature.bind(*self.bound, *args, **kwargs)
        except TypeError as err:
            raise QueryInputError(f"{self.name}(): {err}", position) from None
        bound.apply_defaults()
        out = dict(bound.arguments)
        for name, param in self.signature.parameters.items():
            if param.annotation is inspect.Parameter.empty or name not in out:
                continue
            where = position or _param_position(self.fn, name)
            out[name] = _validate_input(self.name, name, param.annotation, out[name], where)
        return out

    def nested_plan(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], position: Position | None
    ) -> tuple[Plan, dict[str, Any]]:
        return self.plan(), self.inputs(args, kwargs, position)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if _nested_mode.get():
            return NestedCall(self, args, kwargs)
        if self.is_async and not _in_query_code.get():
            return self.acall(*args, **kwargs)
        return self._result(self.run(*args, **kwargs))

    async def acall(self, *args: Any, **kwargs: Any) -> Any:
        return self._result(await asyncio.to_thread(self.run, *args, **kwargs))

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """Run and return the QueryResult (or a list of them when n > 1), whatever the query returns."""
        from .runtime.run import run_plan

        p = self.plan()
        return run_plan(p, self.inputs(args, kwargs), model=self.model, decoder=self.decoder, **self.options)

    def as_tool(self, *, model: str | None = None, timeout: float | None = None) -> Tool:
        """This query as a Tool (what ``ToolRegistry`` registers, and ``querylm mcp serve`` serves): its
        arguments' schema from the signature, the query run on ``model`` (else the function's own), the
        value what the query returns (a QueryResult as its prompt and variables)."""
        fn = (
            self
            if model is None
            else QueryFunction(self.fn, model=model, decoder=self.decoder, **self.options)
        )
        doc = " ".join((inspect.getdoc(self.fn) or "").removeprefix("lmql").split())
        call: Any
        if self.is_async:

            async def acall(**inputs: Any) -> Any:
                return _tool_value(await fn(**inputs))

            call = acall
        else:

            def call(**inputs: Any) -> Any:
                return _tool_value(fn(**inputs))

        call.__name__ = self.name
        return Tool(
            call,
            name=self.name,
            description=f"Runs the query {self.name}: {doc[:300]}",
            schema=schema_from_signature(self.fn),
            timeout=timeout,
        )

    def _result(self, result: Any) -> Any:
        return returned_value(result)


def returned_value(result: Any) -> Any:
    """What a query call returns (LMQL's convention): the query's ``return`` value where one ran, else
    the QueryResult (a list of them when n > 1)."""
    if isinstance(result, list):
        return [r.return_value if r.returned else r for r in result]
    return result.return_value if result.returned else result


def _tool_value(value: Any) -> Any:
    """What a query returned, as a tool's value: a QueryResult as its prompt and variables."""
    if isinstance(value, QueryResult):
        return value.to_json()
    if isinstance(value, list):
        return [_tool_value(v) for v in value]
    return value


def _param_position(fn: Callable[..., Any], name: str) -> Position | None:
    """Where parameter ``name`` of ``fn`` is declared: a wrong input is placed at its annotation."""
    try:
        lines, start = inspect.getsourcelines(fn)
        src = textwrap.dedent("".join(lines))
        tree = ast.parse(src)
    except (OSError, TypeError, SyntaxError):
        return None
    fdef = next(n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))
    args = fdef.args
    for arg in [*args.posonlyargs, *args.args, args.vararg, *args.kwonlyargs, args.kwarg]:
        if arg is not None and arg.arg == name:
            text = src.split("\n")[arg.lineno - 1]
            indent = len(lines[0]) - len(lines[0].lstrip())
            col = len(text.encode()[: arg.col_offset].decode("utf-8", errors="ignore")) + indent + 1
            line = lines[arg.lineno - 1].rstrip("\r\n")
            return Position(inspect.getsourcefile(fn) or "<query>", start + arg.lineno - 1, col, line)
    return None


def _validate_input(fn: str, name: str, annotation: Any, value: Any, position: Position | None) -> Any:
    from pydantic import TypeAdapter, ValidationError

    try:
        return TypeAdapter(annotation).validate_python(value)
    except ValidationError as err:
        detail = err.errors()[0]["msg"] if err.errors() else str(err)
        tname = getattr(annotation, "__name__", str(annotation))
        raise QueryInputError(
            f"{fn}(): input '{name}' must be {tname}, got {value!r}: {detail}", position
        ) from None
    except Exception:  # an annotation pydantic can't use: trust the caller
        return value


def defining_scope(frame: Any) -> dict[str, Any]:
    """The locals a query defined in ``frame`` sees (LMQL's scoping): a function's (or an enclosing
    query's), none at module level (its globals are the query's) or in a class body (whose names a
    method can't see either)."""
    in_class = "__module__" in frame.f_locals and "__qualname__" in frame.f_locals
    return dict(frame.f_locals) if frame.f_code.co_name != "<module>" and not in_class else {}


def query(
    fn: Callable[..., Any] | None = None,
    *,
    model: str | None = None,
    decoder: str | None = None,
    **options: Any,
) -> Any:
    """Decorate a function whose docstring is a query (``'''lmql ...'''``); its parameters are the
    query's inputs. ``@query(model=..., decoder="sample(n=2)")`` sets defaults for every call."""
    scope = defining_scope(sys._getframe(1))
    if fn is None:
        return lambda f: QueryFunction(f, model=model, decoder=decoder, scope=scope, **options)
    return QueryFunction(fn, model=model, decoder=decoder, scope=scope, **options)


def nested_mode() -> contextvars.ContextVar[bool]:
    return _nested_mode


def in_query_code() -> contextvars.ContextVar[bool]:
    return _in_query_code


class F:
    """A one-line query as a function, like LMQL's ``lmql.F``::

        summarize = querylm.F("Summarize: {text}\\nSummary:[SUMMARY]", "STOPS_AT(SUMMARY, '.')")
        summarize(text="...")   # -> the value of SUMMARY

    Calling it returns the value of its hole (a dict of them when it has several)."""

    def __init__(
        self,
        template: str,
        constraints: str | None = None,
        *,
        model: str | None = None,
        decoder: str | None = None,
    ):
        self.source = repr(template) + (f" where {constraints}" if constraints else "")
        self.model = model
        self.decoder = decoder
        self.plan = compile_source(self.source)

    def __call__(self, **inputs: Any) -> Any:
        from .runtime.run import run_plan

        result = run_plan(
            self.plan, bind_inputs(self.plan.compiled, inputs), model=self.model, decoder=self.decoder
        )
        results = result if isinstance(result, list) else [result]
        values = [r.variables if len(r.variables) > 1 else next(iter(r.variables.values())) for r in results]
        return values if isinstance(result, list) else values[0]
