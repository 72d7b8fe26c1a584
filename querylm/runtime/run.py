"""``run`` / ``arun``: the Python entry points, and the choice of backend and decoder for a run."""

from __future__ import annotations

import ast
import asyncio
import inspect
import itertools
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..backends.base import Backend
from ..backends.models import resolve
from ..backends.openai import OpenAIBackend
from ..decoding.choices import MODES, decide_value
from ..decoding.choose import Argmax, Chooser, Sample
from ..decoding.guide import JsonGuide
from ..decoding.hole import HoleOutput, decode_hole
from ..errors import ModelError, QueryCompileError, QueryInputError, QueryRuntimeError, UnsupportedError
from ..language.check import Plan, bind_inputs, check_decoder, compile_source
from ..language.ir import DecoderSpec
from ..language.parse import parse_decoder
from .beams import beam_search
from .execute import Decode, Execution, PendingHole, StreamFn
from .hosted import HostedHoles, hosted_samples
from .result import QueryResult
from .samples import sample_batch
from .trace import Tracer


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
    if spec.name in ("beam", "beam_sample", "best_k") and not backend.supports_beams:
        raise UnsupportedError(
            f"{spec.name} needs next-token log-probabilities: {backend.name} has none", spec.position
        )
    return spec, n, limit, backend


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
    heal: bool = True,
) -> QueryResult | list[QueryResult]:
    if choices not in MODES:
        raise QueryInputError(f"choices must be one of {', '.join(map(repr, MODES))}, not {choices!r}")
    by_value = choices == "values"
    spec, n, limit, backend = prepare(
        plan, inputs, model=model, decoder=decoder, max_len=max_len, device=device, dtype=dtype
    )
    if spec.name in ("beam", "beam_sample", "best_k"):
        batch = backend.new_batch(1, [])
        root = Execution(plan, backend, batch.row(0), max_len=limit, chat=chat, heal=heal)
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
    hosted = isinstance(backend, OpenAIBackend)  # it writes whole values: the hosted hole decoder
    if n > 1 and not hosted and spec.name == "sample":
        batch = backend.new_batch(1, [])
        root = Execution(plan, backend, batch.row(0), max_len=limit, chat=chat, heal=heal)
        root.start(inputs)
        choosers = [chooser_for(spec, i) for i in range(n)]
        samples = [ex.result() for ex in sample_batch(root, batch, choosers, by_value=by_value)]
        for r in samples:
            r.decoder = spec.name
        return samples
    if n > 1 and isinstance(backend, OpenAIBackend) and spec.name == "sample":
        roots = [Execution(plan, backend, backend.new_sequence(), max_len=limit, chat=chat) for _ in range(n)]
        runs = hosted_samples(roots, backend, spec, inputs)
        samples = []
        for ex, holes in zip(roots, runs, strict=True):
            r = ex.result()
            r.decoder = spec.name
            r.usage = holes.usage.to_json()
            samples.append(r)
        return samples
    results = []
    for i in range(n):
        if stream is not None and n > 1:
            stream(f"\n--- sample {i + 1} of {n} ---\n")
        ex = Execution(
            plan, backend, backend.new_sequence(), max_len=limit, chat=chat, stream=stream, heal=heal
        )
        tracer = Tracer(chooser_for(spec, i), backend) if trace and not hosted else None
        if isinstance(backend, OpenAIBackend):  # (hosted, spelled so for the type checker)
            decode: Decode = HostedHoles(backend, spec, i)
        else:
            chooser = tracer if tracer is not None else chooser_for(spec, i)
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


