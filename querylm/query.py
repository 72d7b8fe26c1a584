"""A query as a Python function: a ``@query`` function whose docstring is the query, and ``F`` (a one-line
query as a function). They compile through the same pipeline as a string or ``.lmql`` file
(language/source.py, language/check.py) and run on the runtime (runtime/run.py)."""

from __future__ import annotations

import ast
import asyncio
import copy
import functools
import inspect
import sys
import textwrap
from collections.abc import Callable
from typing import Any

from .errors import Position, QueryInputError
from .language.check import Plan, bind_inputs, compile_source, plan
from .language.compile import compile_query
from .language.source import docstring_source, parse_source
from .runtime.nested import NestedCall, in_nested_mode, in_query_code
from .runtime.result import QueryResult
from .runtime.run import run_plan
from .tools.tool import Tool, schema_from_signature


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
            src = docstring_source(self.fn)
            q = parse_source(src)
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
            if out[name] is param.default:  # the author's own default (`s: str = None`) is not checked
                continue
            where = position or _param_position(self.fn, name)
            out[name] = _validate_input(self.name, name, param.annotation, out[name], where)
        return out

    def __querylm_nested__(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], position: Position | None
    ) -> tuple[Plan, dict[str, Any]]:
        """Called as a hole's type, the function is a nested query of the running one (runtime/nested.py)."""
        return self.plan(), self.inputs(args, kwargs, position)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if in_nested_mode():
            return NestedCall(self, args, kwargs)
        if self.is_async and not in_query_code().get():
            return self.acall(*args, **kwargs)
        return self._result(self.run(*args, **kwargs))

    async def acall(self, *args: Any, **kwargs: Any) -> Any:
        return self._result(await asyncio.to_thread(self.run, *args, **kwargs))

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """Run and return the QueryResult (or a list of them when n > 1), whatever the query returns."""
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
        result = run_plan(
            self.plan, bind_inputs(self.plan.compiled, inputs), model=self.model, decoder=self.decoder
        )
        results = result if isinstance(result, list) else [result]
        values = [r.variables if len(r.variables) > 1 else next(iter(r.variables.values())) for r in results]
        return values if isinstance(result, list) else values[0]
