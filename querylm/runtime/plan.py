"""What a compiled query needs checked before it runs, and which where-clause conjuncts apply to which
hole. Checking needs no model: ``querylm check`` stops here."""

from __future__ import annotations

import ast
import builtins
import inspect
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..constraints.types import TypeNotSupported, typed_hole
from ..constraints.where import UNKNOWN, build, conjuncts, names_in
from ..errors import Position, QueryCompileError, UnsupportedError
from ..language.compile import CompiledQuery
from ..language.ir import DECODER_ARGS, Hole

IMPLEMENTED = {"argmax", "sample", "beam", "beam_sample", "best_k"}


@dataclass
class Plan:
    compiled: CompiledQuery
    base_dir: Path | None
    global_conjuncts: list[ast.expr] = field(default_factory=list)
    hole_names: set[str] = field(default_factory=set)

    def conjuncts_for(self, hole: Hole, bound: set[str]) -> list[ast.expr]:
        """Global conjuncts that mention ``hole`` and whose other holes are already bound, then the
        inline ones of the hole's own statement."""
        out = []
        for c in self.global_conjuncts:
            names = names_in(c)
            if hole.name in names and (names & self.hole_names) - {hole.name} <= bound:
                out.append(c)
        if hole.inline_where is not None:
            out.extend(c for c in conjuncts(hole.inline_where.body) if hole.name in names_in(c))
        return out


def plan(
    compiled: CompiledQuery, *, globals_: dict[str, Any] | None = None, base_dir: Path | None = None
) -> Plan:
    """Check everything that can be checked without a model, and index the where clause."""
    query = compiled.query
    smap = query.source_map
    p = Plan(compiled, base_dir, hole_names={h.name for h in query.holes})

    dec = query.decoder
    extra = set(dec.args) - DECODER_ARGS[dec.name]
    if extra:
        raise QueryCompileError(f"{dec.name} has no argument '{sorted(extra)[0]}'", dec.position)
    check_decoder_args(dec.name, dec.args, dec.position, dec.arg_positions)
    if dec.name not in IMPLEMENTED:
        raise UnsupportedError(
            f"the {dec.name} decoder is parsed but not supported yet: use argmax or sample(n=...)",
            dec.position,
        )
    if query.distribution is not None and query.distribution.variable not in p.hole_names:
        raise QueryCompileError(
            f"distribution variable '{query.distribution.variable}' is not a hole of the query",
            query.distribution.position,
        )

    if query.where is not None:
        for c in conjuncts(query.where.body):
            if not names_in(c) & p.hole_names:
                raise QueryCompileError("this constraint mentions no hole", smap.of(c))
            p.global_conjuncts.append(c)

    static_env = {**vars(builtins), **(globals_ or {}), "Literal": typing.Literal}
    for hole in query.holes:
        typed = None
        if hole.type_expr is not None:
            tp = static_type(hole.type_expr.body, static_env)
            if tp is not UNKNOWN and not _is_query_function(tp):
                try:
                    typed = typed_hole(tp, static_env)
                except TypeNotSupported as err:
                    raise QueryCompileError(f"unsupported hole type: {err}", hole.position) from None
        nodes = [c for c in p.global_conjuncts if hole.name in names_in(c)]
        if hole.inline_where is not None:
            nodes += [c for c in conjuncts(hole.inline_where.body) if hole.name in names_in(c)]
        build(
            hole.name,
            nodes,
            smap,
            _static_value,
            typed=typed.lang if typed else None,
            typed_label=typed.label if typed else None,
            base_dir=base_dir,
        )
    return p


_WHOLE_MIN = {"n": 1, "max_len": 1, "top_k": 1, "seed": 0, "budget": 1}


def check_decoder_args(
    decoder: str,
    args: dict[str, Any],
    position: Position | None,
    arg_positions: dict[str, Position] | None = None,
) -> None:
    """Decoder arguments are checked once, here, before any model runs: whole numbers (not bools) at
    or above their minimum, a temperature >= 0 (0 is greedy) and a top_p in (0, 1]. An error points at
    the argument where the query wrote it (``arg_positions``), else at ``position``."""
    for name, value in args.items():
        at = (arg_positions or {}).get(name, position)
        if name in _WHOLE_MIN:
            low = _WHOLE_MIN[name]
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise QueryCompileError(
                    f"{decoder}: {name} must be a whole number >= {low}, not {value!r}", at
                )
        elif name in ("temperature", "top_p"):
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            low_ok = number and (value > 0 if name == "top_p" else value >= 0)
            if not low_ok or (name == "top_p" and value > 1):
                bound = "in (0, 1]" if name == "top_p" else "a number >= 0"
                raise QueryCompileError(f"{decoder}: {name} must be {bound}, not {value!r}", at)


def static_type(node: ast.expr, env: dict[str, Any]) -> Any:
    """A hole's type, resolved without running the user's code: names, attributes read statically
    (``inspect.getattr_static``: no property or ``__getattr__`` runs), constants and subscripts of
    those (``Literal["a"]``, ``Optional[Item]``, ``list[int]``). Anything else (a call, arithmetic such
    as ``9**9**9``) is UNKNOWN here and evaluated when the running query reaches the hole."""
    if isinstance(node, ast.Constant) and (node.value is None or isinstance(node.value, (str, int, float))):
        return node.value
    if isinstance(node, ast.Name):
        return env.get(node.id, UNKNOWN)
    if isinstance(node, ast.Attribute):
        base = static_type(node.value, env)
        if base is UNKNOWN:
            return UNKNOWN
        try:
            value = inspect.getattr_static(base, node.attr)
        except AttributeError:
            return UNKNOWN
        return value if isinstance(value, type) or not callable(getattr(value, "__get__", None)) else UNKNOWN
    if isinstance(node, ast.Tuple):
        items = [static_type(e, env) for e in node.elts]
        return UNKNOWN if any(i is UNKNOWN for i in items) else tuple(items)
    if isinstance(node, ast.Subscript):
        base = static_type(node.value, env)
        index = static_type(node.slice, env)
        if base is UNKNOWN or index is UNKNOWN or not _is_type_form(base):
            return UNKNOWN
        try:
            return base[index]
        except Exception:  # noqa: BLE001 - not a type form after all: decided at run time
            return UNKNOWN
    return UNKNOWN


def _is_type_form(base: Any) -> bool:
    """Subscripting these builds a type and runs no user code."""
    module = getattr(base, "__module__", None)
    return module in ("builtins", "typing", "typing_extensions", "collections.abc") or isinstance(
        base, typing._SpecialForm
    )


def _static_value(node: ast.expr) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return UNKNOWN


def _is_query_function(tp: Any) -> bool:
    from ..query import NestedCall, QueryFunction

    return isinstance(tp, (QueryFunction, NestedCall))
