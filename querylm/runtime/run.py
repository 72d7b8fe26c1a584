"""``run`` / ``arun`` / ``run_many``: the Python entry points. A local beam decoder or sample(n) runs
as one job of the batch engine (``runtime/engine.py``), many queries as many jobs of one engine."""

from __future__ import annotations

import asyncio
import inspect
import itertools
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from ..backends.base import Backend
from ..backends.openai import OpenAIBackend
from ..decoding.choices import MODES
from ..errors import QueryInputError
from ..language.check import Plan, bind_inputs, compile_source
from .engine import BatchJob, Engine, Job, Outcome, prepare_job
from .execute import Decode, Execution, StreamFn
from .hosted import HostedHoles, hosted_samples
from .prepare import BEAMS, chooser_for, prepare, sequential
from .result import QueryResult
from .trace import Tracer


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
    hosted = isinstance(backend, OpenAIBackend)  # it writes whole values: the hosted hole decoder
    if spec.name in BEAMS or (n > 1 and not hosted and spec.name == "sample"):
        # beams and samples are rows of the batch engine: one job, on an engine of its own (a prefix
        # cache where samples start from one prompt)
        options = {"chat": chat, "heal": heal, "choices": choices}
        job = BatchJob(0, plan, inputs, spec, n, limit, backend, options)
        engine = Engine(backend, batch_size=max(16, job.rows), prefix_tokens=0 if job.beams else 4096)
        ((_, out),) = engine.stream([job])
        if isinstance(out, Exception):
            raise out
        assert isinstance(out, list)
        if stream is not None and job.beams:
            for r in out:
                stream(f"\n--- score {r.score:.3f} ---\n{r.prompt}\n")
        return out
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
    under argmax and sample, and under argmax a short value under a grammar by a search over whole
    values (``decoding/search.py``; a trace decodes token by token); "tokens" decodes every hole
    token by token. ``heal``: token
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
    item's result is its exception): the path of hosted models (``iter_many``). Items are read lazily, at most ``max(batch_size, concurrency)`` ahead of the
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


def _alone(job: BatchJob) -> QueryResult | list[QueryResult]:
    """A job the batch engine does not batch (a hosted model, another model), run on its own."""
    assert job.plan is not None
    opts = {k: v for k, v in job.options.items() if k not in ("model", "max_len")}
    return run_plan(job.plan, job.inputs, model=job.backend, max_len=job.max_len, **opts)


def iter_many(
    items: Iterable[Any], *, batch_size: int = 16, concurrency: int = 8, **common: Any
) -> Iterator[tuple[int, Outcome]]:
    """Run ``run_many``'s items, yielding ``(index, result)`` as each finishes (a failed item's result
    is its exception), reading the items lazily. When the first item runs on a local model (or
    ``random``), one engine batches the items on that model, ``batch_size`` rows at once (argmax,
    samples and beams alike), and runs the others (hosted, another model) one at a time as their turn
    comes; otherwise the items run on ``concurrency`` threads (a hosted backend waits on the network,
    not the CPU)."""
    raw = iter(items)
    first_item = next(raw, None)
    if first_item is None:
        return
    first = prepare_job(0, as_job(first_item, common))
    if not first.batchable:
        yield from iter_threads(
            itertools.chain([first_item], raw), batch_size=batch_size, concurrency=concurrency, **common
        )
        return
    assert first.backend is not None
    rest = (prepare_job(i, as_job(item, common)) for i, item in enumerate(raw, start=1))
    yield from Engine(first.backend, batch_size=batch_size).stream(itertools.chain([first], rest), _alone)


def run_many(
    queries: Iterable[Any], *, concurrency: int = 8, batch_size: int = 16, **common: Any
) -> list[Any]:
    """Run many queries. Each item is a query (its text or path), a dict of ``run`` arguments with the
    query under ``"query"``, or a Job; ``common`` arguments apply to all. Results come back in order; a
    failed query's slot holds its exception. Batched on a local model, on threads on a hosted one
    (``iter_many``); hosted results carry their ``usage``."""
    results: dict[int, Any] = dict(
        iter_many(queries, concurrency=concurrency, batch_size=batch_size, **common)
    )
    return [results[i] for i in range(len(results))]
