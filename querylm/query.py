"""A query as a Python function: a ``@query`` function whose docstring is the query, and ``F`` (a one-line
query as a function). They compile through the same pipeline as a string or ``.lmql`` file
(language/source.py, language/check.py) and run on the runtime (runtime/run.py)."""

from __future__ import annotations

import ast
import asyncio
import functools
import inspect
import textwrap
from collections.abc import Callable
from typing import Any

from .errors import Position, QueryInputError
from .language.check import Plan, bind_inputs, compile_source, plan
from .language.compile import compile_query
from .language.source import docstring_source, parse_source
from .runtime.nested import NestedCall, in_nested_mode
from .runtime.run import run_plan


class QueryFunction:
    """A ``@query`` function: calling it runs the query with its arguments as inputs and returns what
    the query returns (its ``return`` value, else the QueryResult; a list of them when n > 1)."""

    def __init__(
        self, fn: Callable[..., Any], *, model: str | None = None, decoder: str | None = None, **options: Any
    ):
        self.fn = fn
        self.name = fn.__name__
        self.signature = inspect.signature(fn)
        self.is_async = inspect.iscoroutinefunction(fn)
        self.model = model
        self.decoder = decoder
        self.options = options
        self._plan: Plan | None = None
        functools.update_wrapper(self, fn)

    def plan(self) -> Plan:
        if self._plan is None:
            src = docstring_source(self.fn)
            q = parse_source(src)
            params = list(self.signature.parameters)
            compiled = compile_query(q, params=params, globals_=self.fn.__globals__)
            self._plan = plan(compiled, globals_=self.fn.__globals__, base_dir=src.base_dir)
        return self._plan

    def inputs(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], position: Position | None = None
    ) -> dict[str, Any]:
        try:
            bound = self.signature.bind(*args, **kwargs)
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

    def __querylm_nested__(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], position: Position | None
    ) -> tuple[Plan, dict[str, Any]]:
        """Called as a hole's type, the function is a nested query of the running one (runtime/nested.py)."""
        return self.plan(), self.inputs(args, kwargs, position)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if in_nested_mode():
            return NestedCall(self, args, kwargs)
        if self.is_async:
            return self.acall(*args, **kwargs)
        return self._result(self.run(*args, **kwargs))

    async def acall(self, *args: Any, **kwargs: Any) -> Any:
        return self._result(await asyncio.to_thread(self.run, *args, **kwargs))

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """Run and return the QueryResult (or a list of them when n > 1), whatever the query returns."""
        p = self.plan()
        return run_plan(p, self.inputs(args, kwargs), model=self.model, decoder=self.decoder, **self.options)

    def _result(self, result: Any) -> Any:
        has_return = any(
            isinstance(n, ast.Return) and n.value is not None
            for n in ast.walk(self.plan().compiled.query.body)
        )
        if not has_return:
            return result
        if isinstance(result, list):
            return [r.return_value for r in result]
        return result.return_value


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


def query(
    fn: Callable[..., Any] | None = None,
    *,
    model: str | None = None,
    decoder: str | None = None,
    **options: Any,
) -> Any:
    """Decorate a function whose docstring is a query (``'''lmql ...'''``); its parameters are the
    query's inputs. ``@query(model=..., decoder="sample(n=2)")`` sets defaults for every call."""
    if fn is None:
        return lambda f: QueryFunction(f, model=model, decoder=decoder, **options)
    return QueryFunction(fn, model=model, decoder=decoder, **options)


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
