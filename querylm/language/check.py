"""What a compiled query needs checked before it runs, and which where-clause conjuncts apply to which
hole. Checking needs no model: ``querylm check`` stops here, and ``compile_source`` is the whole way from a
query string or file to its checked Plan (source, parse, compile, check)."""

from __future__ import annotations

import ast
import builtins
import functools
import inspect
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..constraints.types import TypeNotSupported, typed_hole
from ..constraints.where import UNKNOWN, build, conjuncts, names_in
from ..errors import Position, QueryCompileError, QueryInputError, UnsupportedError
from .compile import CompiledQuery, compile_query
from .ir import CHUNKING_ARGS, DecoderSpec, Hole
from .source import Source, parse_source, source_of

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

    check_decoder(query.decoder)
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
            if tp is not UNKNOWN and not is_query_function(tp):
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
            typed=typed,
            base_dir=base_dir,
        )
    return p


_WHOLE_MIN = {"n": 1, "max_len": 1, "top_k": 1, "seed": 0, "budget": 1}


def check_decoder(spec: DecoderSpec, args: dict[str, Any] | None = None) -> DecoderSpec:
    """A decoder's argument values are checked once, here, before any model runs (the parser has read
    their names): whole numbers (not bools) at or above their minimum, a temperature >= 0 (0 is greedy),
    a top_p in (0, 1]; and the decoder must be one that runs. ``args``: the values to check when they are
    not the spec's own (arguments written as expressions, evaluated with the inputs). An error points at
    the argument where the query wrote it, else at the decoder."""
    for name, value in (spec.args if args is None else args).items():
        at = spec.arg_positions.get(name, spec.position)
        if name in _WHOLE_MIN:
            low = _WHOLE_MIN[name]
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise QueryCompileError(
                    f"{spec.name}: {name} must be a whole number >= {low}, not {value!r}", at
                )
        elif name in CHUNKING_ARGS:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise QueryCompileError(f"{spec.name}: {name} must be a whole number >= 1, not {value!r}", at)
        elif name in ("temperature", "top_p"):
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            low_ok = number and (value > 0 if name == "top_p" else value >= 0)
            if not low_ok or (name == "top_p" and value > 1):
                bound = "in (0, 1]" if name == "top_p" else "a number >= 0"
                raise QueryCompileError(f"{spec.name}: {name} must be {bound}, not {value!r}", at)
    if spec.name not in IMPLEMENTED:
        raise UnsupportedError(
            f"the {spec.name} decoder is parsed but not supported yet: use argmax or sample(n=...)",
            spec.position,
        )
    return spec


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


def is_query_function(tp: Any) -> bool:
    """A query function (``@query``) used as a hole's type is a nested query, not a type: it says so by
    a method ``__querylm_nested__(args, kwargs, position) -> (Plan, inputs)`` (see runtime/nested.py)."""
    return not isinstance(tp, type) and callable(getattr(tp, "__querylm_nested__", None))


# -- from a query string or file to its Plan -------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _compile_cached(src: Source) -> Plan:
    return plan(compile_query(parse_source(src)), base_dir=src.base_dir)


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
