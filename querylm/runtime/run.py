"""``run`` / ``arun``: the Python entry points, and the choice of backend and decoder for a run."""

from __future__ import annotations

import ast
import asyncio
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..backends.base import Backend
from ..backends.models import resolve
from ..decoding.choices import MODES, decide_value
from ..decoding.choose import Argmax, Chooser, Sample
from ..decoding.hole import HoleOutput, decode_hole
from ..errors import ModelError, QueryCompileError, QueryInputError, QuerySyntaxError, UnsupportedError
from ..language.ir import DECODERS, DecoderSpec
from .beams import beam_search
from .execute import Decode, Execution, PendingHole, StreamFn
from .plan import DECODER_ARGS, IMPLEMENTED, Plan, check_decoder_args
from .result import QueryResult
from .samples import sample_batch
from .trace import Tracer


def parse_decoder(text: str) -> DecoderSpec:
    """``"argmax"`` or ``"sample(n=2, temperature=0.7)"``, as in a decoder clause."""
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        raise QuerySyntaxError(f"invalid decoder {text!r}") from None
    name_node = node.func if isinstance(node, ast.Call) else node
    if not isinstance(name_node, ast.Name) or name_node.id not in DECODERS:
        raise QueryCompileError(f"unknown decoder {text!r} (known: {', '.join(sorted(set(DECODERS)))})")
    args = {}
    if isinstance(node, ast.Call):
        try:
            args = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords if kw.arg}
        except ValueError:
            raise QuerySyntaxError(f"decoder arguments must be literal values: {text!r}") from None
    spec = DecoderSpec(DECODERS[name_node.id], args)
    check_decoder_args(spec.name, args, None)
    extra = set(args) - DECODER_ARGS[spec.name]
    if extra:
        raise QueryCompileError(f"{spec.name} has no argument '{sorted(extra)[0]}'")
    if spec.name not in IMPLEMENTED:
        raise UnsupportedError(
            f"the {spec.name} decoder is parsed but not supported yet: use argmax or sample(n=...)"
        )
    return spec


def make_rng(seed: int | None, index: int) -> np.random.Generator:
    """Sample ``index``'s own stream: results don't depend on how samples are batched."""
    return np.random.default_rng(None if seed is None else [seed, index])


def _chooser(spec: DecoderSpec, index: int) -> Chooser:
    if spec.name == "argmax":
        return Argmax()
    a = spec.args
    return Sample(
        make_rng(a.get("seed"), index),
        temperature=float(a.get("temperature", 1.0)),
        top_k=a.get("top_k"),
        top_p=a.get("top_p"),
    )


def run_plan(
    plan: Plan,
    inputs: dict[str, Any],
    *,
    model: str | Backend | None = None,
    decoder: str | None = None,
    stream: StreamFn | None = None,
    chat: bool | None = None,
    max_len: int | None = None,
    device: str | None = None,
    dtype: str | None = None,
    trace: bool = False,
    choices: str = "values",
) -> QueryResult | list[QueryResult]:
    query = plan.compiled.query
    if choices not in MODES:
        raise QueryInputError(f"choices must be one of {', '.join(map(repr, MODES))}, not {choices!r}")
    by_value = choices == "values"
    spec = parse_decoder(decoder) if decoder else query.decoder
    n = int(spec.args.get("n", 1))
    if n < 1:
        raise QueryCompileError(f"{spec.name}: n must be at least 1", spec.position)
    if max_len is not None and (isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1):
        raise QueryInputError(f"max_len must be a whole number >= 1, not {max_len!r}")
    limit = max_len if max_len is not None else int(spec.args.get("max_len", 2048))
    backend = _backend(model, plan, spec, device=device, dtype=dtype)
    if spec.name in ("beam", "beam_sample", "best_k") and not backend.supports_beams:
        raise UnsupportedError(
            f"{spec.name} needs next-token log-probabilities: {backend.name} has none", spec.position
        )
    if spec.name in ("beam", "beam_sample", "best_k"):
        batch = backend.new_batch(1, [])
        root = Execution(plan, backend, batch.row(0), max_len=limit, chat=chat)
        root.start(inputs)
        sampled = spec.name == "beam_sample"
        best = beam_search(
            root,
            batch,
            n,
            rng=make_rng(spec.args.get("seed"), 0) if sampled else None,
            temperature=float(spec.args.get("temperature", 1.0)),
            best_k_budget=int(spec.args.get("budget", 30)) if spec.name == "best_k" else None,
        )
        beams = [ex.result() for ex in best]
        for r in beams:
            r.decoder = spec.name
            if stream is not None:
                stream(f"\n--- score {r.score:.3f} ---\n{r.prompt}\n")
        return beams
    custom = getattr(backend, "make_decode", None)
    if n > 1 and custom is None and spec.name == "sample":
        batch = backend.new_batch(1, [])
        root = Execution(plan, backend, batch.row(0), max_len=limit, chat=chat)
        root.start(inputs)
        samples = [ex.result() for ex in sample_batch(root, batch, [_chooser(spec, i) for i in range(n)], by_value=by_value)]
        for r in samples:
            r.decoder = spec.name
        return samples
    results = []
    for i in range(n):
        if stream is not None and n > 1:
            stream(f"\n--- sample {i + 1} of {n} ---\n")
        ex = Execution(plan, backend, backend.new_sequence(), max_len=limit, chat=chat, stream=stream)
        # A backend that generates whole values itself (a hosted API) brings its own hole decoder.
        tracer = Tracer(_chooser(spec, i), backend) if trace and custom is None else None
        if custom is not None:
            decode = custom(spec, i)
        else:
            chooser = tracer if tracer is not None else _chooser(spec, i)
            decode = sequential(chooser, tracer, by_value=by_value and tracer is None)  # type: ignore[arg-type]
        result = ex.run(inputs, decode)
        result.trace = tracer.steps if tracer is not None else None
        usage = getattr(decode, "usage", None)
        if usage is not None:
            result.usage = usage.to_json()
        results.append(result)
    for r in results:
        r.decoder = spec.name
    return results if n > 1 else results[0]


