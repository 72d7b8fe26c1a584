"""Nested queries (LMQL's): a query function used as a hole's type, ``[X: f]`` or ``[X: f(a, b)]``, is
decoded in place inside the running query, then unwound (Execution.nested).

The runtime evaluates a hole's type in *nested mode*: there, calling a query function does not run it
but returns a NestedCall, the function and its arguments, for the runtime to decode. A query function
is anything with ``__querylm_nested__(args, kwargs, position) -> (Plan, inputs)`` and a ``name``
(``@query`` functions, querylm/query.py): the runtime never imports the face that defines them."""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..language.check import is_query_function

_nested_mode: contextvars.ContextVar[bool] = contextvars.ContextVar("querylm_nested", default=False)
_in_query_code: contextvars.ContextVar[bool] = contextvars.ContextVar("querylm_in_query", default=False)


@dataclass(frozen=True)
class NestedCall:
    """``[X: f(a, b)]``: a query function called as a nested query of the running one."""

    function: Any
    """The query function: it has a ``name`` and ``__querylm_nested__``."""
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


def in_nested_mode() -> bool:
    """True while the runtime evaluates a hole's type: a query function called now is a NestedCall."""
    return _nested_mode.get()


def in_query_code() -> contextvars.ContextVar[bool]:
    """Set while a query's own code runs: an async query function called there runs to its value
    (LMQL), for the code can't await it."""
    return _in_query_code


def evaluate_type(thunk: Callable[[], Any]) -> Any:
    """Evaluate a hole's type expression in nested mode."""
    token = _nested_mode.set(True)
    try:
        return thunk()
    finally:
        _nested_mode.reset(token)


def nested_call(tp: Any) -> NestedCall | None:
    """The nested query a hole's type stands for (``f`` alone is ``f()``), or None for a plain type."""
    if isinstance(tp, NestedCall):
        return tp
    if is_query_function(tp):
        return NestedCall(tp, (), {})
    return None