def sequential(
    chooser: Chooser, tracer: Tracer | None = None, *, by_value: bool = False, guide: JsonGuide | None = None
) -> Decode:
    """Fill holes one token at a time with ``chooser`` (argmax, or one sample's stream); with
    ``by_value``, a hole with a few possible values by their whole values (``decoding/choices.py``);
    ``guide``: the guide of a JSON value's chosen tokens (``decoding/guide.py``)."""

    def decode(ex: Execution, pending: PendingHole) -> HoleOutput:
        if tracer is not None:
            tracer.hole = pending.hole.name
        if by_value:
            out = decide_value(ex.backend, ex.seq, pending.hc, chooser, max_len=ex.max_len)
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
    heal: bool = True,
    **inputs: Any,
) -> QueryResult | list[QueryResult]:
    """Run a query (its text, or the path of a ``.lmql`` file) with ``inputs`` for the names it reads.

    ``model`` overrides the query's ``from`` clause (default: the embedded SmolLM2-135M-Instruct);
    ``decoder`` its decoder clause (``"argmax"``, ``"sample(n=2, temperature=0.7)"``). Returns a
    QueryResult, or a list of them when the decoder asks for n > 1 (that list form is kept for this
    release; ``run_n`` always returns the list). ``trace=True`` records each generated
    token's probability, the top alternatives, the entropy and the mass the constraints removed, in
    ``result.trace`` (argmax and sample). ``choices``: "values" (default) decides a hole that must be
    one of a few values (``X in [...]``, ``Literal``, enums) by each whole value's log-probability
    under argmax and sample; "tokens" decodes it token by token like any other hole. ``heal``: token
    healing (default on): a hole right after prompt text starts by writing the prompt's last token
    again, so the value begins where the model would have cut the text (" positive" after
    "Sentiment:"), not where the prompt's tokenization did; the prompt and the value are unchanged
    in what they say (``decoding/heal.py``). Off on hosted models, which tokenize the prompt
    themselves."""
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
        heal=heal,
    )


def run_n(query: str | Path, **kwargs: Any) -> list[QueryResult]:
    """``run``, always returning a list: the n results of the decoder (best first for beams, in the
    order drawn for samples), one for argmax. Code that handles any n reads one shape."""
    result = run(query, **kwargs)
    return result if isinstance(result, list) else [result]


async def arun_n(query: str | Path, **kwargs: Any) -> list[QueryResult]:
    """``run_n`` for async code (see ``arun``)."""
    return await asyncio.to_thread(lambda: run_n(query, **kwargs))


@dataclass(frozen=True)
class Job:
    """One query to run, with its inputs apart from ``run``'s options, so that an input may be named
    ``model`` or ``query``. ``query`` is a query's text or path, or a compiled Plan whose ``inputs``
    are already checked (``querylm.map`` checks each row before it runs)."""

    query: str | Path | Plan
    inputs: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)


RUN_OPTIONS = frozenset(inspect.signature(run).parameters) - {"query", "inputs"}
"""The keyword arguments of ``run`` that are options, not query inputs."""


def as_job(item: Any, common: dict[str, Any]) -> Job:
    """A ``run_many`` item (a query, a dict of ``run`` arguments with the query under ``"query"``, or a
    Job) as a Job, with ``common`` options under its own."""
    if isinstance(item, Job):
        return Job(item.query, item.inputs, {**common, **item.options})
    if not isinstance(item, dict):
        return Job(item, {}, dict(common))
    kwargs = {**common, **item}
    query = kwargs.pop("query")
    options = {k: v for k, v in kwargs.items() if k in RUN_OPTIONS}
    return Job(query, {k: v for k, v in kwargs.items() if k not in RUN_OPTIONS}, options)


def run_job(job: Job) -> QueryResult | list[QueryResult]:
    if isinstance(job.query, Plan):
        return run_plan(job.query, job.inputs, **job.options)
    return run(job.query, **job.options, **job.inputs)


def iter_threads(
    items: Iterable[Any], *, batch_size: int = 16, concurrency: int = 8, **common: Any
) -> Iterator[tuple[int, QueryResult | list[QueryResult] | Exception]]:
    """Run ``run_many``'s items on threads, yielding ``(index, result)`` as each finishes (a failed
    item's result is its exception): the path of hosted models (``engine.iter_many``). Items are read lazily, at most ``max(batch_size, concurrency)`` ahead of the
    results, so a long iterable of rows is never held whole; ``concurrency`` threads run them."""

    def one(job: Job) -> QueryResult | list[QueryResult] | Exception:
        try:
            return run_job(job)
        except Exception as err:  # noqa: BLE001 - reported as the item's result
            return err

    window = max(1, batch_size, concurrency)
    jobs = enumerate(as_job(item, common) for item in items)
    pool = ThreadPoolExecutor(max_workers=max(1, concurrency))
    try:
        running: dict[Future[Any], int] = {}
        for index, job in itertools.islice(jobs, window):
            running[pool.submit(one, job)] = index
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                yield running.pop(future), future.result()
                for index, job in itertools.islice(jobs, 1):
                    running[pool.submit(one, job)] = index
    finally:  # a consumer that stops early (Ctrl-C, an error) drops the items not yet started
        pool.shutdown(wait=False, cancel_futures=True)


async def arun(query: str | Path, **kwargs: Any) -> QueryResult | list[QueryResult]:
    """``run`` for async code: the model runs in a worker thread, the event loop stays free."""
    return await asyncio.to_thread(lambda: run(query, **kwargs))
