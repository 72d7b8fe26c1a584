"""Variable decorators, LMQL's ``[@f X]``: Python callables written before a hole's name.

A plain function post-processes the finished value (``f(value)``): the program and the prompt see what
it returns. ``@pre`` marks one called before the hole is decoded, with the hole's ``Variable``: returning
it lets the model decode the hole, returning anything else fixes the value without decoding.
``@streaming`` marks one called with the value as it grows (each prefix of its tokens) and the query's
``context``; querylm calls it when the hole closes, prefix by prefix, not while the tokens arrive.
Decorators nearest the name apply first, as Python's do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

KIND = "__querylm_decorator__"
Fn = TypeVar("Fn", bound=Callable[..., Any])


@dataclass(frozen=True)
class Variable:
    """What a ``pre`` decorator is called with: the hole about to be decoded."""

    name: str


def pre(fn: Fn) -> Fn:
    setattr(fn, KIND, "pre")
    return fn


def streaming(fn: Fn) -> Fn:
    setattr(fn, KIND, "streaming")
    return fn


def kind(fn: Any) -> str:
    """``"pre"``, ``"streaming"`` or ``"post"`` (a plain function)."""
    return str(getattr(fn, KIND, "post"))