def sequential(chooser: Chooser, tracer: Tracer | None = None, *, by_value: bool = False) -> Decode:
    """Fill holes one token at a time with ``chooser`` (argmax, or one sample's stream); with
    ``by_value``, a hole with a few possible values by their whole values (``decoding/choices.py``)."""

    def decode(ex: Execution, pending: PendingHole) -> HoleOutput:
        if tracer is not None:
            tracer.hole = pending.hole.name
        if by_value:
            out = decide_value(ex.backend, ex.seq, pending.hc, chooser, max_len=ex.max_len)
            if out is not None:
                ex.emit(out.text)
                return out
        return decode_hole(
            ex.backend,
            ex.seq,
            pending.hc,
            chooser,
            max_len=ex.max_len,
            position=pending.hole.position,
            on_token=ex.emit,
            skip_forced=tracer is None,
        )

    return decode


def _backend(
    model: str | Backend | None, plan: Plan, spec: DecoderSpec, *, device: str | None, dtype: str | None
) -> Backend:
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


def run(
    query: str | Path,
    *,
    model: str | Backend | None = None,
    decoder: str | None = None,
    stream: StreamFn | None = None,
    chat: bool | None = None,
    max_len: int | None = None,
    device: str | None = None,
    dtype: str | None = None,
    trace: bool = False,
    choices: str = "values",
    **inputs: Any,
) -> QueryResult | list[QueryResult]:
    """Run a query (its text, or the path of a ``.lmql`` file) with ``inputs`` for the names it reads.

    ``model`` overrides the query's ``from`` clause (default: the embedded SmolLM2-135M-Instruct);
    ``decoder`` its decoder clause (``"argmax"``, ``"sample(n=2, temperature=0.7)"``). Returns a
    QueryResult, or a list of them when the decoder asks for n > 1. ``trace=True`` records each generated
    token's probability, the top alternatives, the entropy and the mass the constraints removed, in
    ``result.trace`` (argmax and sample). ``choices``: "values" (default) decides a hole that must be
    one of a few values (``X in [...]``, ``Literal``, enums) by each whole value's log-probability
    under argmax and sample; "tokens" decodes it token by token like any other hole."""
    from ..query import bind_inputs, compile_source

    plan = compile_source(query)
    return run_plan(
        plan,
        bind_inputs(plan.compiled, inputs),
        model=model,
        decoder=decoder,
        stream=stream,
        chat=chat,
        max_len=max_len,
        device=device,
        dtype=dtype,
        trace=trace,
        choices=choices,
    )


def run_many(queries: Iterable[Any], *, concurrency: int = 8, **common: Any) -> list[Any]:
    """Run queries concurrently on threads (a hosted backend waits on the network, not the CPU). Each
    item is a query (its text or path) or a dict of ``run`` arguments with the query under ``"query"``;
    ``common`` arguments apply to all. Results come back in order; a failed query's slot holds its
    exception. Hosted results carry their ``usage``."""
    items = [q if isinstance(q, dict) else {"query": q} for q in queries]

    def one(item: dict[str, Any]) -> Any:
        kwargs = {**common, **item}
        query = kwargs.pop("query")
        try:
            return run(query, **kwargs)
        except Exception as err:  # noqa: BLE001 - reported in the result list
            return err

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        return list(pool.map(one, items))


async def arun(query: str | Path, **kwargs: Any) -> QueryResult | list[QueryResult]:
    """``run`` for async code: the model runs in a worker thread, the event loop stays free."""
    return await asyncio.to_thread(lambda: run(query, **kwargs))
