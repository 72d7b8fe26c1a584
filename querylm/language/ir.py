"""The IR of a parsed query: plain dataclasses with source positions (sqlglot's expressions.py, small)."""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Any

from ..errors import Position
from ..positions import SourceMap

DECODERS = {
    "argmax": "argmax",
    "sample": "sample",
    "beam": "beam",
    "beam_search": "beam",
    "num_beams": "beam",
    "beam_sample": "beam_sample",
    "best_k": "best_k",
}
"""Decoder keywords LMQL accepts, mapped to their canonical name."""

CHUNKING_ARGS = {"chunksize", "openai_chunksize"}
"""LMQL's sizes of its speculative OpenAI requests: accepted in any decoder clause, with no effect on
the result (querylm's hosted decoder sizes its requests from the constraints)."""

DECODER_ARGS = {
    "argmax": {"max_len", "n"} | CHUNKING_ARGS,
    "sample": {"max_len", "n", "temperature", "top_k", "top_p", "seed"} | CHUNKING_ARGS,
    "beam": {"max_len", "n"} | CHUNKING_ARGS,
    "beam_sample": {"max_len", "n", "temperature", "seed"} | CHUNKING_ARGS,
    "best_k": {"max_len", "n", "budget"} | CHUNKING_ARGS,
}
"""The arguments each canonical decoder takes (checked where the decoder clause is parsed, so that an
unknown argument is reported at the argument itself)."""

ROLES = ("system", "user", "assistant")


@dataclass
class DecoderSpec:
    name: str
    """Canonical name: argmax, sample, beam, beam_sample, best_k."""
    args: dict[str, Any]
    position: Position | None = None
    arg_positions: dict[str, Position] = field(default_factory=dict)
    """Where each argument is written (``temperature=-1``), for errors about its value."""
    arg_exprs: dict[str, ast.Expression] = field(default_factory=dict)
    """Arguments that are expressions (``argmax(n=n)``), evaluated with the inputs when the query runs."""


@dataclass
class Text:
    text: str


@dataclass
class Interpolation:
    expr: ast.Expression
    source: str
    position: Position


@dataclass
class Role:
    role: str
    position: Position


@dataclass
class Hole:
    """One ``[NAME]`` / ``[NAME: type]`` in a prompt string."""

    index: int
    name: str
    type_source: str | None
    type_expr: ast.Expression | None
    position: Position
    inline_where: ast.Expression | None = None
    """The ``"..." where C`` constraint of the statement the hole is in, if any."""
    decorators: list[ast.Expression] = field(default_factory=list)
    """``[@f @g X]``: LMQL's variable decorators, nearest the name last (runtime/decorators.py)."""


Segment = Text | Interpolation | Role | Hole


@dataclass
class Prompt:
    """One prompt statement, split into its segments."""

    segments: list[Segment]
    position: Position


@dataclass
class Distribution:
    variable: str
    values: ast.Expression
    position: Position


@dataclass
class Query:
    """A parsed query, ready to compile."""

    name: str
    source_map: SourceMap
    decoder: DecoderSpec
    body: ast.Module
    """The body with every prompt statement replaced by ``__prompt__(<index>)`` (see compile.py)."""
    prompts: list[Prompt]
    holes: list[Hole]
    model: str | None = None
    model_position: Position | None = None
    model_expr: ast.Expression | None = None
    """``from MODEL`` / ``from lmql.model(...)``: an expression, evaluated when the query runs."""
    where: ast.Expression | None = None
    distribution: Distribution | None = None
    prelude: ast.Module | None = None
    """Code before the decoder keyword (LMQL's): run once when the query compiles, its names the
    query's globals, not its locals."""
    inputs: list[str] = field(default_factory=list)
    is_async: bool = False
    first_await: ast.AST | None = None
    """Why ``is_async`` is set: the first await / async for / async with of the body (for errors)."""
    uses_roles: bool = False
