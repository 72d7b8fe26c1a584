"""What a run needs before it decodes, shared by ``run_plan`` and the batch engine: its decoder, n,
max_len and backend, checked (``prepare``); each sample's chooser (``chooser_for``); and the token loop
that fills one execution's holes (``sequential``)."""

from __future__ import annotations

import ast
from typing import Any

import numpy as np

from ..backends.base import Backend
from ..backends.models import resolve
from ..decoding.choices import decide_value
from ..decoding.choose import Argmax, Chooser, Sample
from ..decoding.guide import JsonGuide
from ..decoding.hole import HoleOutput, decode_hole
from ..decoding.search import search_value, searchable
from ..errors import ModelError, QueryCompileError, QueryInputError, QueryRuntimeError, UnsupportedError
from ..language.check import Plan, check_decoder
from ..language.ir import DecoderSpec
from ..language.parse import parse_decoder
from .execute import Decode, Execution, PendingHole
from .trace import Tracer

BEAMS = ("beam", "beam_sample", "best_k")
"""The decoders that search over several executions of a query (``runtime/beams.py``)."""


def make_rng(seed: int | None, index: int) -> np.random.Generator:
    """Sample ``index``'s own stream: results don't depend on how samples are batched."""
    return np.random.default_rng(None if seed is None else [seed, index])


def chooser_for(spec: DecoderSpec, index: int) -> Chooser:
    """Sample ``index``'s chooser (argmax: the same for all)."""
    if spec.name == "argmax":
        return Argmax()
    a = spec.args
    return Sample(
        make_rng(a.get("seed"), index),
        temperature=float(a.get("temperature", 1.0)),
        top_k=a.get("top_k"),
        top_p=a.get("top_p"),
    )


def prepare(
    plan: Plan,
    inputs: dict[str, Any],
    *,
    model: str | Backend | None = None,
    decoder: str | None = None,
    max_len: int | None = None,
    device: str | None = None,
    dtype: str | None = None,
) -> tuple[DecoderSpec, int, int, Backend]:
    """A run's decoder, its n, its max_len and its backend, checked (decoder arguments and a ``from``
    written as expressions evaluated with the inputs): what ``run_plan`` and the batch engine both need
    before decoding."""
    query = plan.compiled.query
    spec = check_decoder(parse_decoder(decoder)) if decoder else query.decoder
    if spec.arg_exprs:
        spec = _evaluated(spec, plan, inputs)
    n = int(spec.args.get("n", 1))
    if n < 1:
        raise QueryCompileError(f"{spec.name}: n must be at least 1", spec.position)
    if max_len is not None and (isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1):
        raise QueryInputError(f"max_len must be a whole number >= 1, not {max_len!r}")
    limit = max_len if max_len is not None else int(spec.args.get("max_len", 2048))
    if model is None and query.model_expr is not None:
        model = _model_of(plan, inputs)
    backend = backend_for(model, plan, spec, device=device, dtype=dtype)
    if spec.name in BEAMS and not backend.supports_beams:
        raise UnsupportedError(
            f"{spec.name} needs next-token log-probabilities: {backend.name} has none", spec.position
        )
    return spec, n, limit, backend


def sequential(
    chooser: Chooser, tracer: Tracer | None = None, *, by_value: bool = False, guide: JsonGuide | None = None
) -> Decode:
    """Fill holes one token at a time with ``chooser`` (argmax, or one sample's stream); with
    ``by_value``, a hole with a few possible values by their whole values (``decoding/choices.py``),
    and under argmax a short constrained value by a search over whole values (``decoding/search.py``);
    ``guide``: the guide of a JSON value's chosen tokens (``decoding/guide.py``)."""

    def decode(ex: Execution, pending: PendingHole) -> HoleOutput:
        if tracer is not None:
            tracer.hole = pending.hole.name
        if by_value:
            out = decide_value(ex.backend, ex.seq, pending.hc, chooser, max_len=ex.max_len)
            if out is None and searchable(pending.hc, chooser):
                out = search_value(ex.backend, ex.seq, pending.hc, max_len=ex.max_len)
            if out is not None:
                ex.value_stream(pending)(out.text)
                return out
        return decode_hole(
            ex.backend,
            ex.seq,
            pending.hc,
            chooser,
            max_len=ex.max_len,
            position=pending.hole.position,
            on_token=ex.value_stream(pending),
            skip_forced=tracer is None,
            guide=guide,
        )

    return decode


def _evaluated(spec: DecoderSpec, plan: Plan, inputs: dict[str, Any]) -> DecoderSpec:
    """``argmax(n=n)``: the decoder with its expression arguments evaluated in the query's scope."""
    args = dict(spec.args)
    for name, expr in spec.arg_exprs.items():
        args[name] = _evaluate(expr, plan, inputs, spec.position)
    check_decoder(spec, args)
    return DecoderSpec(spec.name, args, spec.position, spec.arg_positions)


def _evaluate(expr: ast.Expression, plan: Plan, inputs: dict[str, Any], position: Any) -> Any:
    code = compile(expr, plan.compiled.code_filename, "eval")
    try:
        # the names the query's body sees: its module, the function it was defined in, its inputs
        names = {**plan.compiled.scope, **inputs}
        return eval(code, plan.compiled.function.__globals__, names)  # noqa: S307
    except Exception as err:
        raise QueryRuntimeError(f"{type(err).__name__}: {err}", position) from err


def _model_of(plan: Plan, inputs: dict[str, Any]) -> Any:
    """``from MODEL`` / ``from lmql.model("random", seed=1)``: the model expression, evaluated in the
    query's scope (its module, its inputs) when it runs."""
    query = plan.compiled.query
    assert query.model_expr is not None
    return _evaluate(query.model_expr, plan, inputs, query.model_position)


def backend_for(
    model: str | Backend | None, plan: Plan, spec: DecoderSpec, *, device: str | None, dtype: str | None
) -> Backend:
    unwrap = getattr(model, "__querylm_backend__", None)  # a model object over a backend (querylm.lmql.LLM)
    if unwrap is not None:
        model = unwrap()
    if isinstance(model, Backend):
        return model
    query = plan.compiled.query
    if model is not None and not isinstance(model, str):
        raise QueryInputError(f"model must be a model id string or a Backend, not {type(model).__name__}")
    model_id = model if model is not None else query.model
    try:
        return resolve(model_id, seed=int(spec.args.get("seed") or 0), device=device, dtype=dtype)
    except ModelError as err:
        if model is None and query.model_position is not None:
            raise err.at(query.model_position) from None
        raise
