"""Typed holes, ``[X: type]``: the language of the type's values and the conversion to a Python value.

``int``, ``float`` and ``bool`` are regexes; ``Literal[...]`` and enums are alternations of their values;
dataclasses, pydantic models and other structured types are JSON under the JSON Schema pydantic derives
for them, and are validated and converted by pydantic.
"""

from __future__ import annotations

import enum
import json
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import regex
from .lang import Grammar, Lang, Term
from .schema import closed, compact


class TypeNotSupported(Exception):
    pass


@dataclass(frozen=True)
class TypedHole:
    lang: Lang | None
    convert: Callable[[str], Any]
    label: str
    choices: list[str] | None = None
    """The value's texts, for a type with a few values (``Literal``, enums)."""


def _parse_bool(text: str) -> bool:
    return text.strip().lower() == "true"


def typed_hole(tp: Any, names: dict[str, Any] | None = None) -> TypedHole:
    """The constraint and conversion of ``[X: tp]``. An object may define its own by a method
    ``__querylm_hole__() -> TypedHole`` (tool registries do: a call of one of their tools). ``names``:
    what the query sees where the hole is, for the string annotations of a type defined in a function
    (under ``from __future__ import annotations`` a local dataclass's field types are names that its
    module alone can't resolve)."""
    custom = getattr(tp, "__querylm_hole__", None)
    if callable(custom) and not isinstance(tp, type):
        return custom()
    if tp is str:
        return TypedHole(None, lambda s: s, "str")
    if tp is bool:
        return TypedHole(Term(regex.BOOL), _parse_bool, "bool")
    if tp is int:
        return TypedHole(Term(regex.INT), lambda s: int(s.strip()), "int")
    if tp is float:
        return TypedHole(Term(regex.FLOAT), lambda s: float(s.strip()), "float")
    if typing.get_origin(tp) is typing.Literal:
        values = list(typing.get_args(tp))
        by_text = {str(v): v for v in values}
        return TypedHole(
            Term(regex.alternation(list(by_text))), by_text.__getitem__, f"Literal{values!r}", list(by_text)
        )
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        members = {(m.value if isinstance(m.value, (str, int)) else m.name): m for m in tp}
        by_text = {str(k): m for k, m in members.items()}
        return TypedHole(
            Term(regex.alternation(list(by_text))), by_text.__getitem__, tp.__name__, list(by_text)
        )
    return _json_hole(tp, names)


def _json_hole(tp: Any, names: dict[str, Any] | None) -> TypedHole:
    try:
        from pydantic import TypeAdapter

        adapter = TypeAdapter(tp)
        if names:
            adapter.rebuild(_types_namespace=names)  # a no-op for a type its module resolves
        schema = adapter.json_schema()
    except Exception as err:  # pydantic raises several kinds for types it can't describe
        raise TypeNotSupported(f"{getattr(tp, '__name__', tp)!s} has no JSON Schema: {err}") from None
    # Compact separators: flexible JSON whitespace lets a small model emit newlines forever. Closed
    # objects: JSON Schema allows keys a type doesn't name, which a model may add without end and
    # pydantic then drops.
    schema = compact(closed(schema))
    label = getattr(tp, "__name__", str(tp))
    return TypedHole(Grammar("json", json.dumps(schema), label), adapter.validate_json, label)
